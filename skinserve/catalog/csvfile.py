"""Streaming CSV records with their line numbers: per-line decoding, title lines skipped, broken records reported.

Python's csv module parses each record; this module feeds it one physical line at a time and keeps the lines of
the record being parsed, because the standard readers (csv.DictReader, pandas) fail or silently merge rows where a
published file is broken: an unclosed quote swallows every following line into one field, an undecodable byte stops
the whole file, and neither says which line was at fault. Here a broken record is reported with its first line and
a reason, and reading resumes on the next physical line, so the rows after it are still read. Memory holds at most
one record's lines, whatever the file's size.
"""

from __future__ import annotations

import csv
import os
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Generic, TypeVar

from skinserve.errors import SkinserveError

T = TypeVar("T")

SAMPLE_BYTES = 1 << 16
# A multi-byte UTF-8 sequence: a file holding none of these but other high bytes is a legacy single-byte file.
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")
LEGACY_ENCODING = "cp1252"  # Windows-1252: the £ of skincare_products_clean.csv is the single byte 0xA3 there


class CsvFileError(SkinserveError):
    """The file as a whole cannot be read: empty, no recognisable header, not a file."""


@dataclass(frozen=True)
class CsvRow:
    line: int  # first physical line of the record, 1-based
    end_line: int
    cells: list[str]


@dataclass(frozen=True)
class RowProblem:
    line: int
    reason: str


@dataclass(frozen=True)
class Header(Generic[T]):
    line: int
    cells: list[str]
    match: T
    title_lines: list[str]


class _RecordTooLong(Exception):
    pass


@dataclass
class _Line:
    number: int
    raw: bytes
    text: str
    error: str | None


@dataclass
class _LineSource:
    """The iterator csv.reader pulls from; it remembers the lines of the current record so they can be replayed."""

    handle: BinaryIO
    encoding: str
    max_record_lines: int
    number: int = 0
    bytes_read: int = 0
    pending: deque[_Line] = field(default_factory=deque)
    taken: list[_Line] = field(default_factory=list)

    def __iter__(self) -> _LineSource:
        return self

    def __next__(self) -> str:
        if len(self.taken) >= self.max_record_lines:
            raise _RecordTooLong
        line = self.pending.popleft() if self.pending else self._read()
        self.taken.append(line)
        return line.text

    def _read(self) -> _Line:
        raw = self.handle.readline()
        if not raw:
            raise StopIteration
        self.number += 1
        self.bytes_read += len(raw)
        try:
            text, error = raw.decode(self.encoding), None
        except UnicodeDecodeError as err:
            # Decoded with replacement only so the quote state stays right; the record is rejected.
            text = raw.decode(self.encoding, errors="replace")
            bad = raw[err.start : err.start + 4]
            error = f"bytes {bad!r} at column {err.start + 1} are not valid {_encoding_name(self.encoding)}"
        if self.number == 1:
            text = text.removeprefix("\ufeff")
        return _Line(self.number, raw, text, error)

    def start_record(self) -> None:
        self.taken = []

    def replay_after_first(self) -> None:
        """Read the lines after the record's first line again: they may be rows a broken quote swallowed."""
        self.pending.extendleft(reversed(self.taken[1:]))
        self.taken = self.taken[:1]


