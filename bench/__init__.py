"""Benchmarks: scripts that build realistic data sets and print figures."""
