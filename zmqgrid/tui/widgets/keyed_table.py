"""Provides a DataTable whose rows have stable keys and are updated cell by cell (no flicker, cursor kept)."""
from __future__ import annotations

from typing import Any, ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist


def width_of(value: Any) -> int:
    """The cells a value takes in a table cell."""
    return value.cell_len if isinstance(value, Text) else cell_len(str(value))


class KeyedTable(DataTable):
    """Rows keyed by an id; `sync()` adds, removes, updates only changed cells and reorders.

    The first column's cell of every row must be its key (as text), so rows can be put in order by it. With
    `PRIORITY`, only the columns that fit the table's width are shown, whole: a column cut at the edge is unreadable.
    """

    BINDINGS = [
        Binding("home", "scroll_top", "First row", show=False),
        Binding("end", "scroll_bottom", "Last row", show=False),
    ]

    COLUMNS: ClassVar[list[tuple[str, str]]] = []
    """(column key, label) pairs, in display order."""
    PRIORITY: ClassVar[tuple[str, ...] | None] = None
    """Column keys in the order they get room when not all fit (the first column always shows); None: every
    column is shown and the table scrolls sideways."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.cells: dict[str, dict[str, Any]] = {}
        """What each row shows now, by row key then column key (every column, shown or not)."""
        self.shown_columns: list[str] = [key for key, _ in self.COLUMNS]
        for key, label in self.COLUMNS:
            self.add_column(label, key=key)

    @property
    def selected_key(self) -> str | None:
        """The key of the row under the cursor, if any."""
        if not self.row_count:
            return None
        try:
            row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        except CellDoesNotExist:
            return None
        return row_key.value

    def sync(self, rows: list[tuple[str, dict[str, Any]]]) -> None:
        """Show exactly `rows`, in this order. The cursor stays on its row's key wherever that row moves (so enter
        opens what was highlighted); when its row is gone, it stays at the same place."""
        selected = self.selected_key
        wanted = [key for key, _ in rows]
        keep = set(wanted)
        for key in [k for k in self.cells if k not in keep]:
            self.remove_row(key)
            del self.cells[key]
        shown = set(self.shown_columns)
        for key, cells in rows:
            old = self.cells.get(key)
            if old is None:
                self.add_row(*(cells[c] for c in self.shown_columns), key=key)
            else:
                for column, value in cells.items():
                    if column in shown and old.get(column) != value:
                        self.update_cell(key, column, value, update_width=True)
            self.cells[key] = cells
        if [row.key.value for row in self.ordered_rows] != wanted:
            rank = {key: i for i, key in enumerate(wanted)}
            self.sort(self.COLUMNS[0][0], key=lambda cell: rank.get(str(cell), len(rank)))
        if not self.fit_columns(selected):
            self.keep_cursor_on(selected)

    def keep_cursor_on(self, key: str | None) -> None:
        if key in self.cells:
            index = self.get_row_index(key)
            if index != self.cursor_row:
                self.move_cursor(row=index, scroll=False)

    # ------------------------------------------------------------ columns by width and priority

    def on_resize(self) -> None:
        self.fit_columns(self.selected_key)

    def columns_that_fit(self, room: int) -> list[str]:
        """The columns to show in `room` cells: by PRIORITY, each one that still fits whole; in display order."""
        if self.PRIORITY is None:
            return [key for key, _ in self.COLUMNS]
        labels = dict(self.COLUMNS)
        padding = 2 * self.cell_padding
        chosen, used = set(), 0
        for n, key in enumerate(self.PRIORITY):
            width = max([width_of(labels[key]), *(width_of(cells[key]) for cells in self.cells.values())]) + padding
            if n == 0 or used + width <= room:
                chosen.add(key)
                used += width
        return [key for key, _ in self.COLUMNS if key in chosen]

    def fit_columns(self, selected: str | None) -> bool:
        """Show the columns that fit now; rebuilds the table (cursor kept on `selected`) only when they changed."""
        room = self.scrollable_content_region.width
        if self.PRIORITY is None or room <= 0:
            return False
        columns = self.columns_that_fit(room)
        if columns == self.shown_columns:
            return False
        self.shown_columns = columns
        labels = dict(self.COLUMNS)
        ordered = [row.key.value for row in self.ordered_rows]
        self.clear(columns=True)
        for key in columns:
            self.add_column(labels[key], key=key)
        for key in ordered:
            self.add_row(*(self.cells[key][c] for c in columns), key=key)
        if selected in self.cells:
            self.move_cursor(row=self.get_row_index(selected))
        return True
