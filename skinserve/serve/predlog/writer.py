"""Prediction logs off the request path: a bounded queue, a background writer, a local spool while the database is away.

Where a submitted row can be, and what ends its stay there:
- the queue (memory): the writer takes it within `flush_interval_s` and inserts it with its batch;
- the database: inserted with `INSERT ... ON CONFLICT (request_id, created_at) DO NOTHING`, so a row sent twice
  is stored once;
- the spill (memory, at most `spill_size` rows): when the queue is full, until the writer thread spools them;
- the spool (local disk): `predictions-<pid>.jsonl`, appended when the database fails or the queue is full;
  replayed (same idempotent insert) once the database answers, by this process or by any other after it died;
- the overflow (memory, at most `queue_size` rows): when the spool cannot be written either; retried like the queue.
A row is counted lost only when the overflow is full, when the database rejects it (a bad value, not an outage), or
when it is still in memory at `stop()` with neither the database nor the spool usable. SIGKILL loses the rows still
in memory (queue and overflow): in normal running at most `flush_interval_s` of traffic plus the batch in flight.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

from sqlalchemy import Insert
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from skinserve.config import redacted_url
from skinserve.db.engine import create_registry_engine
from skinserve.db.models import PredictionLog
from skinserve.serve.predlog.metrics import WriterMetrics
from skinserve.serve.predlog.row import PredictionRow
from skinserve.serve.predlog.spool import SpoolFiles, SpoolReplay

log = logging.getLogger("skinserve.serve.predlog")


def insert_statement(dialect: str) -> Insert:
    """`INSERT ... ON CONFLICT (request_id, created_at) DO NOTHING` for Postgres or SQLite: replays and retries are
    harmless. The key holds created_at because Postgres partitions the table by it (migration 0004); a request's
    created_at is fixed when it is answered and kept to the microsecond in the spool, so the key is as exact as
    request_id alone."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise ValueError(f"prediction logs need Postgres or SQLite, not {dialect!r} (SKINSERVE_DATABASE_URL)")
    return insert(PredictionLog.__table__).on_conflict_do_nothing(index_elements=["request_id", "created_at"])


Pending = tuple[PredictionRow, float]  # a row and when it was submitted (time.monotonic)


