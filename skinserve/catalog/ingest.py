"""Ingest one published catalog file: streamed, one transaction per batch, idempotent, every rejected row reported.

A second run over the same file adds and changes nothing: products are keyed on (source, product id) and rewritten
only when their content hash changes, reviews on a hash of their fields (INSERT ... ON CONFLICT DO NOTHING), COSING
entries on their normalised INCI name. A batch that the database refuses is retried row by row, so one bad row is
rejected with the database's reason and the rest of its batch is still written.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, IntegrityError
from tqdm import tqdm

from skinserve.catalog.csvfile import CsvFileError, CsvRow, CsvSource, RowProblem
from skinserve.catalog.formats import (
    ANNEX_RANK,
    ANNEXES,
    FORMATS,
    REQUIRED,
    ProductRecord,
    ReferenceRecord,
    ReviewRecord,
    RowError,
    annex_entries,
    annex_of_file,
    column_key,
    cosing_ingredient,
    detect_format,
    keyed_row,
    sephora_product,
    sephora_review,
    skincare_clean_product,
    strictest_annex,
    unknown_columns,
)
from skinserve.catalog.inci import parse_ingredients
from skinserve.catalog.knowledge import IngredientKnowledge, default_knowledge
from skinserve.catalog.masks import ensure_active_masks, rebuild_active_masks
from skinserve.catalog.matching import IngredientIndex, load_ingredient_index
from skinserve.db.catalog_models import Ingredient, Product, ProductIngredient, Review
from skinserve.errors import SkinserveError

products_t = Product.__table__
ingredients_t = Ingredient.__table__
product_ingredients_t = ProductIngredient.__table__
reviews_t = Review.__table__


class CatalogFileError(SkinserveError):
    """A file that cannot be ingested at all (empty, header only, unknown header, unknown annex)."""


@dataclass(frozen=True)
class CatalogIngestOptions:
    fmt: str | None = None  # one of FORMATS; None detects it from the header
    annex: str | None = None  # cosing-annex: II-VI when neither the title lines nor the file name say
    encoding: str = "auto"
    batch_size: int = 500
    keep_rejections: int = 1000  # in memory; all of them go to rejects_path
    rejects_path: Path | None = None
    progress: bool = False


@dataclass
class CatalogIngestSummary:
    file: str
    format: str
    encoding: str
    header_line: int
    rows: int = 0  # data records read (accepted + rejected)
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0  # rows the publisher marks as nothing (COSING's "Moved or deleted" annex entries)
    rejected_count: int = 0
    rejected: list[RowProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    rss_start_mb: float = 0.0
    rss_peak_mb: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rows_per_s"] = round(self.rows_per_s, 1)
        data["rejected"] = [{"line": p.line, "reason": p.reason} for p in self.rejected]
        return data

    def as_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)


def ingest_catalog_file(
    path: Path,
    engine: Engine,
    options: CatalogIngestOptions | None = None,
    knowledge: IngredientKnowledge | None = None,
) -> CatalogIngestSummary:
    """Read `path` in its published format and write it to the catalog tables; returns the counts and rejections."""
    options = options or CatalogIngestOptions()
    if options.fmt is not None and options.fmt not in FORMATS:
        raise CatalogFileError(f"unknown format {options.fmt!r} (expected one of: {', '.join(FORMATS)})")
    if options.annex is not None and options.annex not in ANNEXES:
        raise CatalogFileError(f"unknown annex {options.annex!r} (expected one of: {', '.join(ANNEXES)})")
    knowledge = knowledge or default_knowledge()
    started = time.perf_counter()
    rss_start = _rss_mb()
    try:
        source = CsvSource(Path(path), options.encoding)
    except CsvFileError as err:
        raise CatalogFileError(str(err)) from err
    with ExitStack() as stack:
        stack.enter_context(source)
        header = _find_header(source, options.fmt)
        fmt = header.match
        summary = CatalogIngestSummary(str(path), fmt, source.encoding, header.line, rss_start_mb=rss_start)
        if source.encoding_note:
            summary.notes.append(source.encoding_note)
        if header.title_lines:
            summary.notes.append(
                f"skipped {len(header.title_lines)} title line(s) above the header on line {header.line}"
            )
        if extra := unknown_columns(fmt, header.cells):
            summary.notes.append(f"columns not in the published {fmt} schema, ignored: {extra}")
        writer = _writer(fmt, engine, knowledge, options, Path(path), header.title_lines)
        keys = [column_key(cell) for cell in header.cells]
        rejects = stack.enter_context(_RejectLog(options.rejects_path))
        bar = stack.enter_context(
            tqdm(total=source.size, unit="B", unit_scale=True, desc=f"ingest {fmt}", disable=not options.progress)
        )
        for batch in _batches(source.rows(), options.batch_size):
            records = []
            for item in batch:
                summary.rows += 1
                if isinstance(item, RowProblem):
                    _reject(summary, rejects, item, options)
                    continue
                try:
                    records.append((item.line, writer.record(keyed_row(keys, item.cells), item)))
                except RowError as err:
                    _reject(summary, rejects, RowProblem(item.line, str(err)), options)
            for problem in writer.write(records, summary):
                _reject(summary, rejects, problem, options)
            bar.update(source.bytes_read - bar.n)
            summary.rss_peak_mb = max(summary.rss_peak_mb, _rss_mb())
        if summary.rows == 0:
            raise CatalogFileError(
                f"{Path(path).name}: header only: no data rows after the header on line {header.line}"
            )
        summary.notes += writer.finish()
        refresh_statistics(engine)
    summary.seconds = time.perf_counter() - started
    summary.rss_peak_mb = max(summary.rss_peak_mb, _rss_mb())
    return summary


def _find_header(source: CsvSource, fmt: str | None):
    if fmt is None:
        expected = "known catalog (" + ", ".join(FORMATS) + ")"
        try:
            return source.header(detect_format, expected)
        except CsvFileError as err:
            raise CatalogFileError(str(err)) from err
    wanted = set(REQUIRED[fmt])
    try:
        return source.header(lambda cells: fmt if wanted <= {column_key(c) for c in cells} else None, fmt)
    except CsvFileError as err:
        raise CatalogFileError(f"{err} (a {fmt} header holds the columns {sorted(wanted)})") from err


def _batches(items: Iterator[CsvRow | RowProblem], size: int) -> Iterator[list[CsvRow | RowProblem]]:
    batch: list[CsvRow | RowProblem] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _reject(summary: CatalogIngestSummary, log: _RejectLog, problem: RowProblem, options: CatalogIngestOptions) -> None:
    summary.rejected_count += 1
    if len(summary.rejected) < options.keep_rejections:
        summary.rejected.append(problem)
    log.write(problem)


class _RejectLog:
    """Every rejection as `line,reason` in a CSV file, when asked: a bad 1 GB file can reject millions of rows."""

    def __init__(self, path: Path | None):
        self.path = path
        self.handle = None
        self.writer = None

    def __enter__(self) -> _RejectLog:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.handle = self.path.open("w", newline="", encoding="utf-8")
            self.writer = csv.writer(self.handle)
            self.writer.writerow(["line", "reason"])
        return self

    def write(self, problem: RowProblem) -> None:
        if self.writer is not None:
            self.writer.writerow([problem.line, problem.reason])

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()


def _rss_mb() -> float:
    """The process's resident memory now (Linux /proc), else its peak so far (getrusage)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def refresh_statistics(engine: Engine) -> None:
    """Planner statistics (and, on Postgres, the visibility map) of the catalog's tables right after a bulk load.

    Without them Postgres estimated 200 groups where the recommendation query has 8,000 and chose a nested loop:
    5 s instead of 40 ms at 10k products until autovacuum came by; VACUUM also lets the (ingredient_name,
    product_id) index answer without reading the table. All four tables, whichever the file wrote: VACUUM of an
    unchanged table costs next to nothing, and the statement stays one literal.
    """
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM (ANALYZE) products, ingredients, product_ingredients, reviews"))
    else:
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))


