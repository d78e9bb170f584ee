"""Text from peers made safe to show a person: in a log line, a terminal table or the dashboard.

A device id, host name, task name or error text comes from a peer and may hold anything: a newline that forges a
second log line, ESC/OSC/CSI sequences that rewrite the operator's terminal, a bidi override that reorders what is
shown, or 8 MB. `printable` is the one function that turns such a value into a short single line; it sits at the
bottom layer (it imports nothing of zmqgrid) so the master, the CLI and the dashboard all use the same rules.
"""
from __future__ import annotations

import unicodedata

ELLIPSIS = "…"
# Cc: C0 controls (NUL..US, so LF, CR, ESC), DEL and the C1 controls (0x80..0x9f, which include CSI 0x9b).
# Cf: format characters, among them the bidi embeddings/overrides/isolates (U+202A..U+202E, U+2066..U+2069) and
# the zero-width ones. Zl/Zp: the line and paragraph separators, which some viewers break lines at.
# Cs: lone surrogates, which cannot be encoded to UTF-8 at all.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(value: object, limit: int = 200) -> str:
    """`value` as one line of at most `limit` characters, every control or format character shown as an escape.

    ESC becomes the four characters `\\x1b`, a newline `\\x0a`, U+202E `\\u202e`; a backslash stays itself (the
    result is for reading, not for parsing back). Past `limit` the text is cut and ends in '…'. Bytes are decoded
    as UTF-8 with invalid bytes shown as escapes; any other object is shown as its str(). The work is bounded by
    `limit`, not by the length of `value`: an 8 MB device id costs as much as a 200-character one.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = bytes(value[:4 * (limit + 1)]).decode("utf-8", errors="backslashreplace")
    else:
        text = value if isinstance(value, str) else str(value)
    if len(text) <= limit and text.isprintable():   # the usual case, in C: nothing to escape or cut
        return text
    # each character of `text` gives at least one character of output, so limit + 1 of them decide the result
    pieces: list[str] = []
    length = 0
    for char in text[:limit + 1]:
        piece = _escape(char) if unicodedata.category(char) in _UNSAFE_CATEGORIES else char
        pieces.append(piece)
        length += len(piece)
        if length > limit:
            break
    result = "".join(pieces)
    if length <= limit and len(text) <= limit:
        return result
    # keep whole pieces only (never half an escape) and leave room for the ellipsis
    kept: list[str] = []
    used = 0
    for piece in pieces:
        if used + len(piece) > limit - 1:
            break
        kept.append(piece)
        used += len(piece)
    return "".join(kept) + ELLIPSIS


def byte_size(size: object) -> str:
    """A size in bytes as a person reads it: "812.0 KiB", "3.4 MiB"; "-" for what is not a count of bytes."""
    if not isinstance(size, int) or isinstance(size, bool):
        return "-"
    return f"{size / (1 << 20):.1f} MiB" if size >= 1 << 20 else f"{size / 1024:.1f} KiB"


def cut_middle(text: str, limit: int) -> str:
    """`text` within `limit` characters: its head and tail around a marker saying how much was cut (output and
    error texts, where the end of a traceback or a log matters as much as its start)."""
    if len(text) <= limit:
        return text
    marker = f"\n[... zmqgrid: cut from {len(text)} to {limit} characters ...]\n"
    if limit <= len(marker):
        return text[:limit]
    keep = limit - len(marker)
    return text[:keep // 2] + marker + text[len(text) - (keep - keep // 2):]


def visible_output(text: str) -> str:
    """A task's output for a terminal: newlines and tabs kept, CR LF a newline, every other control or format
    character (ESC, a lone CR, C1, bidi overrides) shown as its escape; nothing cut."""
    lines = text.replace("\r\n", "\n").split("\n")
    return "\n".join(line if line.isprintable() else _visible_line(line) for line in lines)


def _visible_line(line: str) -> str:
    # printable's limit bounds its output; the longest escape is 10 characters, so this one never cuts.
    return "\t".join(printable(part, 10 * len(part) + 1) if part else "" for part in line.split("\t"))
