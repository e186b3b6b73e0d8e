"""Throughput benchmark: touchstream against the practical limit and its peers.

``python -m bench --help``. Results and how to read them: docs/benchmarks.md.
Kept light on import: bench/quix_job.py runs under another interpreter.
"""
