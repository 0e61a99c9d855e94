"""The one resume protocol: a run is a sequence of named units of work.

A recipe names its units (a seed, a seed's group of arms, a kappa, a batched simulation) and
runs them through `RunContext.each`; a unit may also record a resume point of its own part way
(`RunContext.checkpoint`). The whole point is one plain dict in state.pt:

    version         STATE_VERSION
    metrics_bytes   how much of metrics.jsonl the point accounts for (later lines are re-logged)
    finished        {unit name: its result}, in the order the units finished
    current         the unit a partial state belongs to, or None
    partial         that unit's state part way (weights, optimizer and generator states, history)
    problems        what the summary will report (divergence of a method, seed and where)
    resumed_on      the device of each resumed part that saved this point, in order (config.json
                    has the start device; a run may go on on another device than it started on)

Results and partial states hold tensors, numbers, strings, None and lists/tuples/dicts of them
only, so the point is saved atomically with `torch.save` and loaded with `weights_only=True`:
loading a resume point never runs code. It is loaded on the CPU whatever device wrote it; the
recipe moves what it resumes to the run's device.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

from lrorder.core import rundir
from lrorder.core.errors import UserError

# 2: theory runs accumulate Lemma 5.2's signal and probe densely; 3: a vision arm trained alone
# holds a one-model StackedTrainer's state (the plain Trainer's before)
STATE_VERSION = 3


@dataclasses.dataclass
class ResumePoint:
    metrics_bytes: int = 0
    finished: dict[str, Any] = dataclasses.field(default_factory=dict)
    current: str | None = None
    partial: Any = None
    problems: list[str] = dataclasses.field(default_factory=list)
    resumed_on: list[str] = dataclasses.field(default_factory=list)  # absent from older points

    def save(self, path: Path) -> None:
        import torch

        point = {"version": STATE_VERSION,
                 **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}
        buffer = io.BytesIO()
        torch.save(point, buffer)
        rundir.write_atomic(path, lambda f: f.write(buffer.getvalue()), mode="wb")

    @classmethod
    def load(cls, path: Path) -> ResumePoint:
        """The point stored at `path`; a file that is not one is refused in one line."""
        import torch

        try:
            point = torch.load(path, map_location="cpu", weights_only=True)
            if point.pop("version") != STATE_VERSION:
                raise ValueError("written by another version of lrorder")
            return cls(**point)
        except Exception as exc:  # any unreadable, foreign or corrupt file
            raise UserError(f"{path} is not a readable resume point ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:120] if str(exc) else 'corrupt'}): move it aside "
                            "and run again with --resume to restart from the beginning (the logged "
                            "records are kept)") from None
