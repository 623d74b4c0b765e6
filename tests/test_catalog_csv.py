"""Streaming CSV reading: title lines, broken quoting, wrong widths, bad bytes, each reported by line, the rest read."""

from __future__ import annotations

from pathlib import Path

import pytest

from skinserve.catalog.csvfile import CsvFileError, CsvRow, CsvSource, RowProblem, detect_encoding

HEADER = ["product_id", "product_name", "price_usd"]


def _write(tmp_path: Path, content: bytes | str, name: str = "f.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _read(path: Path) -> list[CsvRow | RowProblem]:
    with CsvSource(path) as source:
        source.header(lambda cells: True if cells[:1] == ["product_id"] else None, "test")
        return list(source.rows())


def _rows(items):
    return [(i.line, i.cells[0]) for i in items if isinstance(i, CsvRow)]


def _problems(items):
    return [(i.line, i.reason) for i in items if isinstance(i, RowProblem)]


def test_title_lines_above_the_header_are_skipped_and_reported(tmp_path):
    path = _write(
        tmp_path, '"Date of creation: 25/10/2022"\n\n"Annex III"\nproduct_id,product_name,price_usd\nP1,a,1\n'
    )
    with CsvSource(path) as source:
        header = source.header(lambda cells: True if cells[:1] == ["product_id"] else None, "test")
        rows = list(source.rows())
    assert header.line == 4
    assert header.title_lines == ["Date of creation: 25/10/2022", "Annex III"]
    assert _rows(rows) == [(5, "P1")]


def test_an_unclosed_quote_is_reported_and_the_rows_after_it_are_still_read(tmp_path):
    path = _write(tmp_path, 'product_id,product_name,price_usd\nP1,"broken name,1\nP2,b,2\nP3,c,3\n')
    items = _read(path)
    assert _rows(items) == [(3, "P2"), (4, "P3")]
    [(line, reason)] = _problems(items)
    assert line == 2 and "quote" in reason


def test_an_unclosed_quote_that_meets_a_later_quote_does_not_swallow_rows(tmp_path):
    path = _write(tmp_path, 'product_id,product_name,price_usd\nP1,"broken,1\nP2,b,2\nP3,"ok, quoted",3\nP4,d,4\n')
    items = _read(path)
    assert ("P2" in [c for _, c in _rows(items)]) and ("P4" in [c for _, c in _rows(items)])
    assert _problems(items)[0][0] == 2


def test_quoted_fields_may_span_lines_and_hold_commas_and_doubled_quotes(tmp_path):
    path = _write(tmp_path, 'product_id,product_name,price_usd\nP1,"two\nlines, with ""quotes""",1\nP2,b,2\n')
    items = _read(path)
    assert not _problems(items)
    first = items[0]
    assert isinstance(first, CsvRow) and (first.line, first.end_line) == (2, 3)
    assert first.cells[1] == 'two\nlines, with "quotes"'
    assert _rows(items)[1] == (4, "P2")


def test_a_row_of_the_wrong_width_is_rejected_with_the_counts(tmp_path):
    items = _read(_write(tmp_path, "product_id,product_name,price_usd\nP1,a\nP2,b,2,extra\nP3,c,3\n"))
    assert _problems(items) == [(2, "2 fields, the header has 3"), (3, "4 fields, the header has 3")]
    assert _rows(items) == [(4, "P3")]


def test_bytes_that_are_not_utf8_reject_only_their_row(tmp_path):
    content = "product_id,product_name,price_usd\nP1,Crème,1\n".encode() + b"P2,caf\xe9,2\n" + b"P3,c,3\n"
    items = _read(_write(tmp_path, content))
    assert _rows(items) == [(2, "P1"), (4, "P3")]
    [(line, reason)] = _problems(items)
    assert line == 3 and "not valid UTF-8" in reason


def test_a_legacy_windows_1252_file_is_read_as_such(tmp_path):
    path = _write(tmp_path, "product_id,product_name,price_usd\nP1,a,£5.20\n".encode("cp1252"))
    assert detect_encoding(path)[0] == "cp1252"
    items = _read(path)
    assert items[0].cells[2] == "£5.20"


def test_a_nul_byte_rejects_its_row(tmp_path):
    items = _read(_write(tmp_path, b"product_id,product_name,price_usd\nP1,a\x00b,1\nP2,b,2\n"))
    assert _problems(items) == [(2, "a NUL byte (0x00) inside the row")]
    assert _rows(items) == [(3, "P2")]


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    path = _write(tmp_path, "\ufeffproduct_id,product_name,price_usd\nP1,a,1\n")
    assert _rows(_read(path)) == [(2, "P1")]


def test_crlf_line_endings_and_blank_lines_are_fine(tmp_path):
    items = _read(_write(tmp_path, "product_id,product_name,price_usd\r\nP1,a,1\r\n\r\nP2,b,2\r\n"))
    assert _rows(items) == [(2, "P1"), (4, "P2")] and not _problems(items)


def test_an_empty_file_is_refused(tmp_path):
    with pytest.raises(CsvFileError, match="empty"):
        CsvSource(_write(tmp_path, b""))


def test_a_file_without_a_known_header_is_refused_naming_its_first_line(tmp_path):
    path = _write(tmp_path, "name,price\nx,1\n")
    with CsvSource(path) as source, pytest.raises(CsvFileError, match="name,price"):
        source.header(lambda cells: None, "test")


def test_a_file_of_blank_lines_has_no_header(tmp_path):
    with CsvSource(_write(tmp_path, "\n\n\n")) as source, pytest.raises(CsvFileError, match="blank"):
        source.header(lambda cells: None, "test")
