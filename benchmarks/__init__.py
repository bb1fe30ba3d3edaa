"""Benchmarks that print JSON (run by hand; tests never time anything)."""
