"""The thin HTTP endpoint: enqueue tasks, read their status, list the catalogue.

`api.app.create_app()` builds the FastAPI application; `api.submission` holds the
enqueue and status logic that the routes and the `matchops` CLI share.
"""
