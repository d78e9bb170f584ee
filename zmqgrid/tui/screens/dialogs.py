"""Provides the confirmation dialog, the submit form, and `ask_then_do` for actions on the cluster."""
from __future__ import annotations

from typing import Any, Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Input, Label, Static

from ...client import build_spec
from ...errors import ZmqgridError
from ..messages import ActionRequested


class ConfirmScreen(ModalScreen[bool]):
    """Asks a yes/no question; dismisses with True only on yes."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, detail: str = "") -> None:
        super().__init__()
        self.question = question
        self.detail = detail

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(self.question), classes="dialog-title")   # Text: an id in it is not markup
            if self.detail:
                yield Static(self.detail, classes="dialog-detail")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Yes (y)", variant="error", id="yes", compact=True)
                yield Button("No (n)", variant="primary", id="no", compact=True)

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class SubmitScreen(ModalScreen[dict | None]):
    """A small form for a shell task; dismisses with its spec (from `build_spec`), or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    FIELDS = [("command", "shell command", "e.g. python crawl.py --site a"),
              ("tags", "tags", "comma-separated; only workers with all of them"),
              ("device", "device", "a device id, or empty for any"),
              ("timeout", "timeout s", "empty: the master's default"),
              ("retries", "retries", "empty: the master's default"),
              ("priority", "priority", "higher runs first; empty: 0")]

    def compose(self) -> ComposeResult:
        blink = not self.app.is_headless
        with Vertical(classes="dialog", id="submit-form"):
            yield Label("Submit a shell task", classes="dialog-title")
            for key, label, hint in self.FIELDS:
                with Horizontal(classes="form-row"):
                    yield Label(label, classes="form-label")
                    field = Input(placeholder=hint, id=f"field-{key}", compact=True)
                    field.cursor_blink = blink   # a blinking cursor would make test screenshots differ
                    yield field
            yield Static("", id="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Submit (enter)", variant="success", id="submit", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#field-command", Input).focus()

    def value(self, key: str) -> str:
        return self.query_one(f"#field-{key}", Input).value.strip()

    def spec(self) -> dict:
        """The task spec the form describes; raises ZmqgridError naming the field that is wrong."""
        if not self.value("command"):
            raise ZmqgridError("the shell command is empty", "type the command to run")
        options: dict = {"tag": [t.strip() for t in self.value("tags").split(",") if t.strip()] or None,
                         "device": self.value("device") or None}
        for key, kind in (("timeout", float), ("retries", int), ("priority", int)):
            text = self.value(key)
            if text:
                try:
                    options[key] = kind(text)
                except ValueError:
                    raise ZmqgridError(f"{key} must be {'a number' if kind is float else 'a whole number'}, "
                                       f"got {text!r}") from None
        return build_spec(shell=self.value("command"), **options)

    def submit(self) -> None:
        try:
            spec = self.spec()
        except ZmqgridError as e:
            self.query_one("#form-error", Static).update(Text(str(e), style="red"))   # what was typed is not markup
            return
        self.dismiss(spec)

    def on_input_submitted(self, _: Input.Submitted) -> None:
        self.submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "submit":
            self.submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


def ask_then_do(screen: Screen, question: str, detail: str, what: str, call: Callable[..., Any], *args: Any,
                then: Callable[[], None] | None = None) -> None:
    """Ask for confirmation, then have the app run `call(*args)` on the master (cancel, requeue, drain, pause, ...);
    `what` names it in the notification of the answer."""

    def confirmed(yes: bool | None) -> None:
        if not yes:
            return
        screen.post_message(ActionRequested(what, call, args))   # bubbles to the app, which runs it
        if then is not None:
            then()

    screen.app.push_screen(ConfirmScreen(question, detail), confirmed)
