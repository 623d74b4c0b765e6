"""Where the prediction log writer's numbers go: Prometheus gauges and counters, or nowhere."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class WriterMetrics:
    """Where the writer's numbers go. This base reports nowhere; `create` binds Prometheus metrics."""

    def __init__(
        self,
        spool_rows: Any = None,
        lag_seconds: Any = None,
        rows_written: Any = None,
        rows_spooled: Any = None,
        errors: Any = None,
    ) -> None:
        self.spool_rows, self.lag_seconds, self.errors = spool_rows, lag_seconds, errors
        self.rows_written, self.rows_spooled = rows_written, rows_spooled

    @classmethod
    def create(cls, factory_module: ModuleType | None = None, registry: Any = None) -> WriterMetrics:
        """Metrics made by `factory_module` (`prometheus_client` unless given; `bentoml.metrics` is an alias of it).

        prometheus_client is imported here, not at module import: under BentoML the worker sets
        PROMETHEUS_MULTIPROC_DIR after importing the service, and an early import would miss the multiprocess mode.
        """
        module = factory_module or importlib.import_module("prometheus_client")
        extra = {} if registry is None else {"registry": registry}
        # livesum/livemax: with one writer per worker process, the spool is the sum and the lag the worst of them.
        return cls(
            spool_rows=module.Gauge(
                "skinserve_prediction_spool_rows",
                "Prediction rows waiting in the local spool for the database",
                multiprocess_mode="livesum",
                **extra,
            ),
            lag_seconds=module.Gauge(
                "skinserve_prediction_writer_lag_seconds",
                "Seconds from submit to durable write (database or spool), worst row of the last batch",
                multiprocess_mode="livemax",
                **extra,
            ),
            rows_written=module.Counter(
                "skinserve_prediction_rows_written_total",
                "Prediction rows inserted into the database, from the queue or replayed from the spool",
                **extra,
            ),
            rows_spooled=module.Counter(
                "skinserve_prediction_rows_spooled_total", "Prediction rows appended to the local spool", **extra
            ),
            errors=module.Counter(
                "skinserve_prediction_log_errors_total",
                "Prediction log failures: database, spool, corrupt (spool line), rejected (row), lost (row)",
                ["kind"],
                **extra,
            ),
        )

    def set_spool_rows(self, rows: int) -> None:
        if self.spool_rows is not None:
            self.spool_rows.set(rows)

    def set_lag(self, seconds: float) -> None:
        if self.lag_seconds is not None:
            self.lag_seconds.set(seconds)

    def add_written(self, rows: int) -> None:
        if self.rows_written is not None:
            self.rows_written.inc(rows)

    def add_spooled(self, rows: int) -> None:
        if self.rows_spooled is not None:
            self.rows_spooled.inc(rows)

    def add_error(self, kind: str, count: int = 1) -> None:
        if self.errors is not None:
            self.errors.labels(kind=kind).inc(count)
