"""CSV records with their line numbers, a detected delimiter, and a field-size limit that costs one row.

The csv module reads the records (excel dialect, not strict). Around it: the text is split into lines the
way a file opened with newline="" splits them (CR, LF, CRLF; never U+2028 or NEL, which str.splitlines
would break a field at), so that a record's first and last line are known. A field over FIELD_LIMIT
makes the reader raise mid-record; the record is then scanned with the same quoting rules to find its
end and which field was too long, the reader resumes at the next record, and the caller gets that record
as `oversized` instead of losing the whole file to one runaway cell.
"""

from __future__ import annotations

import csv
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from config.errors import CrmImportError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

FIELD_LIMIT = 1 << 20  # characters: far beyond any CRM value, low enough to bound the reader's memory
DELIMITERS = ",;\t|"  # comma, the semicolon of Excel in DE/FR/ES locales, tab, pipe
_QUOTED = re.compile(r'"[^"]*(?:""[^"]*)*"?')  # a quoted field; "" is a quote; may run to the end
_LINE_END = re.compile(r"\r\n|\r|\n|\Z")
# What makes a spreadsheet run a cell as a formula: =, +, -, @ (and their full-width forms) after any
# leading whitespace, or a tab, CR or LF as the first character (OWASP's "CSV injection").
_FORMULA = tuple("=+-@\uff1d\uff0b\uff0d\uff20")
_OPENING = ("\t", "\r", "\n")


@dataclass(frozen=True, slots=True)
class Record:
    """One record: its fields, from physical line `line` to `last_line` (a quoted field may hold line
    breaks). `oversized` is the index of a field over FIELD_LIMIT; then `fields` is empty."""

    line: int
    last_line: int
    fields: list[str]
    oversized: int | None = None


class _Lines:
    """The physical lines of `text` for csv.reader, counting them and where the next one starts."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.offset = 0
        self.count = 0
        self._newline = -1  # the next LF: looked up once per LF, not per line, or CR-only files are O(n²)

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        text, start = self.text, self.offset
        if start >= len(text):
            raise StopIteration
        if self._newline < start:
            found = text.find("\n", start)
            self._newline = len(text) if found < 0 else found
        end = self._newline + 1
        carriage = text.find("\r", start, end)
        if carriage >= 0 and not text.startswith("\n", carriage + 1):
            end = carriage + 1  # a lone CR ends the line (CRLF ends at its LF)
        self.offset = min(end, len(text))
        self.count += 1
        return text[start : self.offset]

    def skip_to(self, offset: int) -> None:
        """Step over the lines up to `offset`, the end of a line, counting them without splitting them."""
        text, start = self.text, self.offset
        if offset <= start:
            return
        crlf = text.count("\r\n", start, offset)
        breaks = text.count("\n", start, offset) + text.count("\r", start, offset) - crlf
        self.count += breaks + (0 if text[offset - 1] in "\r\n" else 1)  # the last line may lack a break
        self.offset = offset


def _runs(cell: str) -> bool:
    """Whether a spreadsheet runs `cell`, or would once `restore` took apostrophes off its front."""
    cell = cell.lstrip("'")
    return cell.startswith(_OPENING) or cell.lstrip().startswith(_FORMULA)


def neutralise(cell: str) -> str:
    """`cell` as a spreadsheet shows it as text: an apostrophe before one it would run as a formula (and
    before `'=...`, so that `restore` can always undo it)."""
    return f"'{cell}" if _runs(cell) else cell


def restore(cell: str) -> str:
    """`neutralise` undone: the leading apostrophe of a neutralised cell is dropped; any other is kept."""
    return cell[1:] if cell.startswith("'") and _runs(cell[1:]) else cell


@contextmanager
def _field_limit() -> Iterator[None]:
    """csv's limit is process-wide: raise it to FIELD_LIMIT only while this module reads."""
    previous = csv.field_size_limit(FIELD_LIMIT)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def detect_delimiter(text: str, score: Callable[[list[str]], int]) -> str:
    """The delimiter under which the first non-blank line reads as the best header (`score` counts the
    expected columns in it); a comma when none fits better."""
    header = next((line for line in _Lines(text) if line.strip()), "")
    scores: dict[str, int] = {}
    for delimiter in DELIMITERS:
        try:
            with _field_limit():
                scores[delimiter] = score(next(csv.reader([header], delimiter=delimiter), []))
        except csv.Error:  # a runaway header cell: the header check reports it
            scores[delimiter] = 0
    return max(DELIMITERS, key=lambda d: scores[d])  # max keeps the first of equals: the comma


def read_records(text: str, delimiter: str, source: str) -> Iterator[Record]:
    """Every non-blank record of `text`; a csv error other than an oversized field names `source`:line."""
    lines = _Lines(text)
    reader = csv.reader(lines, delimiter=delimiter)
    while True:
        start, first = lines.offset, lines.count + 1
        try:
            with _field_limit():
                fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            end, sizes = _scan_record(text, start, delimiter)
            oversized = next((i for i, size in enumerate(sizes) if size > FIELD_LIMIT), None)
            if oversized is None:
                raise CrmImportError(
                    f"{source}:{lines.count}: cannot read the CSV: {exc}",
                    fix="open the file in a spreadsheet and export it again as CSV (UTF-8)",
                ) from exc
            lines.skip_to(end)
            yield Record(first, lines.count, [], oversized)
            continue
        if fields:  # csv.reader gives [] for a blank line
            yield Record(first, lines.count, fields)


def _scan_record(text: str, start: int, delimiter: str) -> tuple[int, list[int]]:
    """Where the record at `start` ends, and the length of each of its fields (quotes included),
    following csv's excel-dialect rules; only used to step over a record the reader refused."""
    unquoted = re.compile(f"[^{re.escape(delimiter)}\r\n]*")  # also the rest of a field after its quotes
    sizes = []
    pos = start
    while True:
        field_start = pos
        if text.startswith('"', pos):
            pos = _match(_QUOTED, text, pos)
        pos = _match(unquoted, text, pos)
        sizes.append(pos - field_start)
        if not text.startswith(delimiter, pos):
            return _match(_LINE_END, text, pos), sizes
        pos += 1


def _match(pattern: re.Pattern[str], text: str, pos: int) -> int:
    match = pattern.match(text, pos)
    assert match is not None  # noqa: S101 - every pattern here can match the empty string
    return match.end()
