"""`submit` and `tasks list|show|logs|cancel`."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import click

from ..client import Client, build_spec
from ..errors import EXIT_FAILED, EXIT_OK, MasterUnavailable, RemoteError, SubmitRefused, TaskNotFound, UsageError
from ..model import TASK_STATES, is_valid_id, new_task_id
from .common import client_options, client_options_with, json_arg, json_option, task_options
from .render import describe_error, echo_output, emit_json, field, seconds, table, when


def read_batch(path: str | Path, run: str) -> list[tuple[int, dict]]:
    """(line number, spec) of every task of a JSON-lines file, one object a line with the same keys as submit's
    flags, each checked as the master will check it: a bad line refuses the whole file before anything is sent.

    A line without an `id` gets `RUN-LINE`, so a run resumed with the same `run` (`--resume`) gives each line the
    id it had, and the master skips those it already holds. A relative `script` path is taken from the current
    directory, else from the file's own directory.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UsageError(f"task file {path} does not exist", "check the path given to --file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read task file {path}: {e}", "pass a readable UTF-8 JSON-lines file") from None
    specs = []
    width = len(str(len(lines)))
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path} line {number}"
        try:
            item = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            raise UsageError(f"{where}: not valid JSON ({getattr(e, 'msg', 'nested too deep')})",
                             "one JSON object per line") from None
        if not isinstance(item, dict):
            raise UsageError(f"{where}: expected a JSON object, got {type(item).__name__}", 'e.g. {"shell": "echo hi"}')
        script = item.get("script")
        if isinstance(script, str) and not Path(script).exists() and (Path(path).parent / script).exists():
            item["script"] = str(Path(path).parent / script)
        item.setdefault("id", f"{run}-{number:0{width}d}")   # zero-padded: the ids sort in line order
        try:
            specs.append((number, build_spec(**item)))
        except UsageError as e:
            raise UsageError(f"{where}: {e.message}", e.hint) from None
        except TypeError as e:
            raise UsageError(f"{where}: {e}", "see README, 'submit --file'") from None
    if not specs:
        raise UsageError(f"task file {path} holds no tasks", 'write one JSON object per line, e.g. {"shell": "echo hi"}')
    return specs


def submit_file(c: Client, path: str, run: str, notify: bool, as_json: bool) -> list[str]:
    """Submit a task file's lines; their ids once all are committed. If the master refuses a batch or stops
    answering part-way, the ids it committed are printed and the error names the first line not submitted and
    the `--resume` that submits the rest without duplicating any (README, 'submit --file')."""
    lines = read_batch(path, run)
    again = f"run it again with --resume {run} (lines already submitted are not submitted twice)"
    try:
        return c.submit([spec for _, spec in lines], notify=notify)
    except MasterUnavailable as e:
        raise MasterUnavailable(f"{e.message}; some lines of {path} may have been submitted", again) from None
    except SubmitRefused as e:
        committed = set(e.submitted)
        parents = {i.rsplit(".", 1)[0] for i in committed}   # a fan-out line's tasks are its id + ".N"
        done = {n for n, spec in lines if spec["id"] in committed or (spec["all"] and spec["id"] in parents)}
        first = next((n for n, _ in lines if n not in done), lines[-1][0])
        if as_json:
            emit_json({"ids": e.submitted, "first_line_not_submitted": first, "resume": run})
        elif e.submitted:
            click.echo("\n".join(e.submitted))
        refusal = e.message.removesuffix(f" ({len(e.submitted)} tasks of the other batches were committed)")
        # The refused Submit is the one that starts at the first line not submitted; its task N is a line of it.
        which = re.match(r"task (\d+) of \d+ in this Submit: ", refusal)
        numbers = [n for n, _ in lines]
        if which and numbers.index(first) + int(which.group(1)) - 1 < len(numbers):
            refusal = f"line {numbers[numbers.index(first) + int(which.group(1)) - 1]}: {refusal[which.end():]}"
        raise RemoteError(e.code, f"{refusal}; {len(done)} of {len(lines)} lines of {path} were "
                                  f"submitted (their ids are printed), line {first} is the first not submitted; "
                                  f"when the cause is fixed, {again}") from None


