"""Metric identity as data: what is measured, of which method or arm, read how, at which kappa.

A recipe returns `{Metric: [value per seed]}`. The flat name a metric has in summary.json
(`test_err_ls`, `clean_acc_large_last5`, `test_err_ls_kappa0.3`) is the contract scripts read;
it is made here, in `Metric.name`, and nowhere else. summary.json also stores the fields, so a
reader selects metrics by field (`Records.metric`, `Records.find`) and never parses a name.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

FIELDS = ("quantity", "method", "reading", "kappa")


@dataclasses.dataclass(frozen=True)
class Metric:
    """`quantity` (test_err, clean_acc, ls_p_before_q, ...), the `method` or arm it belongs to,
    the `reading` of a per-epoch series (last5, before_anneal, ...), and a swept `kappa`."""

    quantity: str
    method: str | None = None
    reading: str | None = None
    kappa: float | None = None

    @property
    def name(self) -> str:
        name = "_".join(part for part in (self.quantity, self.method, self.reading) if part)
        return name if self.kappa is None else f"{name}_kappa{self.kappa:g}"

    def fields(self) -> dict[str, Any]:
        """The identity fields that are set (what summary.json stores beside the statistics)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def matches(self, **fields: Any) -> bool:
        return all(getattr(self, k) == v for k, v in fields.items())


def sample_std(values: Sequence[float] | np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """The spread every table and figure reports: the sample std over seeds (ddof 1, NaN seeds
    ignored), 0 for a single seed."""
    array = np.asarray(values, dtype=float)
    count = np.sum(~np.isnan(array), axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a point no seed has: NaN
        squares = np.nansum((array - np.nanmean(array, axis=axis, keepdims=axis is not None)) ** 2,
                            axis=axis)
        std = np.sqrt(squares / np.maximum(count - 1, 1))
    return float(std) if axis is None else std


def aggregate(metric: Metric, values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample std (0 for one seed) and the per-seed values, with the metric's identity;
    any NaN seed makes the statistics NaN (a metric not measured in every seed is not claimed)."""
    array = np.asarray(values, dtype=float)
    mean = float(array.mean())
    std = sample_std(array) if np.isfinite(mean) else float("nan")
    return {**metric.fields(), "mean": mean, "std": std, "per_seed": array.tolist()}


def identity(name: str, stats: dict[str, Any]) -> Metric:
    """The Metric of one summary.json entry; an entry written before the fields were stored is
    a quantity of its own name."""
    if "quantity" not in stats:
        return Metric(name)
    return Metric(**{k: stats[k] for k in FIELDS if k in stats})
