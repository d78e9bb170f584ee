"""`submit`: one task, a JSON-lines file of them, or one on every worker; optionally waiting for the end."""
from __future__ import annotations

import re
import signal
from typing import Callable

import click

from ..client import Client, build_spec
from ..errors import (EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, EXIT_WAIT_TIMEOUT, MasterUnavailable, RemoteError, SubmitRefused,
                      UsageError)
from ..model import is_valid_id, new_task_id
from .common import client_options_with, json_arg, json_option, task_options
from .render import emit_json
from .taskfile import TaskFile
from .waiting import SubmitWait


def submit_file(c: Client, path: str, task_file: TaskFile, run: str, notify: bool, as_json: bool) -> list[str]:
    """Submit a task file's lines, in Submits of 1,000 with 8 in flight (Client.map's defaults); their ids once all
    are committed. If the master refuses a batch
    or stops answering part-way, the ids it committed are printed and the error names the first line not submitted
    and the `--resume` that submits the rest without duplicating any (README, 'submit --file')."""
    again = f"run it again with --resume {run} (lines already submitted are not submitted twice)"
    lines = task_file.lines
    try:
        return c.send_batches(task_file.submits(1000), notify=notify, window=8)
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
@click.option("--all", "fan_out", is_flag=True,
              help="Run once on every online worker (with --tag: every matching one); not retried unless --retries "
                   "is given.")
@click.option("--limit-key", help="Share a limit with tasks of this key (e.g. a site: example.com).")
@click.option("--limit-concurrency", type=click.IntRange(1), help="At most this many tasks of the key at once.")
@click.option("--limit-per-minute", type=click.IntRange(1), help="At most this many tasks of the key started a minute.")
@click.option("--retry-backoff", type=click.FloatRange(0), help="Seconds before the first retry [retry_backoff].")
@click.option("--retry-on", "retry_on", multiple=True, metavar="ERROR",
              help="Retry only failures of this error type, e.g. ConnectionError (repeat for more).")
@click.option("--no-retry-on", "no_retry_on", multiple=True, metavar="ERROR",
              help="Never retry failures of this error type, e.g. ValueError (repeat for more).")
@click.option("--file", "batch_file", type=click.Path(), help="Submit every task of a JSON-lines file.")
@click.option("--resume", metavar="RUN", help="With --file: submit the lines a run refused part-way did not (the "
                                              "RUN its error named); lines already submitted are skipped.")
@click.option("--wait", is_flag=True, help="Wait for the task(s) to end, showing one task's output as it comes; "
                                           "exit 0 only if all are done.")
@click.option("--wait-timeout", type=click.FloatRange(min=0.001), metavar="S",
              help=f"Stop waiting after S seconds (implies --wait): exit {EXIT_WAIT_TIMEOUT}; the tasks go on.")
@click.option("--quiet", "-q", is_flag=True, help="With --wait: no output nor notes while waiting, one line per task "
                                                  "at the end.")
