"""Benchmarks: each prints JSON; `python -m benchmarks.run` runs them all."""
