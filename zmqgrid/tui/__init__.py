"""The Textual dashboard: the live cluster as a remote user sees it through `zmqgrid.Client`."""
from __future__ import annotations

from .app import DashboardApp, make_app
from .source import ClientSource, ClusterSnapshot, StaticSource, TaskOutput, TaskQuery

__all__ = ["ClientSource", "ClusterSnapshot", "DashboardApp", "StaticSource", "TaskOutput", "TaskQuery", "make_app"]
