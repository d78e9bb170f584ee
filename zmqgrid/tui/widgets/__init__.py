"""Provides the dashboard's widgets: cluster header, devices, schedules, projects and tasks tables, task output
log."""
from __future__ import annotations

from .devices_table import DevicesTable
from .header import ClusterHeader
from .output_log import OutputLog
from .projects_table import ProjectsTable
from .schedules_table import SchedulesTable
from .tasks_table import TasksTable

__all__ = ["ClusterHeader", "DevicesTable", "OutputLog", "ProjectsTable", "SchedulesTable", "TasksTable"]
