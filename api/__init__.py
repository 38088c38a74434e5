"""The thin HTTP endpoint: enqueue tasks, read their status, list the catalogue.

`api.app.create_app()` builds the FastAPI application; the submission service
(submission.service) holds the enqueue and status logic the routes and the `matchops`
CLI share.
"""
