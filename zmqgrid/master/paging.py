"""A Query's answer kept under what the asking client accepts (docs/architecture.md, "Replies are paged").

ZeroMQ closes a connection whose message passes its MAXMSGSIZE, so an answer too large for the client is not an
error it could read but silence ("the master did not answer"). Whatever the ledger holds, including rows written
before the task spec limits, every answer built here fits: listed rows have their texts cut, a page holds the rows
that fit, and one task or one stretch of output is cut to what fits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from ..errors import UsageError
from ..protocol import DEFAULT_MAX_MESSAGE_BYTES, packb

CUT = "…"
MIN_CLIENT_BYTES = 4096


@dataclass(frozen=True)
class Clip:
    """How far a value shown in an answer is cut: texts to `text` characters, lists and maps to `items` entries,
    and anything nested deeper than `depth` replaced by CUT."""
    text: int
    items: int
    depth: int


LISTED = Clip(text=1024, items=64, depth=4)        # a row of `tasks` or `devices`
# Ever shorter cuts for one value that does not fit as it is (the last one fits any row within a budget >= 2 KiB).
NARROWER = (Clip(65536, 1000, 40), Clip(4096, 256, 8), Clip(256, 32, 4), Clip(32, 8, 2), Clip(8, 4, 1))


def budget(params: dict) -> int:
    """Bytes an answer may take: half of what the client says it accepts (`max_bytes`, 16 MiB if it does not
    say), the other half being room for the envelope."""
    accepted = params.get("max_bytes", DEFAULT_MAX_MESSAGE_BYTES)
    if not isinstance(accepted, int) or isinstance(accepted, bool) or not MIN_CLIENT_BYTES <= accepted < 2 ** 31:
        raise UsageError(f"max_bytes must be an integer {MIN_CLIENT_BYTES}-{2 ** 31 - 1}, got {accepted!r}")
    return accepted // 2


def clip(value: Any, how: Clip = LISTED) -> Any:
    """`value` with long texts, long lists and maps and deep nesting cut (a new value; `value` is not changed)."""
    kind = type(value)
    if kind is str:
        return value if len(value) <= how.text else value[:how.text] + CUT
    if kind is bytes:
        return value if len(value) <= how.text else value[:how.text]
    if kind is list or kind is tuple:
        if how.depth <= 0:
            return CUT
        inner = Clip(how.text, how.items, how.depth - 1)
        out = [clip(v, inner) for v in value[:how.items]]
        return out + [CUT] if len(value) > how.items else out
    if kind is dict:
        if how.depth <= 0:
            return CUT
        inner = Clip(how.text, how.items, how.depth - 1)
        out = {}
        for n, (k, v) in enumerate(value.items()):
            if n == how.items:
                out[CUT] = CUT
                break
            out[clip(k, inner) if type(k) is str else k] = clip(v, inner)
        return out
    return value


def size(value: Any) -> int:
    return len(packb(value))


def fit(value: Any, room: int) -> Any:
    """`value` as it is if its packed form takes at most `room` bytes, else cut by the first of NARROWER that
    makes it fit (the narrowest if none does)."""
    if size(value) <= room:
        return value
    for how in NARROWER:
        cut = clip(value, how)
        if size(cut) <= room:
            return cut
    return cut


def page(rows: Iterable[Any], room: int) -> tuple[list, bool]:
    """The leading rows whose packed forms fit `room` together, each cut as LISTED (and further if one alone does
    not fit), and whether rows were left out for the budget. At least one row is given when there is one, so a
    client following pages always moves on."""
    out: list = []
    used = 16
    for row in rows:
        # A row's own fields are all kept, however many a table has; what each holds is cut.
        row = {k: clip(v) for k, v in row.items()} if type(row) is dict else clip(row)
        taken = size(row)
        if taken > room - used:
            if out:
                return out, True
            row = fit(row, room - used)
            taken = size(row)
        out.append(row)
        used += taken
    return out, False


def stretch(text: str, start: int, room: int) -> str:
    """`text[start:]`, cut to at most `room` bytes of UTF-8 (at a character boundary)."""
    piece = text[start:start + room]
    while len(piece.encode("utf-8", "surrogatepass")) > room:
        piece = piece[:len(piece) // 2]
    return piece
