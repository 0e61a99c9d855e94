"""Figures 1 and 3 of Li, Wei & Ma (2019), and accuracy against train loss, drawn from a run's
metrics.jsonl (and summary.json's matched loss) only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lrorder.core import figures, matched
from lrorder.core.rundir import Records
from lrorder.vision.config import CONTROL_ARMS, LABELS
from lrorder.vision.schedules import milestones

LEGEND = {"fontsize": 9, "framealpha": 0.9}
TITLES = {"val": "validation images", "clean": "clean validation images",
          "mixed": "mixed validation images", "patch": "patch-only images"}


def per_epoch(records: Records, method: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """The epochs of 1..E some seed logged `key` in (an arm that diverged stops early) and the
    (seeds, epochs) values of `key` for `method`; NaN where a seed has none."""
    seeds = records.config["seeds"]
    epochs = np.arange(1, records.config["config"]["epochs"] + 1)
    values = np.full((len(seeds), len(epochs)), np.nan)
    for row, seed in enumerate(seeds):
        for point in records.series(seed=seed, method=method):
            if key in point and point[key] is not None:
                values[row, point["epoch"] - 1] = point[key]
    reached = ~np.isnan(values).all(axis=0)
    return epochs[reached], values[:, reached]


def logged_methods(records: Records, methods: Sequence[str]) -> list[str]:
    return [m for m in methods if records.series(method=m)]


def figure1(records: Records, out: Path) -> None:
    """Figure 1: train and validation accuracy per epoch, large (0.1) vs small (0.01) LR."""
    methods = logged_methods(records, ("large", "small"))
    if not methods and not figures.diverged(records.summary):
        return
    fig, axes = figures.figure(width=6.0)
    ax = axes[0][0]
    for color, method in zip(("C0", "C3"), methods):
        for key, style in (("train_acc", "--"), ("val_acc", "-")):
            epochs, values = per_epoch(records, method, key)
            figures.seed_band(ax, epochs, values, f"{LABELS[method]}: {key.split('_')[0]}", color)
            ax.lines[-1].set_linestyle(style)
    _mark_anneals(ax, records.config["config"]["lr_schedule"], records.config["config"]["epochs"])
    ax.set(xlabel="epoch", ylabel="accuracy (%)",
           title="Figure 1: large LR generalizes better after the anneal")
    ax.legend(**LEGEND)
    figures.mark_diverged(fig, records.summary, empty=[] if methods else [ax])
    figures.save(fig, out)


def figure3(records: Records, out: Path, anneal: int) -> None:
    """Figure 3: clean and patch-only validation accuracy per epoch, anneal epoch marked."""
    methods = logged_methods(records, ("large", "small", "small_noise"))
    if not methods and not figures.diverged(records.summary):
        return
    fig, axes = figures.figure(columns=2)
    for ax, key, title in zip(axes[0], ("clean_acc", "patch_acc"),
                              ("clean validation images", "patch-only images")):
        for method in methods:
            epochs, values = per_epoch(records, method, key)
            figures.seed_band(ax, epochs, values, LABELS[method])
        ax.axvline(anneal, color="k", linestyle=":", linewidth=1, label=f"anneal (epoch {anneal})")
        ax.set(xlabel="epoch", ylabel="accuracy (%)", title=f"Figure 3: {title}")
    axes[0][1].axhline(10, color="grey", linewidth=0.8, linestyle="--", label="chance")
    axes[0][1].legend(**LEGEND)
    figures.mark_diverged(fig, records.summary, empty=[] if methods else list(axes[0]))
    figures.save(fig, out)


def test_vs_train_loss(records: Records, out: Path, evals: Sequence[str], methods: Sequence[str]) -> None:
    """Validation accuracy against train loss, one panel per validation set in `evals`: per arm
    and seed, the accuracy in the first epoch whose train loss is at or below each level of a
    log grid over every arm's losses; mean over the seeds that reached a level, ± std. The
    matched loss (summary.json), where every arm is compared, is marked."""
    methods = logged_methods(records, methods)
    if not methods and not figures.diverged(records.summary):
        return
    keys = [f"{name}_acc" for name in evals]
    series = {m: _by_epoch(records, m, ("train_loss", *keys)) for m in methods}
    levels = matched.loss_levels(np.concatenate([s["train_loss"].ravel() for s in series.values()]
                                                or [np.empty(0)]))
    stats = records.metric("matched_loss")
    level = stats["mean"] if stats is not None else None
    fig, axes = figures.figure(columns=len(evals))
    empty = []
    for ax, name, key in zip(axes[0], evals, keys):
        for method in methods:
            values = matched.first_at_or_below(series[method]["train_loss"], series[method][key], levels).T
            reached = ~np.isnan(values).all(axis=0)  # levels some seed reached
            if reached.any():
                figures.seed_band(ax, levels[reached], values[:, reached], _label(method))
        ax.set(ylabel="accuracy (%)", title=f"{TITLES.get(name, name)} at equal train loss")
        if not ax.lines:
            empty.append(ax)
            continue
        if name == "patch":
            ax.axhline(10, color="grey", linewidth=0.8, linestyle="--", label="chance")
        figures.train_loss_axis(ax, level)
        ax.legend(**LEGEND)
    figures.mark_diverged(fig, records.summary, empty=empty)
    figures.save(fig, out)


def _by_epoch(records: Records, method: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Per key, the (epochs, seeds) values of `method`'s epochs that did not diverge; NaN where
    a seed has none."""
    seeds = records.config["seeds"]
    epochs = records.config["config"]["epochs"]
    values = {key: np.full((epochs, len(seeds)), np.nan) for key in keys}
    for column, seed in enumerate(seeds):
        for point in records.series(seed=seed, method=method):
            if point.get("diverged"):
                continue
            for key in keys:
                if point.get(key) is not None:
                    values[key][point["epoch"] - 1, column] = point[key]
    return values


def _label(method: str) -> str:
    if method in CONTROL_ARMS:
        train, lr = CONTROL_ARMS[method]
        return f"{'never-patched' if train == 'subset' else 'all'} images, {LABELS[lr]}"
    return LABELS.get(method, method)


def _mark_anneals(ax, schedule: str, epochs: int) -> None:
    for i, (epoch, _) in enumerate(milestones(schedule, epochs)):
        ax.axvline(epoch, color="k", linestyle=":", linewidth=1, label="LR anneal" if i == 0 else None)
