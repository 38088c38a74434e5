"""Thin Celery tasks by domain: validate args, open a session, call the domain."""
