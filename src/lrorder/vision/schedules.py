"""Learning-rate and noise schedules of the released CIFAR-10 code, as pure functions of the epoch.

Epochs are 1-based, as in the released code. A schedule is a tuple of milestones
`(epoch, factor)`: from `epoch` on, the value is multiplied by `factor`. The named schedules are
defined as fractions of the run length, so `default` at 200 epochs is exactly the paper's
(decays at 60, 120, 150) and a 10-epoch quick run keeps the same anneal structure.
"""

from __future__ import annotations

import math
from typing import Literal

Milestones = tuple[tuple[int, float], ...]

# name -> ((fraction of the epochs, factor), ...); Section H.1 and H.2 of the paper.
NAMED: dict[str, tuple[tuple[float, float], ...]] = {
    "default": ((0.3, 0.2), (0.6, 0.2), (0.75, 0.2)),  # 200 epochs: x0.2 at 60, 120, 150
    "decay_early": ((0.5, 0.04),),  # 60 epochs: 0.1 -> 0.004 at 30
    "fixed": (),
}

SCHEDULE_HELP = ("default | decay_early | fixed, or explicit 1-based milestones EPOCH:FACTOR "
                 "separated by commas (e.g. '30:0.04' or '60:0.2,120:0.2')")


def milestones(schedule: str, epochs: int) -> Milestones:
    """The `(epoch, factor)` milestones of `schedule` for a run of `epochs` epochs.

    A named milestone never falls on epoch 1, so every run has a pre-anneal phase.
    """
    if schedule in NAMED:
        return tuple((max(2, round(fraction * epochs)), factor)
                     for fraction, factor in NAMED[schedule])
    try:
        pairs = [part.split(":") for part in schedule.split(",") if part.strip()]
        return tuple(sorted((int(e), float(f)) for e, f in pairs))
    except ValueError:
        raise ValueError(f"schedule {schedule!r} is not {SCHEDULE_HELP}") from None


def scale_at(steps: Milestones, epoch: int) -> float:
    """Product of the factors of every milestone reached by `epoch`."""
    return math.prod(factor for start, factor in steps if epoch >= start)


def lr_at(lr0: float, steps: Milestones, epoch: int) -> float:
    """Learning rate of 1-based `epoch`: lr0 times the factors reached (set once per epoch)."""
    return lr0 * scale_at(steps, epoch)


def sigma_at(sigma0: float, steps: Milestones, decay: float, per: Literal["epoch", "iteration"],
             epoch: int, iteration: int) -> float:
    """Pre-activation noise level at 1-based `epoch` and 0-based global `iteration`.

    The paper decays sigma by `decay` every iteration (Section H.1); the released code does it
    every epoch (sigma0 * decay^(e-1)). Both are here, chosen by `per`.
    """
    exponent = epoch - 1 if per == "epoch" else iteration
    return sigma0 * scale_at(steps, epoch) * decay ** exponent
