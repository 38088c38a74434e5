"""Alembic migrations of the matchops schema."""
