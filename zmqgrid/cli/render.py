"""Output for people (aligned tables, short lines) and for scripts (--json)."""
from __future__ import annotations

import datetime as dt
import json
from typing import Any, Iterable, Sequence

import click


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


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
    text = "-" if value is None or value == "" else str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def describe_error(error: dict | None) -> str:
    if not error:
        return ""
    return f"{error.get('type')}: {error.get('message')}"
