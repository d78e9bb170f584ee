"""What the benchmark scripts in tools/ share (docs/benchmarks.md), imported as `tools.benchkit.X`:

- processes: child processes started by a run (spawn, stop by PID with their descendants, stop_all)
- cluster:   a real master and real workers on 127.0.0.1, on tests/helpers.py's Harness (the suite's own harness)
- guard:     the frame every tool runs in (--deadline, signals, cleanup, the temporary folder)
- measure:   clocks and meters: percentiles, medians, CPU of process groups, machine busy/steal, peak sizes
- workload:  the end-to-end phases (batched, single, latency) through zmqgrid.Client, and the ledger check
- reference: runs of the reference loop (its path an argument) and their figures
- spies:     py-spy sampling of the master, workers and client
- targets:   the targets and thresholds each tool judges its figures by, as data
- report:    progress on stderr, the machine and versions, JSON or a person's report on stdout
- fleetsim:  simulated workers, many per process (run with -m by tools/bench_fleet.py)
- ab_child:  one A/B measurement with a tree's own code (run by path by tools/bench_ab.py, never imported)

Nothing in zmqgrid imports this package or tests/; this package imports zmqgrid and tests/helpers.py.
"""