def _writer(fmt, engine, knowledge, options, path, title_lines) -> _Writer:
    if fmt in ("skincare-clean", "sephora-products"):
        return _ProductWriter(fmt, engine, knowledge)
    if fmt == "sephora-reviews":
        return _ReviewWriter(engine)
    if fmt == "cosing":
        return _ReferenceWriter(engine, knowledge, annex=None)
    annex = options.annex or annex_of_file(path, title_lines)
    if annex is None:
        raise CatalogFileError(
            f"{path.name}: cannot tell which COSING annex this is (no 'Annex II..VI' title line, none in the file "
            "name); pass --annex"
        )
    return _ReferenceWriter(engine, knowledge, annex=annex)


class _Writer:
    """Turns a row into a record and writes batches of records; `write` returns the rows the database refused."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def record(self, row: dict[str, str], item: CsvRow) -> Any:
        raise NotImplementedError

    def write_batch(self, connection: Connection, records: list[tuple[int, Any]], summary: CatalogIngestSummary):
        raise NotImplementedError

    def write(self, records: list[tuple[int, Any]], summary: CatalogIngestSummary) -> list[RowProblem]:
        if not records:
            return []
        try:
            with self.engine.begin() as connection, _no_server_side_prepare(connection):
                counts = _Counts()
                self.write_batch(connection, records, counts)
            counts.add_to(summary)
            return []
        except (IntegrityError, DataError):
            pass
        problems = []
        for record in records:  # the batch was refused as a whole: find the row(s) at fault
            try:
                with self.engine.begin() as connection:
                    counts = _Counts()
                    self.write_batch(connection, [record], counts)
                counts.add_to(summary)
            except (IntegrityError, DataError) as err:
                reason = str(getattr(err, "orig", err)).strip().splitlines()[0][:300]
                problems.append(RowProblem(record[0], f"refused by the database: {reason}"))
        return problems

    def finish(self) -> list[str]:
        return []


@contextmanager
def _no_server_side_prepare(connection: Connection) -> Iterator[None]:
    """No server-side prepared statements for batch writes.

    Each batch binds a different mix of NULLs, so psycopg would prepare and keep one ~100 KB statement per batch (up
    to its prepared_max of 100: ~10 MB held for nothing, measured with tracemalloc), and a batch is not re-run.
    """
    driver = connection.connection.driver_connection
    if not hasattr(driver, "prepare_threshold"):
        yield
        return
    before = driver.prepare_threshold
    driver.prepare_threshold = None
    try:
        yield
    finally:  # the pooled connection goes back as it came: other queries do gain from prepared statements
        driver.prepare_threshold = before


@dataclass
class _Counts:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0

    def add_to(self, summary: CatalogIngestSummary) -> None:
        summary.added += self.added
        summary.updated += self.updated
        summary.unchanged += self.unchanged
        summary.skipped += self.skipped


class _ProductWriter(_Writer):
    def __init__(self, fmt: str, engine: Engine, knowledge: IngredientKnowledge):
        super().__init__(engine)
        self.parse = skincare_clean_product if fmt == "skincare-clean" else sephora_product
        self.source = "skincare-clean" if fmt == "skincare-clean" else "sephora"
        self.index = load_ingredient_index(engine, knowledge)
        self.knowledge = knowledge
        ensure_active_masks(engine, knowledge)  # the masks written below and those already stored must agree
        # product id -> its first line: a duplicate id is a rejected row, not a silent overwrite.
        self.seen: dict[str, int] = {}

    def record(self, row: dict[str, str], item: CsvRow) -> ProductRecord:
        record = self.parse(row)
        first = self.seen.get(record.external_id)
        if first is not None:
            raise RowError(f"duplicate product id {record.external_id[:80]!r} (first on line {first})")
        self.seen[record.external_id] = item.line
        return record

    def write_batch(self, connection: Connection, records: list[tuple[int, ProductRecord]], counts: _Counts) -> None:
        ids = [r.external_id for _, r in records]
        existing = {
            row.external_id: (row.id, row.content_sha256)
            for row in connection.execute(
                select(products_t.c.external_id, products_t.c.id, products_t.c.content_sha256).where(
                    products_t.c.source == self.source, products_t.c.external_id.in_(ids)
                )
            )
        }
        new, changed = [], []
        for _, record in records:
            digest = record.content_sha256()
            known = existing.get(record.external_id)
            if known is None:
                new.append((record, digest, self._ingredient_rows(record)))
            elif known[1] != digest:
                changed.append((known[0], record, digest, self._ingredient_rows(record)))
            else:
                counts.unchanged += 1
        written: list[tuple[int, list[dict[str, Any]]]] = []
        if new:
            result = connection.execute(
                insert(products_t).returning(products_t.c.id, sort_by_parameter_order=True),
                [_product_row(record, digest, self._mask(rows)) for record, digest, rows in new],
            )
            written += [(row.id, rows) for row, (_, _, rows) in zip(result.all(), new, strict=True)]
            counts.added += len(new)
        if changed:
            connection.execute(
                update(products_t).where(products_t.c.id == bindparam("b_id")).values(updated_at=func.now()),
                [
                    {"b_id": pid, **_product_row(record, digest, self._mask(rows))}
                    for pid, record, digest, rows in changed
                ],
            )
            changed_ids = [pid for pid, _, _, _ in changed]
            connection.execute(delete(product_ingredients_t).where(product_ingredients_t.c.product_id.in_(changed_ids)))
            written += [(pid, rows) for pid, _, _, rows in changed]
            counts.updated += len(changed)
        rows = [row | {"product_id": pid} for pid, entries in written for row in entries]
        if rows:
            connection.execute(insert(product_ingredients_t), rows)

    def _mask(self, rows: list[dict[str, Any]]) -> tuple[int, int]:
        """An active counts only if the list surely holds it: a may-contain colourant is no treatment."""
        sure = [row["ingredient_name"] for row in rows if not row["may_contain"]]
        return self.knowledge.mask(sure), self.knowledge.unsuitable_mask(row["ingredient_name"] for row in rows)

    def _ingredient_rows(self, record: ProductRecord) -> list[dict[str, Any]]:
        parsed = parse_ingredients(record.ingredient_lines)
        rows = []
        for variation, entry in parsed.ingredients():
            match = self.index.resolve(entry, fuzzy=False)  # fuzzy matching is for analyses, not bulk ingest
            rows.append(
                {
                    "variation": variation,
                    "position": entry.position,
                    "ingredient_name": match.canonical[:300],
                    "label_text": entry.label_text[:500],
                    "ingredient_id": match.ingredient.id if match.ingredient else None,
                    "percent": entry.percent,
                    "may_contain": entry.may_contain,
                }
            )
        return rows

    def finish(self) -> list[str]:
        """Reviews ingested before their products get their product now."""
        with self.engine.begin() as connection:
            linked = connection.execute(
                update(reviews_t)
                .where(reviews_t.c.product_id.is_(None), reviews_t.c.source == self.source)
                .values(
                    product_id=select(products_t.c.id)
                    .where(
                        products_t.c.source == reviews_t.c.source,
                        products_t.c.external_id == reviews_t.c.external_product_id,
                    )
                    .scalar_subquery()
                )
            ).rowcount
        return [f"linked {linked} earlier review(s) to their product"] if linked and linked > 0 else []


def _product_row(record: ProductRecord, digest: str, masks: tuple[int, int]) -> dict[str, Any]:
    return {
        "active_mask": masks[0],
        "unsuitable_mask": masks[1],
        "source": record.source,
        "external_id": record.external_id,
        "name": record.name,
        "brand": record.brand,
        "product_type": record.product_type,
        "categories": record.categories,
        "size": record.size,
        "price": record.price,
        "currency": record.currency,
        "url": record.url,
        "rating": record.rating,
        "review_count": record.review_count,
        "ingredients_raw": record.ingredients_raw,
        "highlights": record.highlights,
        "skin_types": record.skin_types,
        "attributes": record.attributes or None,
        "content_sha256": digest,
    }


class _ReviewWriter(_Writer):
    def __init__(self, engine: Engine):
        super().__init__(engine)
        with engine.connect() as connection:
            self.products = dict(
                connection.execute(
                    select(products_t.c.external_id, products_t.c.id).where(products_t.c.source == "sephora")
                ).all()
            )
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        self.insert = dialect.insert(reviews_t).on_conflict_do_nothing(index_elements=["review_key"])

    def record(self, row: dict[str, str], item: CsvRow) -> ReviewRecord:
        return sephora_review(row)

    def write_batch(self, connection: Connection, records: list[tuple[int, ReviewRecord]], counts: _Counts) -> None:
        rows = []
        for _, record in records:
            row = asdict(record)
            row["product_id"] = self.products.get(record.external_product_id)
            rows.append(row)
        inserted = len(connection.execute(self.insert.returning(reviews_t.c.id), rows).all())
        counts.added += inserted
        counts.unchanged += len(rows) - inserted  # already ingested (or twice in this file)


class _ReferenceWriter(_Writer):
    """COSING inventory rows and annex entries, merged per normalised INCI name into `ingredients`."""

    def __init__(self, engine: Engine, knowledge: IngredientKnowledge, annex: str | None):
        super().__init__(engine)
        self.knowledge = knowledge
        self.annex = annex

    def record(self, row: dict[str, str], item: CsvRow) -> list[ReferenceRecord]:
        if self.annex is None:
            return [cosing_ingredient(row)]
        return annex_entries(row, self.annex)

    def write_batch(self, connection: Connection, records: list[tuple[int, list[ReferenceRecord]]], counts: _Counts):
        merged: dict[str, ReferenceRecord] = {}
        for _, entries in records:
            counts.skipped += not entries
            for entry in entries:
                merged[entry.normalized_name] = _merge(merged.get(entry.normalized_name), entry)
        if not merged:
            return
        existing = {
            row.normalized_name: row
            for row in connection.execute(
                select(ingredients_t).where(ingredients_t.c.normalized_name.in_(list(merged)))
            )
        }
        inserts, updates = [], []
        for name, entry in merged.items():
            old = existing.get(name)
            if old is None:
                inserts.append(_ingredient_row(entry))
                continue
            combined = _ingredient_row(_merge(_record_of(old), entry))
            current = {k: getattr(old, k) for k in combined}
            if _same(current, combined):
                counts.unchanged += 1
            else:
                updates.append({"b_id": old.id, **combined})
        if inserts:
            connection.execute(insert(ingredients_t), inserts)
            counts.added += len(inserts)
        if updates:
            statement = update(ingredients_t).where(ingredients_t.c.id == bindparam("b_id"))
            connection.execute(statement.values(updated_at=func.now()), updates)
            counts.updated += len(updates)

    def finish(self) -> list[str]:
        linked = relink_product_ingredients(self.engine, self.knowledge)
        if not linked:
            return []
        rebuilt = rebuild_active_masks(self.engine, self.knowledge)  # renamed entries may now be actives
        return [f"linked {linked} product ingredient entries to reference ingredients ({rebuilt} masks changed)"]


def _merge(old: ReferenceRecord | None, new: ReferenceRecord) -> ReferenceRecord:
    """Lists are united and the first value of a field is kept, so merging the same entry again changes nothing."""
    if old is None:
        return new
    refs = _union(old.annex_refs, new.annex_refs)
    conditions = _union((old.annex_conditions or "").split("\n"), (new.annex_conditions or "").split("\n"))
    return ReferenceRecord(
        name=old.name if old.source == "cosing" or new.source != "cosing" else new.name,
        normalized_name=old.normalized_name,
        source="cosing" if "cosing" in (old.source, new.source) else old.source,
        synonyms=_union(old.synonyms, new.synonyms),
        cas_numbers=old.cas_numbers or new.cas_numbers,
        ec_numbers=old.ec_numbers or new.ec_numbers,
        functions=_union(old.functions, new.functions),
        restriction=old.restriction or new.restriction,
        annex_refs=sorted(refs, key=lambda r: (ANNEX_RANK.get(r.split("/")[0], 9), r)),
        annex_conditions="\n".join(c for c in conditions if c) or None,
        cosing_ref=old.cosing_ref or new.cosing_ref,
        description=old.description or new.description,
    )


def _union(a: Sequence[str], b: Sequence[str]) -> list[str]:
    out = list(a)
    out += [x for x in b if x not in out]
    return out


def _record_of(row: Any) -> ReferenceRecord:
    return ReferenceRecord(
        name=row.name,
        normalized_name=row.normalized_name,
        source=row.source,
        synonyms=list(row.synonyms or []),
        cas_numbers=row.cas_numbers,
        ec_numbers=row.ec_numbers,
        functions=list(row.functions or []),
        restriction=row.restriction,
        annex_refs=list(row.annex_refs or []),
        annex_conditions=row.annex_conditions,
        cosing_ref=row.cosing_ref,
        description=row.description,
    )


def _ingredient_row(entry: ReferenceRecord) -> dict[str, Any]:
    return {
        "name": entry.name,
        "normalized_name": entry.normalized_name,
        "synonyms": entry.synonyms or None,
        "cas_numbers": entry.cas_numbers,
        "ec_numbers": entry.ec_numbers,
        "functions": entry.functions or None,
        "restriction": entry.restriction,
        "annex": strictest_annex(entry.annex_refs),
        "annex_refs": entry.annex_refs or None,
        "annex_conditions": entry.annex_conditions,
        "cosing_ref": entry.cosing_ref,
        "description": entry.description,
        "source": entry.source,
    }


def _same(current: dict[str, Any], combined: dict[str, Any]) -> bool:
    return all((current[k] or None) == (v or None) for k, v in combined.items())


def relink_product_ingredients(engine: Engine, knowledge: IngredientKnowledge) -> int:
    """Point product ingredient entries that matched nothing at the reference ingredients ingested since."""
    index: IngredientIndex = load_ingredient_index(engine, knowledge)
    if not len(index):
        return 0
    with engine.connect() as connection:
        pending = connection.execute(
            select(product_ingredients_t.c.ingredient_name, product_ingredients_t.c.label_text)
            .where(product_ingredients_t.c.ingredient_id.is_(None))
            .distinct()
        ).all()
    updates = []
    for name, label in pending:
        parsed = parse_ingredients([label]).ingredients()
        if not parsed:
            continue
        match = index.resolve(parsed[0][1], fuzzy=False)
        if match.ingredient is not None:
            updates.append(
                {
                    "b_old": name,
                    "b_label": label,
                    "ingredient_id": match.ingredient.id,
                    "ingredient_name": match.canonical[:300],
                }
            )
    linked = 0
    for start in range(0, len(updates), 1000):
        with engine.begin() as connection:
            result = connection.execute(
                update(product_ingredients_t).where(
                    product_ingredients_t.c.ingredient_name == bindparam("b_old"),
                    product_ingredients_t.c.label_text == bindparam("b_label"),
                    product_ingredients_t.c.ingredient_id.is_(None),
                ),
                updates[start : start + 1000],
            )
            linked += max(result.rowcount, 0)
    return linked
