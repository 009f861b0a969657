"""Metrics on disk: one CSV row per evaluation, a JSON summary, early stopping."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from equikit.train._checkpoint import atomic_write_bytes


class MetricsLog:
    """Append rows of numbers to a CSV file; the columns are fixed by the first row.

    Example:
        >>> import tempfile, pathlib
        >>> log = MetricsLog(pathlib.Path(tempfile.mkdtemp()) / "m.csv")
        >>> log.append({"epoch": 1, "step": 10, "val_loss": 0.5})
        >>> log.append({"epoch": 2, "step": 20, "val_loss": 0.25})
        >>> [r["val_loss"] for r in log.read()]
        [0.5, 0.25]
        >>> log.truncate(max_step=10); len(log.read())
        1
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> list[dict[str, float]]:
        if not self.path.is_file():
            return []
        with self.path.open(newline="") as fh:
            return [{k: float(v) if v != "" else math.nan for k, v in row.items()} for row in csv.DictReader(fh)]

    def append(self, row: dict[str, Any]) -> None:
        new = not self.path.is_file() or self.path.stat().st_size == 0
        if new:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("w", newline="") as fh:
                csv.writer(fh).writerow(list(row))
        with self.path.open(newline="") as fh:
            columns = next(csv.reader(fh))
        if set(row) != set(columns):
            raise ValueError(
                f"MetricsLog.append: row keys {sorted(row)} differ from the columns {columns} of "
                f"{str(self.path)!r} (evaluate must return the same metrics every time)"
            )
        with self.path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=columns).writerow(row)

    def truncate(self, max_step: int) -> None:
        """Drop rows written after ``max_step`` (rows a crash left behind the checkpoint)."""
        if not self.path.is_file():
            return
        with self.path.open(newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            return
        step = rows[0].index("step")
        kept = [rows[0]] + [r for r in rows[1:] if float(r[step]) <= max_step]
        lines = "".join(",".join(r) + "\n" for r in kept)
        atomic_write_bytes(self.path, lines.encode())


def write_summary(path: str | Path, summary: dict[str, Any]) -> Path:
    """Write ``summary`` as indented JSON, atomically."""
    path = Path(path)
    atomic_write_bytes(path, (json.dumps(summary, indent=2, default=float) + "\n").encode())
    return path


class EarlyStopping:
    """Track the best value of a metric; ``should_stop`` after ``patience`` evaluations
    without an improvement larger than ``min_delta``.

    Example:
        >>> es = EarlyStopping(patience=2)
        >>> [es.update(v) for v in (1.0, 0.5, 0.6, 0.7)], es.should_stop, es.best
        ([True, True, False, False], True, 0.5)
    """

    def __init__(self, mode: str = "min", patience: int | None = None, min_delta: float = 0.0) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping: `mode` must be 'min' or 'max', got {mode!r}")
        self.mode, self.patience, self.min_delta = mode, patience, float(min_delta)
        self.best = math.inf if mode == "min" else -math.inf
        self.bad = 0

    def update(self, value: float) -> bool:
        """Record ``value``; return whether it is a new best."""
        value = float(value)
        better = value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        if better:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad >= self.patience

    def state_dict(self) -> dict[str, float]:
        return {"best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.best, self.bad = float(state["best"]), int(state["bad"])
