"""Provides a DataTable whose rows have stable keys and are updated cell by cell (no flicker, cursor kept)."""
from __future__ import annotations

from typing import Any, ClassVar

from textual.binding import Binding
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist


class KeyedTable(DataTable):
    """Rows keyed by an id; `sync()` adds, removes, updates only changed cells and reorders.

    The first column's cell of every row must be its key (as text), so rows can be put in order by it.
    """

    BINDINGS = [
        Binding("home", "scroll_top", "First row", show=False),
        Binding("end", "scroll_bottom", "Last row", show=False),
    ]

    COLUMNS: ClassVar[list[tuple[str, str]]] = []
    """(column key, label) pairs, in display order."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.cells: dict[str, dict[str, Any]] = {}
        """What each row shows now, by row key then column key."""
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
        """Show exactly `rows`, in this order.

        A cursor on the first row stays there (new rows arrive at the top); elsewhere it stays on its row's key.
        """
        selected = self.selected_key if self.cursor_row > 0 else None
        wanted = [key for key, _ in rows]
        keep = set(wanted)
        for key in [k for k in self.cells if k not in keep]:
            self.remove_row(key)
            del self.cells[key]
        for key, cells in rows:
            old = self.cells.get(key)
            if old is None:
                self.add_row(*(cells[c] for c, _ in self.COLUMNS), key=key)
            else:
                for column, value in cells.items():
                    if old.get(column) != value:
                        self.update_cell(key, column, value, update_width=True)
            self.cells[key] = cells
        if [row.key.value for row in self.ordered_rows] != wanted:
            rank = {key: i for i, key in enumerate(wanted)}
            self.sort(self.COLUMNS[0][0], key=lambda cell: rank.get(str(cell), len(rank)))
        if selected in self.cells:
            index = self.get_row_index(selected)
            if index != self.cursor_row:
                self.move_cursor(row=index, scroll=False)
