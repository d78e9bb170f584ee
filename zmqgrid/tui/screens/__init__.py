"""Provides the dashboard's screens: main, task detail, device and schedule detail, confirmation, submit form,
help."""
from __future__ import annotations

from .detail import DetailScreen
from .dialogs import ConfirmScreen, SubmitScreen
from .help import HelpScreen
from .main import MainScreen
from .task import TaskScreen

__all__ = ["ConfirmScreen", "DetailScreen", "HelpScreen", "MainScreen", "SubmitScreen", "TaskScreen"]
