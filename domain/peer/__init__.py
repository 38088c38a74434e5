"""Peer practice: requests, pool sweeps, two-sided confirmation, expiry and sessions."""
