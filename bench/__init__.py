"""Benchmarks against peers, printed as tables (`python -m bench.run`); they report, never gate."""
