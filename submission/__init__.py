"""Submitting tasks and reading their status: the service the HTTP API and the CLI share.

It refuses with the domain's typed errors (core.errors), which each front end answers in
its own way: the API as an HTTP status and body, the CLI as the same body and an exit
status.
"""
