"""The Celery app, the one task base every task uses, and worker signals."""
