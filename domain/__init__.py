"""Domain logic: pure functions over a session and plain values, one package per domain."""
