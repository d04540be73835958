"""The one error type users see: what is wrong, where, and what to do about it."""
from __future__ import annotations

from pathlib import Path


class ImgclfError(Exception):
    """Bad user input or a state the user can fix. The CLI prints it on one line, no traceback."""


def where(file: str | Path, line: int | None = None) -> str:
    """`file` or `file line N`, for error messages that point at a CSV row."""
    return f"{file} line {line}" if line is not None else str(file)
