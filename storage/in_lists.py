"""IN (...) lists in pieces, so that a statement stays under every database's limit of bound parameters
(SQLite 32,766, PostgreSQL 65,535) however many values a batch brings."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

T = TypeVar("T")


def chunks(values: Iterable[T], size: int = 500) -> Iterator[list[T]]:
    """`values` (in their order) as lists of at most `size`."""
    items = list(values)
    for start in range(0, len(items), size):
        yield items[start : start + size]
