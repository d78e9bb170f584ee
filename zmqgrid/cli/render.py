"""Output for people (aligned tables, short lines) and for scripts (--json).

Every string a peer chose (device and host names, tags, task names, errors) passes `printable` here, at the
display edge: see docs/architecture.md, "Text from peers shown to people".
"""
from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any, Iterable, Sequence

import click

from ..text import printable, visible_output

# JSON escapes C0 controls itself; these it would write raw with ensure_ascii=False: the C1 controls (0x9b is a
# CSI on some terminals), the line/paragraph separators and the bidi and zero-width format characters.
_JSON_RAW_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]")

FIELD_LIMIT = 400
"""Characters of one peer-chosen value in a detail line (`tasks show`)."""


def emit_json(data: Any) -> None:
    text = json.dumps(data, indent=2, default=str, ensure_ascii=False)
    # Only inside strings can such characters occur, and a \u escape there decodes to the same data.
    click.echo(_JSON_RAW_UNSAFE.sub(lambda m: f"\\u{ord(m[0]):04x}", text))


def field(value: Any, limit: int = FIELD_LIMIT) -> str:
    """A peer-chosen value for a detail line: '-' when empty, else one escaped line of at most `limit` characters."""
    return "-" if value is None or value == "" or value == [] else printable(value, limit)


def echo_output(text: str, *, err: bool = False) -> None:
    """A task's own output, as it printed it to a pipe or a file; on a terminal its control characters are
    shown as escapes (newlines and tabs kept), so it cannot clear, retitle or rewrite the operator's screen."""
    if click.get_text_stream("stderr" if err else "stdout").isatty():
        click.echo(visible_output(text), nl=False, err=err)
    else:
        # color=True: click would otherwise strip what looks like ANSI codes from a pipe or a file
        click.echo(text, nl=False, err=err, color=True)


def when(ts: float | None) -> str:
    return "-" if not ts else dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s" if value < 120 else f"{value / 60:.1f}m"


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> None:
    """Print rows as left-aligned columns; long cells are cut so a row fits a terminal line."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    click.echo(line.format(*headers).rstrip())
    for row in cells:
        click.echo(line.format(*row).rstrip())
    if not cells:
        click.echo("(none)")


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else printable(value, 60)


def describe_error(error: dict | None, limit: int = FIELD_LIMIT) -> str:
    if not error:
        return ""
    return printable(f"{error.get('type')}: {error.get('message')}", limit)