@click.command()
@task_options
@click.option("--all", "fan_out", is_flag=True, help="Run once on every online worker (with --tag: every matching one).")
@click.option("--limit-key", help="Share a limit with tasks of this key (e.g. a site: example.com).")
@click.option("--limit-concurrency", type=click.IntRange(1), help="At most this many tasks of the key at once.")
@click.option("--limit-per-minute", type=click.IntRange(1), help="At most this many tasks of the key started a minute.")
@click.option("--retry-backoff", type=click.FloatRange(0), help="Seconds before the first retry [retry_backoff].")
@click.option("--file", "batch_file", type=click.Path(), help="Submit every task of a JSON-lines file.")
@click.option("--resume", metavar="RUN", help="With --file: submit the lines a run refused part-way did not (the "
                                              "RUN its error named); lines already submitted are skipped.")
@click.option("--wait", is_flag=True, help="Wait for the task(s) to end; exit 0 only if all are done.")
@json_option
@client_options_with("--master-timeout")
def submit(client: Callable[[], Client], shell: str | None, script: str | None, python: str | None,
           args: str | None, kwargs: str | None, tags: tuple, device: str | None, priority: int | None,
           task_timeout: float | None, retries: int | None, name: str | None, fan_out: bool, limit_key: str | None,
           limit_concurrency: int | None, limit_per_minute: int | None, retry_backoff: float | None,
           batch_file: str | None, resume: str | None, wait: bool, as_json: bool) -> int:
    """Submit a task (or a batch with --file); prints the id(s).

    \b
    python main.py submit --shell "curl -s https://example.com | wc -c" --timeout 60 --wait
    python main.py submit --python zmqgrid.samples:fib --args '[25]' --wait
    python main.py submit --script crawl.py --args '["--site", "a"]' --tag linux
    python main.py submit --file tasks.jsonl --wait
    python main.py submit --file tasks.jsonl --resume 675e1f2a00c3b41d9e8f7a6b   (after a partial submission)
    python main.py submit --all --tag linux --shell "df -h /" --wait      (one run per worker)
    python main.py submit --shell "python crawl.py" --limit-key example.com --limit-concurrency 2
    """
    if resume is not None and (not batch_file or not is_valid_id(resume) or len(resume) > 40):
        raise UsageError("--resume takes the RUN named by a partial `submit --file` (letters, digits, _ . : -)",
                         "e.g. python main.py submit --file tasks.jsonl --resume 675e1f2a00c3b41d9e8f7a6b")
    specs: list[dict] = []
    if batch_file:
        if shell or script or python:
            raise UsageError("--file cannot be combined with --shell, --script or --python", "use one or the other")
    else:
        specs = [build_spec(shell=shell, script=script, python=python, args=json_arg(args, "--args", list),
                            kwargs=json_arg(kwargs, "--kwargs", dict), tag=list(tags) or None, device=device,
                            priority=priority, timeout=task_timeout, retries=retries, name=name,
                            all=fan_out or None, limit_key=limit_key, limit_concurrency=limit_concurrency,
                            limit_per_minute=limit_per_minute, retry_backoff=retry_backoff)]
    with client() as c:
        if batch_file:
            ids = submit_file(c, batch_file, resume or new_task_id(), wait, as_json)
        else:
            ids = c.submit(specs, notify=wait)
        if fan_out and not ids:
            raise UsageError("no online worker matches --all" + (f" --tag {' --tag '.join(tags)}" if tags else ""),
                             "check: python main.py devices list")
        if fan_out and wait and not as_json:
            return fan_out_report(c, ids)
        if not wait:
            if as_json:
                emit_json({"ids": ids})
            else:
                click.echo("\n".join(ids))
            return EXIT_OK
        results = c.wait(ids)
    ordered = [results[i] for i in ids]
    if as_json:
        emit_json(ordered)
    else:
        for r in ordered:
            detail = f" exit={r['exit_code']}" if r.get("exit_code") is not None else ""
            detail += f" value={json.dumps(r['value'], default=str)}" if r.get("value") is not None else ""
            detail += f" error={describe_error(r.get('error'))}" if r.get("error") and r["state"] != "done" else ""
            click.echo(f"{field(r['id'])} {r['state']} on {field(r.get('device_id'))}{detail}")
    return EXIT_OK if all(r["state"] == "done" for r in ordered) else EXIT_FAILED


