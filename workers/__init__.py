"""The Celery app, the one task base every task uses, the rules tasks declare, and worker
signals."""
