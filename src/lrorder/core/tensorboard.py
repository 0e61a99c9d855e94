"""TensorBoard event files of a run, in RUN_DIR/tensorboard/: written live while it runs
(`lrorder run --tensorboard`) or exported afterwards from metrics.jsonl (`lrorder report
--tensorboard DIR`).

Every numeric field of a record (booleans as 0/1) is one scalar at the record's `step` or
`epoch` (0 without either), tagged by the record's identity: `seedS/`, then `kappa` and each
field whose value is a name (letters, digits, `_.-`) as `key/value/`, e.g.
`seed0/method/large/clean_acc`; other strings (paths, messages) are neither tags nor scalars.
tensorboard's own event writer is used rather than torch's SummaryWriter, which would import
torch for the numpy-only recipes and for `lrorder report`.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lrorder.core.errors import UserError
from lrorder.core.rundir import Records, to_json

DIR = "tensorboard"
INSTALL = "pip install 'lrorder[tensorboard]'"
EVENTS = "events.out.tfevents.*"
_NAME = re.compile(r"[\w.-]+")
_POSITION = ("step", "epoch")
_NUMBERED = ("kappa",)  # numbers that say which series a record is of, not measurements


def require() -> None:
    """Fail in one line, before a run starts, when the tensorboard package is missing."""
    _event_writer()


def _event_writer() -> type:
    try:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        raise UserError(f"TensorBoard output needs the tensorboard package: {INSTALL}") from None
    return EventFileWriter


def scalars(record: Mapping[str, Any]) -> tuple[int, dict[str, float]]:
    """A record's step and its scalars by tag (see the module docstring), read from the record
    as metrics.jsonl holds it (numpy scalars as numbers, NaN as null), so that a live run and
    an export write the same points."""
    record = to_json(record)
    identity = [f"seed{record['seed']}"] if "seed" in record else []
    identity += [f"{key}/{value}" for key, value in record.items()
                 if key in _NUMBERED or (isinstance(value, str) and _NAME.fullmatch(value))]
    step = next((int(record[key]) for key in _POSITION if key in record), 0)
    values = {"/".join([*identity, key]): float(value) for key, value in record.items()
              if key not in ("seed", *_NUMBERED, *_POSITION) and isinstance(value, (int, float))}
    return step, values


class LiveWriter:
    """Writes each record of a run as it is logged: `writer(record)`, then `writer.close()`."""

    def __init__(self, run_dir: str | os.PathLike):
        event_writer = _event_writer()
        from tensorboard.compat.proto import event_pb2, summary_pb2

        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        self._events = event_writer(str(Path(run_dir) / DIR), flush_secs=10)

    def __call__(self, record: Mapping[str, Any]) -> None:
        step, values = scalars(record)
        if values:
            summary = self._summary(value=[self._summary.Value(tag=tag, simple_value=value)
                                           for tag, value in values.items()])
            self._events.add_event(self._event(wall_time=time.time(), step=step, summary=summary))

    def close(self) -> None:
        self._events.close()


def export(run_dir: str | os.PathLike) -> Path:
    """Write the event file of the run in `run_dir` from its metrics.jsonl and return the folder.

    Earlier event files there are replaced (they hold nothing the records do not), so exporting
    twice, or after a live run, shows every point once.
    """
    run_dir = Path(run_dir)
    records = Records(run_dir).metrics
    folder = run_dir / DIR
    earlier = set(folder.glob(EVENTS))
    with tempfile.TemporaryDirectory(dir=run_dir, prefix=".tensorboard-") as staging:
        writer = LiveWriter(staging)
        for record in records:
            writer(record)
        writer.close()
        folder.mkdir(exist_ok=True)
        for made in (Path(staging) / DIR).glob(EVENTS):
            os.replace(made, folder / made.name)
            earlier.discard(folder / made.name)
    for stale in earlier:
        stale.unlink()
    return folder