def fan_out_report(c: Client, ids: list[str]) -> int:
    """One row per worker, like an ad-hoc command across a fleet, and a combined exit code."""
    results = c.wait(ids)
    rows = []
    for task_id in ids:
        r, task = results[task_id], c.task(task_id)
        tail = (c.logs(task_id)["stdout"].strip().splitlines() or [describe_error(r.get("error"))])[-1]
        took = task["finished_at"] - task["started_at"] if task["started_at"] and task["finished_at"] else None
        rows.append([r.get("device_id"), r["state"], r.get("exit_code"), seconds(took), tail])
    table(rows, ["DEVICE", "STATE", "EXIT", "TOOK", "OUTPUT (LAST LINE)"])
    ok = sum(1 for r in results.values() if r["state"] == "done")
    click.echo(f"{ok}/{len(ids)} workers succeeded")
    return EXIT_OK if ok == len(ids) else EXIT_FAILED


@click.group()
def tasks() -> None:
    """Inspect and control tasks."""


@tasks.command("list")
@click.option("--state", type=click.Choice(TASK_STATES), help="Only tasks in this state.")
@click.option("--device", help="Only tasks of this device.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True, help="Skip this many (paging).")
@json_option
@client_options
def list_tasks(client: Callable[[], Client], state: str | None, device: str | None, limit: int, offset: int,
               as_json: bool) -> None:
    """List tasks, newest first.  Example: python main.py tasks list --state failed"""
    with client() as c:
        rows = c.tasks(state, limit=limit, offset=offset, device=device)
    if as_json:
        emit_json(rows)
        return
    table(([r["id"], r["kind"], r["name"], r["state"], r["device_id"], r["attempt"], r["exit_code"],
            seconds((r["finished_at"] or 0) - r["started_at"] if r["started_at"] and r["finished_at"] else None)]
           for r in rows), ["ID", "KIND", "TASK", "STATE", "DEVICE", "ATTEMPT", "EXIT", "TOOK"])


@tasks.command("show")
@click.argument("task_id")
@json_option
@client_options
def show_task(client: Callable[[], Client], task_id: str, as_json: bool) -> None:
    """Show one task: spec, state, attempts, result.  Example: python main.py tasks show 3f2a"""
    with client() as c:
        task = c.task(task_id)
    if as_json:
        emit_json(task)
        return
    for key in ("id", "kind", "name", "state", "priority", "attempt", "retries", "timeout_s", "tags", "device_id",
                "exit_code", "reason"):
        click.echo(f"{key + ':':<11} {field(task.get(key))}")
    if task.get("waiting"):
        click.echo(f"{'waiting:':<11} {field(task['waiting'])}")
    click.echo(f"{'created:':<11} {when(task['created_at'])}   finished: {when(task['finished_at'])}")
    if task.get("value") is not None:
        click.echo(f"{'value:':<11} {json.dumps(task['value'], default=str)}")
    if task.get("error"):
        click.echo(f"{'error:':<11} {describe_error(task['error'])}")
        if task["error"].get("traceback"):
            echo_output(str(task["error"]["traceback"]).rstrip() + "\n")
    if task.get("evidence"):
        click.echo(f"{'deaths:':<11} {task['deaths']} (its worker died while running it)")
        for e in task["evidence"]:
            noted = "  [noted, not counted: it had started before others]" if e.get("counted") is False else ""
            click.echo(f"  attempt {e['attempt']} on {field(e['device_id'])} at {when(e['at'])}: "
                       f"{field(e['reason'])}{noted}")
    click.echo("attempts:")
    table(([a["attempt"], a["device_id"], a["state"], when(a["started_at"]), when(a["finished_at"]), a["exit_code"],
            "yes" if a["stale"] else "", describe_error(a["error"])] for a in task["attempts"]),
          ["#", "DEVICE", "STATE", "STARTED", "FINISHED", "EXIT", "STALE", "ERROR"])


@tasks.command("logs")
@click.argument("task_id")
@click.option("--attempt", type=click.IntRange(1), help="Which attempt [the last].")
@click.option("--follow", "-f", is_flag=True, help="Keep printing output as it comes, until the task ends.")
@json_option
@client_options
def task_logs(client: Callable[[], Client], task_id: str, attempt: int | None, follow: bool, as_json: bool) -> None:
    """Print a task's stdout and stderr.  Example: python main.py tasks logs 3f2a --follow"""
    if follow:
        with client() as c:
            for stream, text in c.follow(c.task(task_id)["id"]):
                echo_output(text, err=stream == "stderr")
        return
    with client() as c:
        out = c.logs(task_id, attempt)
    if as_json:
        emit_json(out)
        return
    echo_output(out["stdout"] if out["stdout"].endswith("\n") else out["stdout"] + "\n")
    if out["stderr"]:
        echo_output(out["stderr"] if out["stderr"].endswith("\n") else out["stderr"] + "\n", err=True)


@tasks.command("requeue")
@click.argument("task_ids", nargs=-1, required=True)
@json_option
@client_options
def requeue_tasks(client: Callable[[], Client], task_ids: tuple, as_json: bool) -> int:
    """Queue failed, timed-out, cancelled or quarantined tasks again (retries start afresh).

    Example: python main.py tasks requeue 3f2a9c01d2e4b5a6
    """
    with client() as c:
        outcome = c.requeue(list(task_ids))
    if as_json:
        emit_json(outcome)
    else:
        for task_id, state in outcome.items():
            click.echo(f"{task_id} {state}")
    return EXIT_OK if all(v == "queued" for v in outcome.values()) else EXIT_FAILED


@tasks.command("cancel")
@click.argument("task_ids", nargs=-1)
@click.option("--state", type=click.Choice(["queued", "assigned", "running"]), help="Cancel every task in this state.")
@click.option("--tag", help="Cancel every unfinished task that requires this tag.")
@json_option
@client_options
def cancel_tasks(client: Callable[[], Client], task_ids: tuple, state: str | None, tag: str | None,
                 as_json: bool) -> int:
    """Cancel tasks: queued ones at once, running ones are killed on their worker.

    
    python main.py tasks cancel 3f2a9c01d2e4b5a6
    python main.py tasks cancel --state queued --tag gpu
    """
    if bool(task_ids) == bool(state or tag):
        raise UsageError("give task ids, or --state/--tag, not both", "e.g. python main.py tasks cancel --state queued")
    with client() as c:
        outcome = c.cancel(list(task_ids)) if task_ids else c.cancel(state=state, tag=tag)
    missing = [task_id for task_id, state in outcome.items() if state == "not found"]
    if as_json:
        emit_json(outcome)
    else:
        for task_id, state in outcome.items():
            if state != "not found":
                click.echo(f"{task_id} {state}")
    if missing:  # an unknown id is the user's mistake: one error line and exit 3, as in `tasks show`
        raise TaskNotFound(f"no task {', '.join(repr(i) for i in missing)}", "list tasks with: python main.py tasks list")
    return EXIT_OK
