"""The run directory: the contract between a run, its report and every later reader.

    config.json     resolved config, recipe, profile, seeds, device, versions, git commit
    metrics.jsonl   one JSON object per logged point (seed, step or epoch, named values)
    summary.json    status and each metric's mean, std and per-seed values beside the paper's
    report.md       measured vs paper, rendered from the files above
    figures/*.png   drawn from the files above
    arrays/*.npz    larger per-run records a figure needs (optional)
    state.pt        resume point of an unfinished run (removed when the run completes)

Every whole-file write goes through a temporary file and a rename, so a reader never sees
half a file; metrics.jsonl is appended line by line and cut back to the last resume point.
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
    """Append-only metrics.jsonl that can be cut back to a known number of lines on resume."""

    def __init__(self, path: Path):
        self.path = path
        self.lines = len(read_jsonl(path)) if path.exists() else 0

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(to_json(record), allow_nan=False) + "\n")
        self.lines += 1

    def truncate(self, lines: int) -> None:
        kept = read_jsonl(self.path)[:lines] if self.path.exists() else []
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.lines = len(kept)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Complete JSON lines of `path`; a torn last line (a killed writer) is ignored."""
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


class Records:
    """Read-only view of a run directory: everything a report or figure may use."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not (self.path / CONFIG).exists():
            raise UserError(f"{self.path} is not a run directory (no {CONFIG})")
        try:
            self.config = json.loads((self.path / CONFIG).read_text())
            summary = self.path / SUMMARY
            self.summary = json.loads(summary.read_text()) if summary.exists() else None
        except json.JSONDecodeError as exc:
            raise UserError(f"{self.path} has a corrupt record ({exc}): re-run it") from None
        metrics = self.path / METRICS
        self.metrics = read_jsonl(metrics) if metrics.exists() else []

    @property
    def recipe(self) -> str:
        return self.config["recipe"]

    def means(self) -> dict[str, float | None]:
        """Each summarized metric's mean over seeds (None where it has no value)."""
        return {name: stats["mean"] for name, stats in self.summary["metrics"].items()}

    def series(self, **match: Any) -> list[dict[str, Any]]:
        """The logged points whose fields equal `match` (e.g. `series(seed=0, method="gf")`)."""
        return [r for r in self.metrics if all(r.get(k) == v for k, v in match.items())]

    def array(self, name: str) -> dict[str, np.ndarray]:
        with np.load(self.path / "arrays" / f"{name}.npz") as data:
            return dict(data)