class PredictionLogWriter:
    """Takes rows from the request path without blocking; one daemon thread makes each durable (database or spool)."""

    def __init__(
        self,
        database_url: str,
        spool_dir: Path,
        queue_size: int = 10000,
        spill_size: int | None = None,
        batch_size: int = 500,
        flush_interval_s: float = 0.2,
        retry_interval_s: float = 2.0,
        metrics: WriterMetrics | None = None,
    ) -> None:
        # One thread uses the engine, so its pool never holds more than one connection.
        self._engine = create_registry_engine(database_url)
        self._insert = insert_statement(self._engine.dialect.name)
        self._where = redacted_url(database_url)
        self._spool = SpoolFiles(Path(spool_dir), os.getpid())
        self._queue: queue.Queue[Pending] = queue.Queue(maxsize=queue_size)
        self._overflow: deque[Pending] = deque()  # rows neither the database nor the spool took, at most queue_size
        # Rows submitted while the queue was full, for the writer thread to spool: deque.append needs no lock, so a
        # request never waits for the writer, which holds the lock through each fsync. At most spill_size rows
        # (default 4 x queue_size: a row is about 1 KB, so 40 MB by default, reached only while the spool stalls).
        self._spill: deque[Pending] = deque()
        self._spill_limit = spill_size if spill_size is not None else 4 * queue_size
        self._lost_at_submit = 0  # rows the full spill could not take, for the writer to count
        # Guards the spill and that count only, held for an append or an increment: never across I/O.
        self._submit_lock = threading.Lock()
        self._overflow_limit = queue_size
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._retry_interval_s = retry_interval_s
        self._metrics = metrics or WriterMetrics()
        self._lock = threading.Lock()  # the spool file, the overflow, the counts
        self._counts: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._lag_s = 0.0
        self._db_up, self._db_retry_at = True, 0.0
        self._spool_ok, self._spool_retry_at = True, 0.0
        self._scan_at = 0.0
        self._replays: deque[SpoolReplay] = deque()
        self._replay_backlog = 0
        self._loss_logged_at = -float("inf")
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("PredictionLogWriter.start() was already called")
        self._thread = threading.Thread(target=self._run, name="skinserve-predlog", daemon=True)
        self._thread.start()

    def submit(self, row: PredictionRow) -> None:
        """Hand over a row. Never waits (on the database, the disk or the writer's lock) and never raises: when the
        queue is full the row goes to the spill, which the writer thread spools."""
        item = (row, time.monotonic())
        with contextlib.suppress(queue.Full):
            if not self._stopping.is_set():
                self._queue.put_nowait(item)
                return
        with self._submit_lock:
            if len(self._spill) < self._spill_limit:
                self._spill.append(item)
            else:
                self._lost_at_submit += 1

    def stop(self, timeout_s: float = 30.0) -> None:
        """Flush the queue (database, else spool) and end the thread; rows nothing could take are counted lost."""
        self._stopping.set()
        if self._thread is None:
            self._run()  # never started: flush from here
        else:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("prediction log writer still busy after %.1f s; spooling what is left in memory", timeout_s)
        leftover: list[Pending] = []
        with contextlib.suppress(queue.Empty):
            while True:
                leftover.append(self._queue.get_nowait())
        spilled, lost_at_submit = self._taken_spill()
        leftover.extend(spilled)
        with self._lock:
            leftover.extend(self._overflow)
            self._overflow.clear()
            if leftover and not self._store_locally(leftover, sync=True, force=True):
                self._count_lost(len(self._overflow), log_now=True)
                self._overflow.clear()
            self._count_lost(lost_at_submit, log_now=True)
            with contextlib.suppress(OSError):
                self._spool.sync()
            self._spool.close()
        for replay in self._replays:
            replay.file.close()
        self._engine.dispose()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "queued": self._queue.qsize(),
                "spilled": len(self._spill),
                "lost_at_submit": self._lost_at_submit,  # not yet in "lost": the writer thread counts them
                "written": self._counts["written"],
                "spooled": self._counts["spooled"],
                "spool_rows": self._spool.rows + self._replay_backlog,
                "replayed": self._counts["replayed"],
                "lost": self._counts["lost"],
                "lag_s": self._lag_s,
                "db_up": self._db_up,
                "overflow": len(self._overflow),
                "corrupt": self._counts["corrupt"],
                "rejected": self._counts["rejected"],
                "errors": dict(self._errors),
            }

    # The writer thread.

    def _run(self) -> None:
        while True:
            try:
                self._spool_the_spill()
                batch = self._next_batch()
                if batch:
                    self._persist(batch)
                elif self._stopping.is_set():
                    return
                if not self._stopping.is_set():
                    self._replay_step()
                with self._lock:
                    self._spool.sync()
            except Exception:  # a dead writer thread would silently stall every later row: log and go on
                log.exception("prediction log writer loop failed; going on")
                with self._lock:
                    self._errors["writer"] += 1
                self._metrics.add_error("writer")
                self._stopping.wait(self._flush_interval_s)

    def _taken_spill(self) -> tuple[list[Pending], int]:
        """The spilled rows and the count of rows lost at submit, both taken (the submitters start afresh)."""
        with self._submit_lock:
            taken, lost = list(self._spill), self._lost_at_submit
            self._spill.clear()
            self._lost_at_submit = 0
        return taken, lost

    def _spool_the_spill(self) -> None:
        """Rows that found the queue full go to the spool (or the overflow), from this thread, under the lock."""
        spilled, lost = self._taken_spill()
        if spilled or lost:
            with self._lock:
                if spilled:
                    self._store_locally(spilled, sync=True)
                self._count_lost(lost)

    def _next_batch(self) -> list[Pending]:
        """Up to batch_size rows: the overflow's first (when something may take them), then the queue's.

        An idle writer waits flush_interval_s for a first row, then up to as long again to fill the batch.
        """
        batch: list[Pending] = []
        # Not while stopping: stop() gives the overflow its last chance, and a fast retry interval would spin here.
        if (
            self._overflow
            and not self._stopping.is_set()
            and (self._db_due() or time.monotonic() >= self._spool_retry_at)
        ):
            with self._lock:
                while self._overflow and len(batch) < self._batch_size:
                    batch.append(self._overflow.popleft())
        # Spooled rows wait for the database: while it is down they must not turn this into a busy loop.
        busy = bool(batch) or (bool(self._replays) and self._db_due()) or self._stopping.is_set()
        wait = 0.0 if busy else self._flush_interval_s
        deadline = time.monotonic() + wait
        while len(batch) < self._batch_size:
            left = deadline - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _persist(self, batch: list[Pending]) -> None:
        if self._db_due() and self._insert_rows([row for row, _ in batch]):
            with self._lock:
                self._counts["written"] += len(batch)
            self._metrics.add_written(len(batch))
        else:
            with self._lock:
                if not self._store_locally(batch, sync=True):
                    return  # still in memory (or lost): not durable, so no lag to report
        self._lag_s = time.monotonic() - min(submitted for _, submitted in batch)
        self._metrics.set_lag(self._lag_s)

    def _insert_rows(self, rows: list[PredictionRow]) -> bool:
        try:
            self._execute(rows)
        except (IntegrityError, DataError) as err:
            return self._insert_one_by_one(rows, err)
        except Exception as err:  # connection refused, server restarting, table missing, disk full, ...: retry later
            self._db_failed(err)
            return False
        self._db_ok()
        return True

    def _execute(self, rows: list[PredictionRow]) -> None:
        with self._engine.begin() as connection:
            connection.execute(self._insert, [row.as_params() for row in rows])

    def _insert_one_by_one(self, rows: list[PredictionRow], batch_error: SQLAlchemyError) -> bool:
        """A batch the database refuses for its values, not an outage: store the good rows, drop the bad ones."""
        log.warning(
            "prediction log batch of %d rows refused (%s); inserting them one by one", len(rows), _reason(batch_error)
        )
        for row in rows:
            try:
                self._execute([row])
            except (IntegrityError, DataError) as err:
                # Spooling it would only replay the same refusal forever.
                log.error(
                    "prediction log row %s rejected by the database and dropped: %s", row.request_id, _reason(err)
                )
                with self._lock:
                    self._counts["rejected"] += 1
                    self._count_lost(1, kind="rejected")
            except Exception as err:
                self._db_failed(err)
                return False
        self._db_ok()
        return True

    def _db_due(self) -> bool:
        return self._db_up or time.monotonic() >= self._db_retry_at

    def _db_failed(self, err: BaseException) -> None:
        if self._db_up:
            log.warning(
                "prediction log database %s unavailable (%s); spooling to %s and retrying every %.1f s",
                self._where,
                _reason(err),
                self._spool.directory,
                self._retry_interval_s,
            )
        self._db_up, self._db_retry_at = False, time.monotonic() + self._retry_interval_s
        # The next try opens fresh connections: a pooled one can outlive a server restart, and SQLite's can keep a
        # schema it read mid-migration (an ON CONFLICT key the table did not have yet) for as long as it lives.
        self._engine.dispose()
        with self._lock:
            self._errors["database"] += 1
        self._metrics.add_error("database")

    def _db_ok(self) -> None:
        if not self._db_up:
            log.info("prediction log database %s answers again; replaying the spool", self._where)
            self._scan_at = 0.0
        self._db_up = True

    def _store_locally(self, items: list[Pending], sync: bool, force: bool = False) -> bool:
        """Spool `items` (True), or keep them in the bounded overflow (False); call with the lock held."""
        if force or time.monotonic() >= self._spool_retry_at:
            try:
                self._spool.append([row.as_record() for row, _ in items], sync)
            except OSError as err:
                self._spool_failed(err)
            else:
                if not self._spool_ok:
                    log.info("prediction spool %s writable again", self._spool.path)
                self._spool_ok, self._spool_retry_at = True, 0.0
                self._counts["spooled"] += len(items)
                self._metrics.add_spooled(len(items))
                self._metrics.set_spool_rows(self._spool.rows + self._replay_backlog)
                return True
        room = max(0, self._overflow_limit - len(self._overflow))
        self._overflow.extend(items[:room])
        if len(items) > room:
            self._count_lost(len(items) - room)
        return False

    def _spool_failed(self, err: OSError) -> None:
        if self._spool_ok:
            log.error(
                "cannot write the prediction spool %s (%s); keeping up to %d rows in memory, retrying every %.1f s",
                self._spool.path,
                err,
                self._overflow_limit,
                self._retry_interval_s,
            )
        self._spool_ok, self._spool_retry_at = False, time.monotonic() + self._retry_interval_s
        self._errors["spool"] += 1
        self._metrics.add_error("spool")

    def _count_lost(self, rows: int, kind: str = "lost", log_now: bool = False) -> None:
        """Call with the lock held. Logged at most once per retry interval: under an outage this runs per row."""
        if rows <= 0:
            return
        self._counts["lost"] += rows
        self._errors[kind] += rows
        self._metrics.add_error(kind, rows)
        now = time.monotonic()
        if kind == "lost" and (log_now or now - self._loss_logged_at >= self._retry_interval_s):
            self._loss_logged_at = now
            log.error(
                "%d prediction log rows lost so far: database %s and spool %s unavailable, %d rows already in memory",
                self._counts["lost"],
                self._where,
                self._spool.path,
                len(self._overflow),
            )

    def _replay_step(self) -> None:
        """Insert one chunk of the claimed spool files, claiming them first when a scan is due."""
        if not self._db_due():
            return
        if not self._replays:
            now = time.monotonic()
            if now < self._scan_at:
                return
            self._scan_at = now + self._retry_interval_s
            self._claim_spools()
            if not self._replays:
                return
        replay = self._replays[0]
        rows = replay.chunk(self._batch_size)
        if rows and not self._insert_rows(rows):
            return
        with self._lock:
            self._counts["replayed"] += len(rows)
        self._metrics.add_written(len(rows))
        if replay.corrupt:
            with self._lock:
                self._counts["corrupt"] += replay.corrupt
                self._errors["corrupt"] += replay.corrupt
            log.warning("prediction spool %s: %d unreadable line(s) skipped", replay.path.name, replay.corrupt)
            self._metrics.add_error("corrupt", replay.corrupt)
            replay.corrupt = 0
        replay.clear()
        if replay.eof:
            replay.finish()
            self._replays.popleft()
            log.info("prediction spool %s replayed", replay.path.name)
        self._publish_backlog()

    def _claim_spools(self) -> None:
        try:
            with self._lock:
                paths = self._spool.claim()
            for path in paths:
                self._replays.append(SpoolReplay(path))
        except OSError as err:
            log.warning("cannot claim prediction spool files in %s: %s", self._spool.directory, err)
            with self._lock:
                self._errors["replay"] += 1
            self._metrics.add_error("replay")
        if self._replays:
            log.info("replaying %d prediction spool file(s) from %s", len(self._replays), self._spool.directory)
        self._publish_backlog()

    def _publish_backlog(self) -> None:
        with self._lock:
            self._replay_backlog = sum(r.remaining + len(r.pending) for r in self._replays)
            self._metrics.set_spool_rows(self._spool.rows + self._replay_backlog)


def _reason(err: BaseException) -> str:
    """The driver's first line, without SQLAlchemy's statement and parameters (they would be whole batches)."""
    orig = getattr(err, "orig", None) or err
    lines = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {lines[0] if lines else ''}"
