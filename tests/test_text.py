"""zmqgrid.text.printable: what a peer's string becomes before a person sees it (log line, table, dashboard)."""
from __future__ import annotations

import pytest

from zmqgrid.text import cut_middle, printable

pytestmark = pytest.mark.timeout(30)


def test_plain_text_is_left_as_it_is():
    assert printable("crawler-01.example.org") == "crawler-01.example.org"
    assert printable("Müller — 東京") == "Müller — 東京"


@pytest.mark.parametrize("raw, shown", [
    ("a\nb", "a\\x0ab"),
    ("a\r\nb", "a\\x0d\\x0ab"),
    ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
    ("\x1b[2J", "\\x1b[2J"),
    ("a\x00b", "a\\x00b"),
    ("a\x7fb", "a\\x7fb"),
    ("a\x9bb", "a\\x9bb"),            # C1 CSI, which some terminals honour like ESC [
    ("a\x85b", "a\\x85b"),            # C1 NEL, a newline to some viewers
    ("abc\u202edcba", "abc\\u202edcba"),  # right-to-left override
    ("a\u2066b\u2069", "a\\u2066b\\u2069"),
    ("a\u2028b", "a\\u2028b"),        # line separator
    ("a\tb", "a\\x09b"),
    ("a\ud800b", "a\\ud800b"),        # a lone surrogate, which UTF-8 cannot even encode
])
def test_control_format_and_separator_characters_become_visible_escapes(raw, shown):
    assert printable(raw) == shown


def test_the_result_is_always_one_line_whatever_the_input():
    every_code_point_below_0x3000 = "".join(chr(c) for c in range(0x3000) if not 0xD800 <= c < 0xE000)
    shown = printable(every_code_point_below_0x3000, limit=100_000)
    assert "\n" not in shown and "\r" not in shown and "\x1b" not in shown and "\x85" not in shown
    assert shown.splitlines() == [shown]


def test_long_text_is_cut_to_the_limit_and_ends_in_an_ellipsis():
    assert printable("x" * 10, limit=10) == "x" * 10
    cut = printable("x" * 11, limit=10)
    assert cut == "x" * 9 + "…" and len(cut) == 10
    assert len(printable("y" * 8_000_000)) == 200


def test_an_escape_is_never_cut_in_half():
    assert printable("ab\x1bcdef", limit=5) == "ab…"
    assert printable("ab\x1bcdef", limit=7) == "ab\\x1b…"


def test_escapes_count_towards_the_limit():
    shown = printable("\n" * 100, limit=20)
    assert len(shown) <= 20 and shown.endswith("…")


def test_bytes_are_decoded_and_other_objects_shown_as_text():
    assert printable(b"host\xff\n") == "host\\xff\\x0a"
    assert printable(12) == "12"
    assert printable(None) == "None"
    assert printable(["a\nb"]) == "['a\\nb']"  # str() of a list already shows its items' repr


def test_a_limit_below_one_is_a_programming_error():
    with pytest.raises(ValueError):
        printable("x", limit=0)


@pytest.mark.parametrize("limit", [0, 5, 60, 61, 200])
def test_cut_middle_keeps_head_and_tail_within_the_limit(limit):
    text = "h" * 500 + "t" * 500
    cut = cut_middle(text, limit)
    assert len(cut) <= limit
    if limit >= 200:
        assert cut.startswith("h") and cut.endswith("t") and "cut from 1000" in cut
