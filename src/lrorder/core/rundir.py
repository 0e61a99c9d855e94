"""The run directory: the contract between a run, its report and every later reader.

    config.json     resolved config, recipe, profile, seeds, device, versions, git commit
    metrics.jsonl   one JSON object per logged point (seed, step or epoch, named values)
    summary.json    status and each metric's mean, std and per-seed values beside the paper's
    report.md       measured vs paper, rendered from the files above
    figures/*.png   drawn from the files above
    arrays/*.npz    larger per-run records a figure needs (optional)
    state.pt        resume point of an unfinished run (removed when the run completes;
                    its schema is in lrorder.core.progress)

Every whole-file write goes through a temporary file and a rename, so a reader never sees
half a file, except metrics.jsonl: it is appended line by line (a reader skips a torn line)
and cut back to the last resume point when a run resumes.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lrorder.core.errors import UserError
from lrorder.core.metrics import Metric, identity

CONFIG, METRICS, SUMMARY, REPORT, STATE = (
    "config.json", "metrics.jsonl", "summary.json", "report.md", "state.pt")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's 0600 would hide runs from others


def write_atomic(path: Path, write: Callable[[Any], None], mode: str = "w") -> None:
    """Call `write(file)` on a temporary file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.fchmod(fd, FILE_MODE)
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(to_json(obj), indent=2, allow_nan=False) + "\n")


def to_json(obj: Any) -> Any:
    """JSON-ready copy: numpy scalars become Python numbers, NaN and inf become null."""
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, (np.generic, np.ndarray)):
        return to_json(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def is_busy(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def prepare(path: Path, resume: bool) -> None:
    """Make `path` ready for a run; refuse to touch another run's files unless resuming."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} exists and is not a directory: choose another --out")
    if resume:
        if not (path / CONFIG).exists():
            raise UserError(f"nothing to resume in {path} (no {CONFIG}): run without --resume")
        return
    if is_busy(path):
        raise UserError(f"run directory {path} exists and is not empty: "
                        "pass --resume to continue it, or choose another --out")
    make_writable_dir(path)


def make_writable_dir(path: Path) -> None:
    """Create `path` if needed and prove it writable, or say so in one line."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to {path} ({exc.strerror}): choose a writable --out") from None


class MetricsLog:
    """Append-only metrics.jsonl, cut back to a resume point's byte size when a run resumes
    (every record before the point stays byte for byte, a corrupt line included)."""

    def __init__(self, path: Path, listener: Callable[[dict[str, Any]], None] | None = None):
        self.path, self.listener = path, listener

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(to_json(record), allow_nan=False) + "\n")
        if self.listener is not None:
            self.listener(record)

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def truncate(self, size: int) -> None:
        if self.size() > size:
            os.truncate(self.path, size)


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The records of `path` and the 1-based numbers of the lines that are not a JSON object
    (a torn last line of a killed writer, or damage): those are skipped, never the rest."""
    records, skipped = [], []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                record = None
            if isinstance(record, dict):
                records.append(record)
            elif raw.strip():
                skipped.append(number)
    return records, skipped


def _read_json(path: Path, kind: type) -> Any:
    try:
        value = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is corrupt ({exc}): re-run the run, or restore the file") from None
    if not isinstance(value, kind):
        raise UserError(f"{path} is not a {kind.__name__} of lrorder records: re-run the run, "
                        "or restore the file")
    return value


class Records:
    """Read-only view of a run directory: everything a report or figure may use.

    Damaged files are refused in one line (config.json, summary.json) or read around
    (metrics.jsonl: `skipped_lines` says which lines were left out).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        if not (self.path / CONFIG).exists():
            raise UserError(f"{self.path} is not a run directory (no {CONFIG})")
        self.config = _read_json(self.path / CONFIG, dict)
        lacking = [k for k in ("recipe", "profile", "seeds", "device", "config") if k not in self.config]
        if lacking:
            raise UserError(f"{self.path / CONFIG} lacks {', '.join(lacking)}: it was not written by "
                            "`lrorder run`; re-run the run")
        summary = self.path / SUMMARY
        self.summary = _read_json(summary, dict) if summary.exists() else None
        if self.summary is not None:
            lacking = [k for k in ("status", "seeds", "metrics", "elapsed_s") if k not in self.summary]
            if lacking or not isinstance(self.summary["metrics"], dict):
                raise UserError(f"{summary} lacks {', '.join(lacking) or 'its metrics'}: it is not an "
                                "lrorder summary; re-run the run (or delete summary.json and --resume)")
        metrics = self.path / METRICS
        self.metrics, self.skipped_lines = read_jsonl(metrics) if metrics.exists() else ([], [])

    @property
    def recipe(self) -> str:
        return self.config["recipe"]

    @property
    def devices(self) -> list[str]:
        """Where each part of a finished run computed (summary.json's `devices`; the start device
        for a run recorded before it had them)."""
        return self.summary.get("devices") or [self.config["device"]]

    def means(self) -> dict[str, float | None]:
        """Each summarized metric's mean over seeds (None where it has no value)."""
        return {name: stats["mean"] for name, stats in self.summary["metrics"].items()}

    def find(self, **fields: Any) -> list[tuple[Metric, dict[str, Any]]]:
        """The summarized metrics whose identity has `fields` (e.g. `find(reading="last5")`)."""
        found = [(identity(name, stats), stats) for name, stats in self.summary["metrics"].items()]
        return [(metric, stats) for metric, stats in found if metric.matches(**fields)]

    def metric(self, quantity: str, method: str | None = None, reading: str | None = None,
               kappa: float | None = None) -> dict[str, Any] | None:
        """One metric's statistics (mean, std, per_seed), or None if the run has no such metric."""
        if not self.summary:
            return None
        return self.summary["metrics"].get(Metric(quantity, method, reading, kappa).name)

    def series(self, **match: Any) -> list[dict[str, Any]]:
        """The logged points whose fields equal `match` (e.g. `series(seed=0, method="gf")`)."""
        return [r for r in self.metrics if all(r.get(k) == v for k, v in match.items())]

    def array(self, name: str) -> dict[str, np.ndarray]:
        with np.load(self.path / "arrays" / f"{name}.npz") as data:
            return dict(data)
