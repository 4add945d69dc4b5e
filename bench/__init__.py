"""Benchmarks against the local stack: ``python -m bench.<name>``; not part of the test suite."""
