"""Provides the projects table: the projects the master holds, each with its latest version."""
from __future__ import annotations

from typing import Any

from textual.binding import Binding

from ...text import byte_size
from ..format import cell, day_clock
from .keyed_table import KeyedTable


class ProjectsTable(KeyedTable):
    """Projects as `projects list` lists them, by name."""

    COLUMNS = [("name", "PROJECT"), ("version", "LATEST"), ("files", "FILES"), ("size", "SIZE"),
               ("versions", "VERSIONS"), ("pushed", "PUSHED"), ("by", "BY")]
    PRIORITY = ("name", "version", "pushed", "size", "files", "versions", "by")

    BINDINGS = [
        Binding("enter,i", "screen.project_detail", "Versions", key_display="⏎",
                tooltip="The project's versions, newest first, and which workers hold each"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.projects: list[dict] = []

    def show(self, projects: list[dict]) -> None:
        self.projects = [p for p in projects if isinstance(p, dict) and isinstance(p.get("name"), str)]
        self.sync([(p["name"], self.cells_of(p)) for p in self.projects])

    def cells_of(self, project: dict) -> dict[str, Any]:
        return {
            "name": cell(project["name"], 64),
            "version": cell(version[:12] if isinstance(version := project.get("version"), str) else None, 12),
            "files": cell(project.get("files"), 12),
            "size": byte_size(project.get("size")),
            "versions": cell(project.get("versions"), 12),
            "pushed": day_clock(project.get("pushed_at")),
            "by": cell(project.get("pushed_by"), 16),
        }

    def selected(self) -> dict | None:
        """The project under the cursor."""
        key = self.selected_key
        return next((p for p in self.projects if p["name"] == key), None)

    def describe(self) -> str:
        if not self.projects:
            return "Projects: none (push one with: python main.py projects push ./folder)"
        return f"Projects {len(self.projects)}"
