"""Provides the help screen: every key of the dashboard, by where it works."""
from __future__ import annotations

import dataclasses

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

NAVIGATION = [("↑ ↓ pgup pgdn", "move in a table, the output or this list"),
              ("home end", "go to the first / last row"),
              ("tab shift+tab", "go to the next / previous table"),
              ("click", "on a devices column header: sort by it (again: reversed)")]


class HelpScreen(ModalScreen[None]):
    """Lists every binding it is given, section by section; any of its keys closes it."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close", key_display="esc")]

    def __init__(self, sections: list[tuple[str, list[Binding]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(self.render_help(), id="help-text")

    def key_names(self, binding: Binding) -> str:
        if binding.key_display:
            return binding.key_display
        return " ".join(self.app.get_key_display(dataclasses.replace(binding, key=key.strip()))
                        for key in binding.key.split(","))

    def render_help(self) -> Group:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for title, bindings in self.sections:
            table.add_row("", "")
            table.add_row(Text(title, style="bold underline"), "")
            seen: set[str] = set()
            for binding in bindings:
                if binding.action in seen:
                    continue
                seen.add(binding.action)
                words = binding.description or binding.action
                if binding.tooltip:
                    words += f" — {binding.tooltip}"
                table.add_row(self.key_names(binding), words)
        table.add_row("", "")
        table.add_row(Text("Moving around", style="bold underline"), "")
        for keys, words in NAVIGATION:
            table.add_row(keys, words)
        return Group(Text("zmqgrid dashboard — keys (esc closes)", style="bold"), table)