class CsvSource:
    """One CSV file read as records; `header()` finds the header below any title lines, `rows()` streams the rest."""

    def __init__(self, path: Path, encoding: str = "auto", max_record_lines: int = 500, header_search: int = 30):
        self.path = Path(path)
        if not self.path.is_file():
            raise CsvFileError(f"{self.path} is not a file")
        if os.path.getsize(self.path) == 0:
            raise CsvFileError(f"{self.path} is empty (0 bytes)")
        self.encoding, self.encoding_note = (
            detect_encoding(self.path) if encoding == "auto" else (_checked_encoding(encoding), None)
        )
        self.header_search = header_search
        self._handle = self.path.open("rb")
        self._lines = _LineSource(self._handle, self.encoding, max_record_lines)
        self._reader = csv.reader(self._lines, strict=True)
        self._width: int | None = None

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> CsvSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def bytes_read(self) -> int:
        return self._lines.bytes_read

    @property
    def size(self) -> int:
        return os.path.getsize(self.path)

    def header(self, match: Callable[[list[str]], T | None], expected: str) -> Header[T]:
        """The first record within `header_search` records that `match` accepts; the records above are titles."""
        titles: list[str] = []
        for item in self._records():
            if isinstance(item, RowProblem):
                titles.append(f"(unreadable line {item.line}: {item.reason})")
            else:
                cells = [c.strip() for c in item.cells]
                found = match(cells)
                if found is not None:
                    self._width = len(cells)
                    return Header(item.line, cells, found, titles)
                if any(cells):
                    titles.append(",".join(cells)[:200])
            if len(titles) >= self.header_search:
                break
        shown = f"; it begins: {titles[0]!r}" if titles else ""
        raise CsvFileError(
            f"{self.path.name}: no {expected} header in its first {self.header_search} lines{shown}"
            if titles
            else f"{self.path.name}: no header: the file holds only blank lines"
        )

    def rows(self) -> Iterator[CsvRow | RowProblem]:
        """Data records after the header, each a row with the header's width or a problem naming its line."""
        if self._width is None:
            raise RuntimeError("call header() before rows()")
        for item in self._records():
            if isinstance(item, RowProblem):
                yield item
                continue
            if len(item.cells) == self._width:
                yield item
                continue
            if item.end_line > item.line:
                # A multi-line record of the wrong width is most often an unclosed quote that met a later quote.
                self._lines.replay_after_first()
                yield RowProblem(
                    item.line,
                    f"{len(item.cells)} fields over lines {item.line}-{item.end_line}, the header has "
                    f"{self._width}: a quote is probably not closed on line {item.line}",
                )
            else:
                yield RowProblem(item.line, f"{len(item.cells)} fields, the header has {self._width}")

    def _records(self) -> Iterator[CsvRow | RowProblem]:
        lines = self._lines
        while True:
            lines.start_record()
            try:
                cells = next(self._reader)
            except StopIteration:
                return
            except _RecordTooLong:
                first = lines.taken[0].number
                lines.replay_after_first()
                yield RowProblem(
                    first, f"the record does not end within {lines.max_record_lines} lines: unclosed quote"
                )
                continue
            except csv.Error as err:
                if not lines.taken:
                    return
                first = lines.taken[0].number
                reason = str(err)
                if reason == "unexpected end of data":
                    reason = "a quote opened here is never closed before the end of the file"
                if len(lines.taken) > 1:
                    lines.replay_after_first()
                yield RowProblem(first, f"broken quoting: {reason}")
                continue
            taken = lines.taken
            if not cells and len(taken) == 1:
                continue  # a blank line
            errors = [line for line in taken if line.error]
            if errors:
                yield RowProblem(errors[0].number, errors[0].error or "")
                continue
            if any("\x00" in cell for cell in cells):  # csv accepts NUL; Postgres text cannot hold it
                yield RowProblem(taken[0].number, "a NUL byte (0x00) inside the row")
                continue
            yield CsvRow(taken[0].number, taken[-1].number, cells)


def detect_encoding(path: Path) -> tuple[str, str | None]:
    """UTF-8, unless the file's first 64 KiB hold high bytes and not one UTF-8 sequence: then Windows-1252.

    A file that is mostly UTF-8 with a few bad bytes stays UTF-8, so those rows are rejected one by one instead
    of the whole file being misread; a legacy export (every £ a lone 0xA3) is read as what it is, and said so.
    """
    with Path(path).open("rb") as handle:
        sample = handle.read(SAMPLE_BYTES)
    try:
        sample.decode("utf-8")
        return "utf-8", None
    except UnicodeDecodeError as err:
        if err.start >= len(sample) - 3 and err.reason == "unexpected end of data":
            return "utf-8", None  # the sample cut a multi-byte character in two
    if _UTF8_MULTIBYTE.search(sample) is None:
        return LEGACY_ENCODING, f"not UTF-8: read as Windows-1252 ({LEGACY_ENCODING}); pass --encoding to override"
    return "utf-8", None


def _checked_encoding(name: str) -> str:
    import codecs

    try:
        return codecs.lookup(name).name
    except LookupError as err:
        raise CsvFileError(f"unknown encoding {name!r}") from err


def _encoding_name(encoding: str) -> str:
    return {"utf-8": "UTF-8", "cp1252": "Windows-1252"}.get(encoding, encoding)