@json_option
@client_options_with("--master-timeout")
def submit(client: Callable[[], Client], shell: str | None, script: str | None, python: str | None,
           args: str | None, kwargs: str | None, tags: tuple, device: str | None, priority: int | None,
           task_timeout: float | None, retries: int | None, name: str | None, project: str | None,
           python_env: str | None, fan_out: bool,
           limit_key: str | None, limit_concurrency: int | None, limit_per_minute: int | None,
           retry_backoff: float | None, retry_on: tuple, no_retry_on: tuple, batch_file: str | None,
           resume: str | None, wait: bool, wait_timeout: float | None, quiet: bool, as_json: bool) -> int:
    """Submit a task (or a batch with --file); prints the id(s).

    With --wait, a single task's stdout and stderr are printed as they come, then a status line on stderr (a
    python task's return value follows its output on stdout, as JSON); a batch prints a line per task as it ends.
    The ids and why a task waits (e.g. "no online worker has tag gpu") go to stderr. Ctrl-C stops the wait,
    not the tasks.

    \b
    python main.py submit --shell "curl -s https://example.com | wc -c" --run-timeout 60 --wait
    python main.py submit --python zmqgrid.samples:fib --args '[25]' --wait
    python main.py submit --python myjobs:fetch --retries 5 --retry-on ConnectionError --wait
    python main.py submit --script crawl.py --args '["--site", "a"]' --tag linux
    python main.py submit --file tasks.jsonl --wait
    python main.py submit --file tasks.jsonl --resume 675e1f2a00c3b41d9e8f7a6b   (after a partial submission)
    python main.py submit --all --tag linux --shell "df -h /" --wait      (one run per worker)
    python main.py submit --shell "nvidia-smi" --tag gpu --wait-timeout 60
    python main.py submit --shell "python crawl.py" --limit-key example.com --limit-concurrency 2
    python main.py submit --project myspider --python myspider.crawl:run --args '["https://example.com"]'
    python main.py submit --python-env py39 --script legacy_export.py --wait
    """
    if resume is not None and (not batch_file or not is_valid_id(resume) or len(resume) > 40):
        raise UsageError("--resume takes the RUN named by a partial `submit --file` (letters, digits, _ . : -)",
                         "e.g. python main.py submit --file tasks.jsonl --resume 675e1f2a00c3b41d9e8f7a6b")
    wait = wait or wait_timeout is not None
    if quiet and not wait:
        raise UsageError("--quiet goes with --wait (without it, submit prints only the ids)",
                         "add --wait, or leave --quiet out")
    specs: list[dict] = []
    if batch_file:
        if shell or script or python:
            raise UsageError("--file cannot be combined with --shell, --script or --python", "use one or the other")
    else:
        specs = [build_spec(shell=shell, script=script, python=python, args=json_arg(args, "--args", list),
                            kwargs=json_arg(kwargs, "--kwargs", dict), tag=list(tags) or None, device=device,
                            priority=priority, timeout=task_timeout, retries=retries, name=name,
                            all=fan_out or None, limit_key=limit_key, limit_concurrency=limit_concurrency,
                            limit_per_minute=limit_per_minute, retry_backoff=retry_backoff,
                            retry_on=list(retry_on) or None, no_retry_on=list(no_retry_on) or None,
                            project=project, python_env=python_env)]
    with client() as c:
        names = {spec["id"]: spec["name"] for spec in specs}
        if batch_file:
            run = resume or new_task_id()
            task_file = TaskFile(batch_file, run)
            names = {spec["id"]: spec["name"] for _, spec in task_file.lines}
            ids = submit_file(c, batch_file, task_file, run, wait, as_json)
        else:
            ids = c.submit(specs, notify=wait)
        if fan_out and not ids:
            raise UsageError("no online worker matches --all" + (f" --tag {' --tag '.join(tags)}" if tags else "")
                             + (f" --project {project} (a worker runs projects unless allow_projects is false)"
                                if project else "")
                             + (f" --python-env {python_env} (worker config python_envs)" if python_env else ""),
                             "check: python main.py devices list")
        if not wait:
            if as_json:
                emit_json({"ids": ids})
            else:
                click.echo("\n".join(ids))
            return EXIT_OK
        waiter = SubmitWait(c, ids, names, wait_timeout_s=wait_timeout, quiet=quiet, as_json=as_json)
        # SIGTERM (a CI job cancelled, `timeout`, a supervisor) ends the wait as Ctrl-C does: the line says where
        # the tasks stay and how to follow or cancel them.
        previous = signal.signal(signal.SIGTERM, _terminated)
        try:
            if fan_out:
                return waiter.fan_out()
            return waiter.one() if len(ids) == 1 and not batch_file else waiter.batch()
        except KeyboardInterrupt:
            click.echo(waiter.interrupted(), err=True)
            return EXIT_INTERRUPTED
        except Terminated:
            click.echo(waiter.interrupted().replace("interrupted", "terminated", 1), err=True)
            return EXIT_TERMINATED
        finally:
            signal.signal(signal.SIGTERM, previous)


class Terminated(Exception):
    """SIGTERM arrived while `submit --wait` waited."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated
