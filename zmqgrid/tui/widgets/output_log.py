"""Provides the output log of a task: stdout and stderr as they arrive, with tail and find."""
from __future__ import annotations

from rich.highlighter import Highlighter
from rich.text import Text
from textual.widgets import Log

from ...text import visible_output

STDERR_MARK = "‼ "
"""Put in front of every stderr line, so the two streams stay apart in one pane."""


class FindHighlighter(Highlighter):
    """Colours stderr lines and marks every occurrence of the text being searched."""

    def __init__(self) -> None:
        self.term = ""

    def highlight(self, text: Text) -> None:
        if text.plain.startswith(STDERR_MARK):
            text.stylize("red")
        if self.term:
            text.highlight_words([self.term], "bold black on yellow", case_sensitive=False)


class OutputLog(Log):
    """Lines of a task's output. Partial lines wait until their newline (or the end of the task)."""

    DEFAULT_CSS = """
    OutputLog { border: round $primary 50%; overflow-x: auto; }
    OutputLog:focus { border: round $primary; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(highlight=True, auto_scroll=True, id=id)
        self.finder = FindHighlighter()
        self.highlighter = self.finder
        self.pending = {"stdout": "", "stderr": ""}
        self.matches: list[int] = []
        self.match_index = -1

    @property
    def tail(self) -> bool:
        """Whether the view follows new lines."""
        return self.auto_scroll

    @tail.setter
    def tail(self, value: bool) -> None:
        self.auto_scroll = value
        if value:
            self.scroll_end(animate=False)

    def on_resize(self) -> None:
        if self.auto_scroll:
            self.scroll_end(animate=False)

    def append(self, stream: str, text: str) -> None:
        """Add output of `stream`; complete lines are shown at once."""
        if not text:
            return
        data = self.pending[stream] + text
        *complete, self.pending[stream] = data.split("\n")
        self._add_lines(stream, complete)

    def flush(self) -> None:
        """Show the partial lines too (the task has ended: no more is coming)."""
        for stream in ("stdout", "stderr"):
            if self.pending[stream]:
                self._add_lines(stream, [self.pending[stream]])
                self.pending[stream] = ""

    def restart(self, banner: str) -> None:
        """Forget what is shown (a new attempt began) and start with a banner line."""
        self.clear()
        self.pending = {"stdout": "", "stderr": ""}
        self.matches, self.match_index = [], -1
        self.write_line(banner)

    def _add_lines(self, stream: str, lines: list[str]) -> None:
        if not lines:
            return
        prefix = STDERR_MARK if stream == "stderr" else ""
        first = self.line_count
        # A task's output is shown as it printed it, but for its control characters (visible escapes): raw, an
        # ESC or CR would redraw the operator's terminal under the dashboard.
        self.write_lines([prefix + visible_output(line.removesuffix("\r")) for line in lines])
        if self.finder.term:
            needle = self.finder.term.lower()
            self.matches += [first + i for i, line in enumerate(lines) if needle in line.lower()]

    def find(self, term: str) -> tuple[int, int]:
        """Mark `term` and go to its first match at or below the top of the view: (match number, matches)."""
        self.finder.term = term
        self.notify_style_update()   # drops the cached lines, so the marks are drawn
        self.refresh()
        needle = term.lower()
        self.matches = [i for i, line in enumerate(self.lines) if needle and needle in line.lower()]
        self.match_index = -1
        if not self.matches:
            return 0, 0
        top = round(self.scroll_y)
        self.match_index = next((n for n, line in enumerate(self.matches) if line >= top), 0)
        self._show_match()
        return self.match_index + 1, len(self.matches)

    def find_next(self, step: int = 1) -> tuple[int, int]:
        """Go to the next (step 1) or previous (step -1) match: (match number, matches)."""
        if not self.matches:
            return 0, 0
        self.match_index = (self.match_index + step) % len(self.matches)
        self._show_match()
        return self.match_index + 1, len(self.matches)

    def _show_match(self) -> None:
        self.auto_scroll = False   # stay at the match while output keeps coming
        line = self.matches[self.match_index]
        self.scroll_to(y=max(0, line - self.scrollable_content_region.height // 2), animate=False)
