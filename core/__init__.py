"""Shared foundations: settings, database access, typed errors and the event outbox."""
