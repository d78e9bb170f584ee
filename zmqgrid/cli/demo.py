"""The standalone demo: submit the bundled sample batch and show each task end, then a summary."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

import click

from ..client import Client
from ..errors import EXIT_FAILED, EXIT_OK
from ..model import TaskState, new_task_id
from .render import describe_error, field, table
from .taskfile import read_batch

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_tasks.jsonl"


def run_demo(master_url: str, stopping: threading.Event, curve: Any = None,
             sample: Path = SAMPLE, workers_alive: Callable[[], int] | None = None) -> int:
    specs = [spec for _, spec in read_batch(sample, new_task_id())]
    names = {s["id"]: s["name"] for s in specs}
    started = time.monotonic()
    with Client(master_url, timeout_s=10, curve=curve) as client:
        ids = client.submit(specs, notify=True)
        click.echo(f"submitted {len(ids)} sample tasks (shell, script, python) from {sample}")
        done: dict[str, dict] = {}
        for item in client.as_finished(ids, tick_s=0.2):
            if stopping.is_set():
                break
            if item is None:   # a quiet moment: are the workers still there?
                if workers_alive is not None and not workers_alive():
                    click.echo(f"error: every worker process exited with {len(ids) - len(done)} sample tasks "
                               "unfinished; see the log files", err=True)
                    return EXIT_FAILED
                continue
            task_id, r = item
            done[task_id] = r
            detail = f"value={json.dumps(r['value'])[:40]}" if r.get("value") is not None else \
                f"exit={r.get('exit_code')}"
            if r["state"] != TaskState.DONE:
                detail += f" ({describe_error(r.get('error')) or r.get('reason')})"
            click.echo(f"[{time.monotonic() - started:5.1f}s] {len(done):2d}/{len(ids)} {r['state']:<9} "
                       f"{names[task_id][:38]:<38} on {field(r.get('device_id'))}  {detail}")
        if stopping.is_set():
            return EXIT_FAILED
        logs = {i: client.logs(i)["stdout"].strip().splitlines() for i in ids}
    click.echo("")
    table(([i, done[i]["state"], done[i].get("device_id"), names[i], (logs[i] or [""])[-1]] for i in ids),
          ["ID", "STATE", "DEVICE", "TASK", "LAST OUTPUT LINE"])
    states = [done[i]["state"] for i in ids]
    done_count = states.count(TaskState.DONE)
    click.echo(f"\n{done_count} done, {len(states) - done_count} not done "
               f"(2 fail on purpose) in {time.monotonic() - started:.1f}s. "
               "Keep a cluster running with: python main.py distribute --mode standalone; then, in another terminal: "
               "python main.py tasks list")
    return EXIT_OK
