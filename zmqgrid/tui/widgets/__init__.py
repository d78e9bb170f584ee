"""Provides the dashboard's widgets: cluster header, devices and tasks tables, task output log."""
from __future__ import annotations

from .devices_table import DevicesTable
from .header import ClusterHeader
from .output_log import OutputLog
from .tasks_table import TasksTable

__all__ = ["ClusterHeader", "DevicesTable", "OutputLog", "TasksTable"]
