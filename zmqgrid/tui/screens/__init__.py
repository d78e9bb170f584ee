"""Provides the dashboard's screens: main, task detail, confirmation, submit form, help."""
from __future__ import annotations

from .dialogs import ConfirmScreen, SubmitScreen
from .help import HelpScreen
from .main import MainScreen
from .task import TaskScreen

__all__ = ["ConfirmScreen", "HelpScreen", "MainScreen", "SubmitScreen", "TaskScreen"]
