"""How bad input is reported: fatal file errors, per-row errors, and the problems list."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the data. ``row`` is the sample id, or the row index when no id was
    readable, or None for a whole-file problem; ``field`` names the key path inside the row."""

    row: str | int | None
    field: str
    message: str

    def to_dict(self) -> dict[str, object]:
        return {"row": self.row, "field": self.field, "message": self.message}

    def __str__(self) -> str:
        where = "file" if self.row is None else f"row {self.row!r}"
        return f"{where}, field {self.field}: {self.message}"


class DataError(Exception):
    """The data cannot be read at all (missing file, invalid JSON, ...). The message names the file."""


class RowError(ValueError):
    """A row that cannot become a Sample; the loader records it as a Problem and goes on."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
