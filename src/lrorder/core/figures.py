"""Figure helpers shared by the recipes: styled figures, seed bands, atomic PNG writes.

Figures are made as `matplotlib.figure.Figure` objects, not through pyplot, and styled one by
one, so importing this module changes neither the backend nor the rcParams of the process (a
notebook or a script that imports lrorder keeps its own) and every figure renders headless.
"""

from __future__ import annotations

import textwrap
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

from lrorder.core.metrics import sample_std
from lrorder.core.rundir import write_atomic

DPI = 110
GRID_ALPHA = 0.3


def figure(columns: int = 1, rows: int = 1, width: float = 5.0, height: float = 3.6):
    """A new figure with a grid of axes sized for a slide: light grid, no top or right spine.

    Returns `(fig, axes)` like `plt.subplots(..., squeeze=False)`.
    """
    fig = Figure(figsize=(width * columns, height * rows), dpi=DPI)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.grid(True, alpha=GRID_ALPHA)
        ax.spines[["top", "right"]].set_visible(False)
    return fig, axes


def save(fig: Figure, path: Path) -> None:
    """Write `fig` as a PNG atomically."""
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png"), mode="wb")


def seed_band(ax, x: Sequence[float], per_seed: np.ndarray, label: str, color=None) -> None:
    """Mean over seeds (rows of `per_seed`, NaN where a seed has no point) as a line, mean ± std
    as a shaded band."""
    values = np.asarray(per_seed, dtype=float)
    with warnings.catch_warnings():  # a point no seed has is a gap in the line
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=0)
    line, = ax.plot(x, mean, label=label, color=color)
    if values.shape[0] > 1:
        std = sample_std(values, axis=0)  # the spread the tables report
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)


def diverged(summary: Mapping[str, Any] | None) -> bool:
    """Whether a run's summary says it diverged: its figures are then drawn even without records."""
    return bool(summary) and summary.get("status") == "diverged"


def mark_diverged(fig: Figure, summary: Mapping[str, Any] | None, empty: Sequence = ()) -> str | None:
    """Say in `fig` that the run diverged and where (summary["problems"]): red, above the axes,
    and in the middle of each axes of `empty` (those no record reached), so a figure of a run
    that stopped early is not read as a finished one. Returns the note, None for a run that
    did not diverge."""
    if not diverged(summary):
        return None
    problems = list(summary.get("problems") or ["no problem recorded"])
    more = f"; ... (+{len(problems) - 2} more)" if len(problems) > 2 else ""  # two fit a figure
    note = f"diverged: {'; '.join(problems[:2])}{more}"
    width = max(40, int(fig.get_figwidth() * 14))  # characters that fit the figure's width
    fig.suptitle(textwrap.fill(note, width), color="C3", fontsize=10)
    for ax in empty:
        ax.text(0.5, 0.5, textwrap.fill(note, 36), transform=ax.transAxes, ha="center",
                va="center", color="C3", fontsize=9)
    return note


def plain_log_ticks(axis, at: Sequence[float] | None = None) -> None:
    """Label a log `axis` (ax.xaxis, ax.yaxis) with plain numbers (0.3, 2, 50), not powers of ten:
    at `at` (e.g. the values measured), else at a few of 1, 1.5, 2, 3, 5 and 7 times the powers of
    ten, fewer the more decades the limits span."""
    if at is None:
        low, high = sorted(axis.get_view_interval())
        decades = np.log10(high / low) if low > 0 else np.inf
        subs = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if decades < 1 else (1.0, 2.0, 5.0) if decades < 3 else (1.0,)
        axis.set_major_locator(ticker.LogLocator(subs=subs))
    else:
        axis.set_major_locator(ticker.FixedLocator(at))
    axis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def train_loss_axis(ax, matched: float | None = None) -> None:
    """An x axis of train loss, log-scaled and decreasing to the right (the way training moves),
    with the matched loss marked where one is given."""
    ax.set_xscale("log")
    if not ax.xaxis_inverted():
        ax.invert_xaxis()
    low, high = sorted(ax.get_xlim())
    plain_log_ticks(ax.xaxis, at=np.unique([float(f"{v:.2g}") for v in np.geomspace(low, high, 5)]))
    ax.set_xlabel("train loss (decreasing as training goes on)")
    if matched is not None and np.isfinite(matched):
        ax.axvline(matched, color="k", linestyle=":", linewidth=1, label=f"matched loss {matched:.3g}")
