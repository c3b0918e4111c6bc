"""Benchmarks of the relay's polling schedule against the usual alternatives.

`python -m bench` runs the real orchestrator on the emulated host in virtual time (and a few
wall-clock measurements), simulates the baselines on the same workload, and regenerates
`docs/benchmarks.md` with its plots. See docs/benchmarks.md for what is measured and how.
"""
