"""Carpool: who may ride with whom, and keeping invitations, matches and statistics true to it."""
