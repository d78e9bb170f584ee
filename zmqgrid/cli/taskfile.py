"""The task file of `submit --file`: JSON lines, each a task with the keys of submit's flags, all checked before any
is sent (README, 'submit --file')."""
from __future__ import annotations

import json
from json.decoder import WHITESPACE
from pathlib import Path
from typing import Any, Iterator

from ..errors import ProtocolError, UsageError
from ..model import CALL_KEYS, build_spec, check_call_value, compact_spec, factor_batch, is_valid_id

# json.loads is this scan plus three Python frames a line; what it accepts and refuses is the same (`_parse`).
_SCAN = json.JSONDecoder().scan_once


def read_batch(path: str | Path, run: str) -> list[tuple[int, dict]]:
    """(line number, spec) of every task of a JSON-lines file (TaskFile)."""
    return TaskFile(path, run).lines


class TaskFile:
    """Every task of a JSON-lines file, one object a line with the same keys as submit's flags, each checked as the
    master will check it: a bad line refuses the whole file before anything is sent. `lines`: (line number, spec).

    A line without an `id` gets `RUN-LINE`, so a run resumed with the same `run` (`--resume`) gives each line the
    id it had, and the master skips those it already holds. A relative `script` path is taken from the current
    directory, else from the file's own directory.
    """

    def __init__(self, path: str | Path, run: str) -> None:
        self.path = path
        builder = SpecBuilder()
        self.lines = _read(path, run, builder)
        self.bases = builder.bases   # per line: the python spec whose options it shares (SpecBuilder), else None

    def submits(self, batch_size: int = 1000) -> Iterator[tuple[dict, list]]:
        """(common, tasks) of each Submit, `batch_size` lines each, as Client.submit makes them (compact_spec, then
        factor_batch), made as they are sent. The lines of one SpecBuilder base go as its options once and each
        line's id and args, without comparing each line's twenty options again."""
        common_of: dict[int, dict] = {}
        for start in range(0, len(self.lines), batch_size):
            chunk = [spec for _, spec in self.lines[start:start + batch_size]]
            bases = self.bases[start:start + batch_size]
            base = bases[0]
            if base is None or len(chunk) < 2 or any(b is not base for b in bases):
                yield factor_batch([compact_spec(spec) for spec in chunk])
                continue
            if id(base) not in common_of:
                common_of[id(base)] = {k: v for k, v in compact_spec(base).items() if k not in CALL_KEYS}
            yield common_of[id(base)], [_call_of(spec) for spec in chunk]


def _call_of(spec: dict) -> dict:
    """What factor_batch keeps of a compacted python spec: its id, and its args and kwargs unless empty."""
    call = {"id": spec["id"]}
    if spec["args"]:
        call["args"] = spec["args"]
    if spec["kwargs"]:
        call["kwargs"] = spec["kwargs"]
    return call


def _read(path: str | Path, run: str, builder: SpecBuilder) -> list[tuple[int, dict]]:
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
        item = _parse(line, path, number)
        script = item.get("script")
        if isinstance(script, str) and item.get("project") is None and not Path(script).exists() \
                and (Path(path).parent / script).exists():   # a project's script is a path in the project
            item["script"] = str(Path(path).parent / script)
        item.setdefault("id", f"{run}-{number:0{width}d}")   # zero-padded: the ids sort in line order
        try:
            specs.append((number, builder.build(item)))
        except UsageError as e:
            raise UsageError(f"{path} line {number}: {e.message}", e.hint) from None
        except TypeError as e:
            raise UsageError(f"{path} line {number}: {e}", "see README, 'submit --file'") from None
    if not specs:
        raise UsageError(f"task file {path} holds no tasks", 'write one JSON object per line, e.g. {"shell": "echo hi"}')
    return specs


def _parse(line: str, path: str | Path, number: int) -> dict:
    """One line's object; a line that is not one is refused with json.loads's own words."""
    try:
        item, end = _SCAN(line, 0 if line[:1] == "{" else WHITESPACE.match(line, 0).end())
        if end != len(line) and WHITESPACE.match(line, end).end() != len(line):
            item = json.loads(line)   # extra data after the value: json.loads says so
    except (StopIteration, ValueError, RecursionError):
        try:
            item = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            raise UsageError(f"{path} line {number}: not valid JSON ({getattr(e, 'msg', 'nested too deep')})",
                             "one JSON object per line") from None
    if not isinstance(item, dict):
        raise UsageError(f"{path} line {number}: expected a JSON object, got {type(item).__name__}",
                         'e.g. {"shell": "echo hi"}')
    return item


class SpecBuilder:
    """build_spec for the lines of a file, with the batch path the master takes for a Submit with common
    (model.validate_batch): a python line whose keys other than id, args and kwargs equal the line before's reuses
    that line's checked spec and has only its id and positional args checked. Anything else, and any line the short
    path finds fault with, goes through build_spec whole, so the specs and the errors are build_spec's own."""

    def __init__(self) -> None:
        self.common: dict | None = None   # the last whole-built python line's keys other than CALL_KEYS
        self.base: dict | None = None     # its spec
        self.bases: list[dict | None] = []   # per spec built: its base (a whole-built python spec is its own)

    def build(self, item: dict) -> dict:
        common = {k: v for k, v in item.items() if k not in CALL_KEYS}
        if common == self.common and "kwargs" not in item:
            spec = self._call(item)
            if spec is not None:
                self.bases.append(self.base)
                return spec
        spec = build_spec(**item)
        if spec["kind"] == "python":
            self.common, self.base = common, spec
        self.bases.append(self.base if spec["kind"] == "python" else None)
        return spec

    def _call(self, item: dict) -> dict | None:
        """The spec of a call of the last python line's function with the same options, or None to build it whole."""
        task_id: Any = item.get("id")
        args = item.get("args")
        if not is_valid_id(task_id) or not (args is None or type(args) is list):
            return None
        if args:
            try:
                check_call_value("args", args)
            except ProtocolError:   # over a limit: build_spec says which
                return None
        spec = self.base.copy()
        spec["id"], spec["args"], spec["kwargs"] = task_id, [] if args is None else args, {}
        return spec
