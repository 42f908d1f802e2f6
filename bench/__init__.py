"""Micro-benchmarks of library pieces (run as ``python -m bench.<name>``)."""
