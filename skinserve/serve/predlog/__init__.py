"""Prediction logs off the request path: the row, the spool, the metrics and the background writer."""

from skinserve.serve.predlog.metrics import WriterMetrics
from skinserve.serve.predlog.row import PredictionRow
from skinserve.serve.predlog.spool import SPOOL_NAME, SpoolFiles, SpoolReplay
from skinserve.serve.predlog.writer import PredictionLogWriter, insert_statement

__all__ = [
    "SPOOL_NAME",
    "PredictionLogWriter",
    "PredictionRow",
    "SpoolFiles",
    "SpoolReplay",
    "WriterMetrics",
    "insert_statement",
]
