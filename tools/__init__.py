"""Benchmarks and long runs of zmqgrid (docs/benchmarks.md): entry scripts, run from the repository root as
`python tools/NAME.py` or `python -m tools.NAME`; their shared machinery is tools/benchkit."""
