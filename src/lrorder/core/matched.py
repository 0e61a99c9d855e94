"""Readings at matched train loss: what a run had learned when its train loss first reached a level.

Both seed papers compare methods stopped at the same train loss, not after the same number of
iterations (Nakkiran's Claim 1; Li, Wei & Ma's Theorems 3.4-3.5 stop at a train-loss criterion).
A run is probed along the way; these functions read a probed quantity at the first probe whose
train loss is at or below a level. Arrays are [points, ...runs] with points in time order; a NaN
loss (a point a run did not probe) never reaches a level.
"""

from __future__ import annotations

import numpy as np


def first_at_or_below(loss: np.ndarray, values: np.ndarray, levels: np.ndarray | float) -> np.ndarray:
    """`values` at the first point whose `loss` is at or below each level; NaN where a run never
    gets there. `loss`, `values`: [P, *R]; `levels`: a scalar or [L] (result [*R] or [L, *R])."""
    loss, values = np.asarray(loss, dtype=float), np.asarray(values, dtype=float)
    levels = np.asarray(levels, dtype=float)
    grid = levels.reshape(levels.shape + (1,) * loss.ndim)
    with np.errstate(invalid="ignore"):
        reached = loss[None] <= grid  # [L, P, *R]; NaN compares False
    first = reached.argmax(axis=1)[:, None]  # [L, 1, *R]
    picked = np.take_along_axis(np.broadcast_to(values, reached.shape), first, axis=1)[:, 0]
    picked = np.where(reached.any(axis=1), picked, np.nan)
    return picked.reshape(levels.shape + loss.shape[1:])


def matched_loss(loss: np.ndarray) -> float:
    """The lowest level every run reaches: the largest of the runs' lowest losses ([P, *R])."""
    lowest = np.nanmin(np.asarray(loss, dtype=float), axis=0)
    return float(np.max(lowest))


def loss_levels(loss: np.ndarray, count: int = 60) -> np.ndarray:
    """`count` levels from the highest loss seen down to the lowest, evenly spaced in log loss
    (decreasing: the order training reaches them), for curves against train loss."""
    finite = np.asarray(loss, dtype=float)
    finite = finite[np.isfinite(finite) & (finite > 0)]
    if finite.size == 0:
        return np.empty(0)
    return np.geomspace(finite.max(), finite.min(), count)
