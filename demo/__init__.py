"""The finite end-to-end demo scenarios behind `make demo`."""
