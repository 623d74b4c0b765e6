"""The run's PNG report: loss and metric curves, per-condition precision/recall, the severity confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: training boxes have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from skinserve.labels import CONDITIONS, SEVERITY_LABELS  # noqa: E402


def write_report(path: Path, history: list[dict[str, Any]], metrics: dict[str, Any]) -> Path:
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    selecting = [h for h in history if h.get("phase", "select") == "select"]
    refit = [h for h in history if h.get("phase") == "refit"]
    epochs = [h["epoch"] for h in selecting]
    axes[0, 0].plot(epochs, [h["train_loss"] for h in selecting], label="train loss")
    axes[0, 0].plot(epochs, [h["val_loss"] for h in selecting], label="val loss")
    if refit:
        axes[0, 0].plot([h["epoch"] for h in refit], [h["train_loss"] for h in refit], label="refit train loss")
    axes[0, 0].set(title="loss", xlabel="epoch")
    axes[0, 0].legend()
    axes[0, 1].plot(epochs, [h["val_macro_f1"] for h in selecting], label="val macro-F1")
    axes[0, 1].plot(epochs, [h["val_severity_accuracy"] for h in selecting], label="val severity accuracy")
    axes[0, 1].set(title="validation metrics", xlabel="epoch", ylim=(0, 1.02))
    axes[0, 1].legend()
    per = metrics["per_condition"]
    x = np.arange(len(CONDITIONS))
    axes[1, 0].bar(x - 0.2, [per[c]["precision"] for c in CONDITIONS], 0.4, label="precision")
    axes[1, 0].bar(x + 0.2, [per[c]["recall"] for c in CONDITIONS], 0.4, label="recall")
    axes[1, 0].set_xticks(x, CONDITIONS, rotation=30, ha="right")
    axes[1, 0].set(title=f"test per condition (macro-F1 {_scored(metrics, 'macro_f1')})", ylim=(0, 1.05))
    axes[1, 0].legend()
    confusion = np.asarray(metrics["severity_confusion"] or np.zeros((len(SEVERITY_LABELS), len(SEVERITY_LABELS))))
    axes[1, 1].imshow(confusion, cmap="Blues")
    for (i, j), value in np.ndenumerate(confusion):
        axes[1, 1].text(j, i, str(int(value)), ha="center", va="center")
    axes[1, 1].set_xticks(range(len(SEVERITY_LABELS)), SEVERITY_LABELS)
    axes[1, 1].set_yticks(range(len(SEVERITY_LABELS)), SEVERITY_LABELS)
    axes[1, 1].set(
        title=f"test severity (accuracy {_scored(metrics, 'severity_accuracy')})", xlabel="predicted", ylabel="true"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _scored(metrics: dict[str, Any], key: str) -> str:
    """A score with its bootstrap interval and the best trivial baseline beside it: "0.912 [0.88, 0.94]; baseline
    0.21"."""
    text = f"{metrics[key]:.3f}"
    interval = (metrics.get("intervals") or {}).get(key)
    if interval:
        text += f" [{interval[0]:.2f}, {interval[1]:.2f}]"
    baselines = metrics.get("baselines") or {}
    if baselines:
        text += f"; baseline {max(b[key] for b in baselines.values()):.2f}"
    return text
