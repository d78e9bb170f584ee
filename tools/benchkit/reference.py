"""The reference loop (a feature-less sketch of zmqgrid's hot path, ../shared/bench/reference_loop.py by default):
one run of its variants at a time, so that its runs interleave with zmqgrid's, and its figures merged over runs."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.helpers import REPO

from .guard import DeadlineExceeded
from .measure import median, settle
from .processes import adopt, forget, stop_process
from .report import progress

DEFAULT_PATH = REPO.parent / "shared" / "bench" / "reference_loop.py"
VARIANTS = ("sqlite:100:16", "sqlite:1:16")   # batched and single: 100 or 1 task(s) per SUBMIT, credit 16 per worker
BIG_VARIANT = "sqlite:100:16"   # run again on --submit-n tasks, for target 4
BIG_LAT = 20                    # its latency round trips (not used; the reference always does some)


def run_reference(path: Path, tmp: Path, deadline: float, *, n: int, lat: int, submit_n: int, settle_s: float,
                  busy_threshold: float, label: str = "") -> dict:
    """One run of the reference loop at `path` (it does one run per call: they interleave with zmqgrid's), then,
    with submit_n, one run of its sqlite:100:16 variant on that many tasks: the same batch size as zmqgrid's big
    submit, for target 4 (its n-task batch is one transaction of 50 ms, which says little about 100,000)."""
    if not path.exists():
        progress(f"reference loop not found at {path}: skipping it, no ratios")
        return {"missing": str(path)}
    quiet = (settle_s, busy_threshold)
    data, out = reference_process(path, tmp / f"ref{label}", deadline, quiet, n, lat, VARIANTS)
    for variant, row in zip(VARIANTS, data["rows"]):
        out[variant] = reference_row(variant, row)
    if submit_n:
        data, big = reference_process(path, tmp / f"ref{label}-big", deadline, quiet, submit_n, BIG_LAT,
                                      (BIG_VARIANT,))
        out["big"] = dict(reference_row(BIG_VARIANT, data["rows"][0]), n=submit_n, command=big["command"])
    return out


def reference_process(path: Path, ref_dir: Path, deadline: float, quiet: tuple[float, float], n: int, lat: int,
                      variants: tuple[str, ...]) -> tuple[dict, dict]:
    """Run reference_loop.py once (--runs 1), after waiting for a quiet machine; its result file and how it ran."""
    ref_dir.mkdir()
    argv = [sys.executable, str(path), "--runs", "1", "--n", str(n), "--lat", str(lat),
            "--variants", ",".join(variants)]
    env = dict(os.environ, ZG_REF_DIR=str(ref_dir), PYTHONUNBUFFERED="1")
    env.pop("A3_PROFILE", None)
    busy = settle(*quiet, "the reference loop")
    progress(f"reference: machine {busy}% busy before it; " + shlex.join(argv))
    proc = adopt(subprocess.Popen(argv, cwd=path.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True, text=True, bufsize=1))
    lines: list[str] = []

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip())
            progress("  [reference] " + line.rstrip())

    reader = threading.Thread(target=pump, daemon=True, name="reference-output")
    reader.start()
    try:
        proc.wait(max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise DeadlineExceeded("the reference loop did not finish before the deadline") from None
    finally:
        reader.join(5)
        if proc.poll() is None:
            stop_process(proc)
        forget(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"reference loop exited with {proc.returncode}: " + "\n".join(lines[-20:]))
    data = json.loads((ref_dir / "results" / "a3_durable_master_sketch.json").read_text())
    return data, {"command": f"ZG_REF_DIR={ref_dir} " + shlex.join(argv), "versions": data.get("versions"),
                  "busy_before_pct": busy}


def reference_row(variant: str, row: dict) -> dict:
    k, credit = variant.split(":")[1:]
    assert f"credit {credit} each; {k} task(s)/SUBMIT" in row["setup"], (variant, row["setup"])
    return {"tasks_per_s": row["throughput"], "tasks_per_s_runs": row["throughput_runs"],
            "submit_per_s": median(row.get("submit_rates") or []), "submit_per_s_runs": row.get("submit_rates"),
            "p50_ms": row["p50_ms"], "p99_ms": row["p99_ms"],
            "p50_ms_runs": row["p50_runs_ms"], "p99_ms_runs": row["p99_runs_ms"], "cpu": row.get("cpu")}


def merge_references(outs: list[dict]) -> dict:
    """The reference's interleaved runs as one result: per variant the medians over the runs, and each run's figure."""
    if not outs or "missing" in outs[0]:
        return outs[0] if outs else {}
    merged: dict[str, Any] = {"command": outs[0]["command"].replace("ref1", "ref<k>"),
                              "versions": outs[0]["versions"],
                              "busy_before_pct": [o["busy_before_pct"] for o in outs]}
    for variant in VARIANTS:
        rows = [o[variant] for o in outs]
        merged[variant] = {
            "tasks_per_s": median([r["tasks_per_s"] for r in rows]),
            "tasks_per_s_runs": [v for r in rows for v in r["tasks_per_s_runs"]],
            "submit_per_s": median([r["submit_per_s"] for r in rows if r["submit_per_s"] is not None]),
            "submit_per_s_runs": [v for r in rows for v in (r["submit_per_s_runs"] or [])],
            "p50_ms": median([r["p50_ms"] for r in rows]), "p99_ms": median([r["p99_ms"] for r in rows]),
            "p50_ms_runs": [v for r in rows for v in r["p50_ms_runs"]],
            "p99_ms_runs": [v for r in rows for v in r["p99_ms_runs"]], "cpu": [r["cpu"] for r in rows]}
    bigs = [o["big"] for o in outs if "big" in o]
    if bigs:
        merged["big"] = {"n": bigs[0]["n"], "command": bigs[0]["command"].replace("ref1-big", "ref<k>-big"),
                         "submit_per_s": median([b["submit_per_s"] for b in bigs if b["submit_per_s"] is not None]),
                         "submit_per_s_runs": [v for b in bigs for v in (b["submit_per_s_runs"] or [])],
                         "tasks_per_s": median([b["tasks_per_s"] for b in bigs])}
    return merged
