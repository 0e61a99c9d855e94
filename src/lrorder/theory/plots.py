"""Figures of the theory recipes, drawn from a run directory's records alone."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lrorder.core import figures, matched
from lrorder.core.rundir import Records
from lrorder.theory.config import LINEAR_Q_ERR

LABELS = {"ls": "L-S (large then small LR)", "s": "S (small LR)", "s_noise": "S + pre-activation noise"}
KINDS = (("p_only_err", "P only"), ("q_only_err", "Q only"), ("both_err", "both"), ("test_err", "all"))
RATIOS = {"test_err": "All test examples", "p_only_err": "Test examples with the P pattern only",
          "test_err_at_matched_loss": "All test examples,\nat matched train loss",
          "p_only_err_at_matched_loss": "P-only test examples,\nat matched train loss"}
LEGEND = {"fontsize": 9, "framealpha": 0.9}


def per_seed_series(records: Records, method: str, name: str, every_seed: bool = False,
                    **where: Any) -> tuple[np.ndarray, np.ndarray]:
    """Probe steps and a [seeds, steps] array of the logged value `name` of `method` (one
    metrics.jsonl line per seed, method and probe); NaN where a seed has no such point. Runs
    logged with one line per seed and probe (`{name}_{method}` values, as in older results/)
    are read too, so their figures can still be redrawn. `where`: fields the lines must have
    (e.g. kappa=0.3). With `every_seed`, only the steps every seed probed (the regular probes:
    a curve against iteration then averages the same seeds at every point)."""
    seeds = {seed: row for row, seed in enumerate(records.config["seeds"])}
    points = [(p.get("seed"), p.get("step"), p.get(name)) for p in records.series(method=method, **where)]
    if not points:
        points = [(p.get("seed"), p.get("step"), p.get(f"{name}_{method}")) for p in records.metrics]
    points = [(seed, step, value) for seed, step, value in points if value is not None and seed in seeds]
    steps = np.array(sorted({step for _, step, _ in points}), dtype=float)
    column = {step: i for i, step in enumerate(steps)}
    values = np.full((len(seeds), steps.size), np.nan)
    for seed, step, value in points:
        values[seeds[seed], column[step]] = value
    if every_seed:
        kept = ~np.isnan(values).any(axis=0)
        return steps[kept], values[:, kept]
    return steps, values


def learning_order(records: Records, methods: list[str], out: Path) -> None:
    """Per method: the P part's error on P and the Q part's on Q (eq. 3.5-3.6: the W- and V-part of
    the structured net) vs iteration, seed bands, anneal marked; one y range for every panel,
    wide enough for the bands, and the x range of the whole run (one that diverged stops early)."""
    fig, axes = figures.figure(columns=len(methods), width=4.6, height=3.8)
    planned = records.config["config"]["steps"]
    seeds, empty = 0, []
    for ax, method in zip(axes[0], methods):
        drawn = False
        for name, label, color in (("w_on_p_err", "P part r = f(x1, 0) on P", "C0"),
                                   ("v_on_q_err", "Q part g = f(0, x2) on Q", "C3")):
            steps, values = per_seed_series(records, method, name, every_seed=True)
            if steps.size:
                figures.seed_band(ax, steps, values, label, color=color)
                ax.lines[-1].set_marker("o" if steps.size == 1 else "")  # a single probe is a dot
                seeds, drawn = max(seeds, int(np.isfinite(values).any(axis=1).sum())), True
        if not drawn:
            empty.append(ax)
        anneal = np.array((records.metric("anneal_iter", method) or {}).get("per_seed", []), dtype=float)
        if np.isfinite(anneal).any():  # NaN: a seed that never annealed within the run
            ax.axvline(np.nanmean(anneal), color="k", linestyle="--", linewidth=1, label="anneal (mean)")
        ax.axhline(LINEAR_Q_ERR, color="gray", linestyle=":", linewidth=1,
                   label="best Q error of a g linear on the Q plane")
        ax.set(xlabel="iteration", ylabel="test error of the part", title=LABELS.get(method, method))
    low = min([-0.02, *(ax.dataLim.y0 for ax in axes[0] if ax not in empty)])
    high = max([0.6, *(ax.dataLim.y1 for ax in axes[0] if ax not in empty)])
    for ax in axes[0]:
        ax.set(ylim=(low - 0.02, high + 0.02), xlim=(-0.02 * planned, 1.02 * planned))
    handles = {}
    for ax in axes[0]:
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    band = f"band: ± 1 std over {seeds} seeds" if seeds > 1 else f"{seeds} seed: no band"
    axes[0][-1].legend(handles.values(), handles.keys(), title=band, loc="upper left",
                       bbox_to_anchor=(1.02, 1.0), **LEGEND)
    figures.mark_diverged(fig, records.summary, empty=empty)
    figures.save(fig, out)


def final_errors(records: Records, methods: list[str], out: Path) -> None:
    """Final test error per example type and method, mean ± standard error over seeds."""
    fig, axes = figures.figure(width=6.0)
    ax = axes[0][0]
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        stats = [records.metric(kind, method) for kind, _ in KINDS]
        means = [np.nan if s is None or s["mean"] is None else s["mean"] for s in stats]
        errors = [np.nan if s is None or s["std"] is None else s["std"] / np.sqrt(len(s["per_seed"]))
                  for s in stats]
        ax.bar(np.arange(len(KINDS)) + (i - (len(methods) - 1) / 2) * width, means, width, yerr=errors,
               capsize=3, label=LABELS.get(method, method))
    ax.set_xticks(range(len(KINDS)), [label for _, label in KINDS])
    ax.set(ylabel="final test error (mean ± s.e. over seeds)", title="Final test error by example type")
    ax.legend(**LEGEND)
    figures.mark_diverged(fig, records.summary)
    figures.save(fig, out)


def ratio_vs_kappa(records: Records, out: Path, at_matched_loss: bool = False) -> None:
    """theory-scaling's figure from the records: the S and L-S final errors (or those at each
    kappa's matched train loss) of every seed at every kappa (NaN where a kappa left no metric,
    e.g. it diverged)."""
    kappas = np.array(records.config["config"]["kappas"], dtype=float)
    seeds = len(records.config["seeds"])

    def per_seed(quantity: str, method: str) -> np.ndarray:  # [seeds, kappas]
        found = [records.metric(quantity, method, kappa=float(k)) for k in kappas]
        return np.array([[np.nan] * seeds if s is None else s["per_seed"] for s in found], dtype=float).T

    names = [name for name in RATIOS if name.endswith("_at_matched_loss") == at_matched_loss]
    errors = {name: (per_seed(name, "s"), per_seed(name, "ls")) for name in names}
    scaling(kappas, errors, out, summary=records.summary)


def _without_ratio(recorded: np.ndarray, defined: np.ndarray) -> str:
    """Under a kappa's tick: how many seeds have no S / L-S there, and why."""
    zero, lost = int(recorded.sum() - defined.sum()), int((~recorded).sum())
    why = [f"{zero} (error 0)"] * bool(zero) + [f"{lost} (not recorded)"] * bool(lost)
    return "\nno ratio:\n" + "\n".join(why) if why else ""


def scaling(kappas: np.ndarray, errors: dict[str, tuple[np.ndarray, np.ndarray]], out: Path,
            summary: Mapping[str, Any] | None = None) -> None:
    """Per error name, test error of S / test error of L-S vs kappa on log-log axes: each seed's
    ratio where it is defined (L-S and S errors > 0), the ratio of the seed means, and a line
    through Omega(1/kappa); the seeds without a ratio are counted at their kappa.

    `errors[name]` is ([seeds, kappas] of S, the same of L-S)."""
    fig, axes = figures.figure(columns=len(errors), width=4.8, height=4.0)
    order = np.argsort(kappas)
    kappas = np.asarray(kappas, dtype=float)[order]
    seeds = max(s.shape[0] for s, _ in errors.values())
    empty = []
    for ax, (name, (s, ls)) in zip(axes[0], errors.items()):
        s, ls = np.asarray(s, dtype=float)[:, order], np.asarray(ls, dtype=float)[:, order]
        recorded = np.isfinite(s) & np.isfinite(ls)
        with np.errstate(divide="ignore", invalid="ignore"):  # 0/0: no ratio, a kappa without records
            per_seed = np.where(recorded, s / ls, np.nan)
            ratio = np.where(recorded, s, 0).sum(0) / np.where(recorded, ls, 0).sum(0)
        defined = np.isfinite(per_seed) & (per_seed > 0)
        spread = np.linspace(-0.025, 0.025, s.shape[0]) if s.shape[0] > 1 else np.zeros(1)
        for row in range(s.shape[0]):  # seeds side by side at each kappa, in seed order
            ax.plot(kappas[defined[row]] * (1 + spread[row]), per_seed[row, defined[row]], "o", color="0.45",
                    markersize=4, alpha=0.8, label="one seed: its S / L-S" if row == 0 else None)
        shown = np.isfinite(ratio) & (ratio > 0)
        if not shown.any() and not defined.any():
            empty.append(ax)
        ax.plot(kappas[shown], ratio[shown], "o-", color="C0", markersize=8, linewidth=2,
                label="S / L-S of the seed means")
        if shown.any():
            anchor = ratio[shown][0] * kappas[shown][0]
            ax.plot(kappas, anchor / kappas, "k--", label="∝ 1/κ: the paper's Ω(1/κ)\n(Theorems 3.4-3.5), "
                    "through the\nsmallest κ measured")
        ax.axhline(1.0, color="gray", linestyle=":", linewidth=1, label="1: no gap")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(kappas.min() / 1.15, kappas.max() * 1.15)
        figures.plain_log_ticks(ax.xaxis, at=kappas)
        figures.plain_log_ticks(ax.yaxis)
        ax.set_xticklabels([f"{kappa:g}{_without_ratio(recorded[:, i], defined[:, i])}"
                            for i, kappa in enumerate(kappas)])
        ax.set(xlabel="κ (N = d/κ², P-only share κ²/2)",
               ylabel="test error of S / test error of L-S", title=RATIOS.get(name, name))
    axes[0][-1].legend(title=f"{kappas.size} values of κ × {seeds} seeds", loc="upper left",
                       bbox_to_anchor=(1.02, 1.0), **LEGEND)
    figures.mark_diverged(fig, summary, empty=empty)
    figures.save(fig, out)


def _anneals(ax, records: Records, methods: list[str], **where: Any) -> None:
    """A dashed line at each annealing method's mean anneal iteration, in its color."""
    for i, method in enumerate(methods):
        anneal = np.array((records.metric("anneal_iter", method, **where) or {}).get("per_seed", []),
                          dtype=float)
        if np.isfinite(anneal).any():
            ax.axvline(np.nanmean(anneal), color=f"C{i}", linestyle="--", linewidth=1, alpha=0.7,
                       label=f"anneal of {method} (mean)")


def test_vs_train_loss(records: Records, methods: list[str], out: Path) -> None:
    """P-only and overall test error against train loss, as training lowers it: per method and
    seed the error at the first own probe at or below each level (`lrorder.core.matched`), seed
    bands over the seeds that reached the level, the run's matched loss marked. The two-layer
    analogue of Nakkiran's test-vs-train picture: methods compared where the papers compare."""
    fig, axes = figures.figure(columns=2, width=4.8, height=3.9)
    series = {m: {name: per_seed_series(records, m, name)[1]
                  for name in ("train_loss", "p_only_err", "test_err")} for m in methods}
    levels = matched.loss_levels(np.concatenate([s["train_loss"].ravel() for s in series.values()]))
    level = (records.metric("matched_loss") or {}).get("mean")
    seeds = len(records.config["seeds"])
    for ax, (name, title) in zip(axes[0], (("p_only_err", "Test examples with the P pattern only"),
                                           ("test_err", "All test examples"))):
        for i, method in enumerate(methods):
            loss, values = series[method]["train_loss"], series[method][name]
            if levels.size and loss.size:
                at = matched.first_at_or_below(loss.T, values.T, levels)  # [levels, seeds]
                figures.seed_band(ax, levels, at.T, LABELS.get(method, method), color=f"C{i}")
        if levels.size:
            figures.train_loss_axis(ax, level)
        ax.set(ylabel="test error", title=title)
    band = f"band: ± 1 std over the seeds there (of {seeds})" if seeds > 1 else "1 seed: no band"
    axes[0][-1].legend(title=band, loc="upper left", bbox_to_anchor=(1.02, 1.0), **LEGEND)
    figures.mark_diverged(fig, records.summary, empty=[] if levels.size else list(axes[0]))
    figures.save(fig, out)


MECHANISM = (
    ("w_signal", "Lemma 5.2: |accumulated gradient of W|_F", "log"),
    ("w_margin_p_only", "Lemma 5.3: mean margin y r(x) on P-only train", "linear"),
    ("w_alignment", "cos(alpha, w*): r(x) - r(-x) = 2 <alpha, x>", "linear"),
    ("train_loss", "train loss per example type", "linear"),
)
STYLES = {"w_signal_from_q_examples": ("-", "from examples with Q"),
          "w_signal_from_p_only": ("--", "from P-only"),
          "p_only_train_loss": ("-", "P only"), "q_only_train_loss": (":", "Q only"),
          "both_train_loss": ("--", "both")}


def mechanism(records: Records, methods: list[str], out: Path, kappas: list[float] | None = None) -> None:
    """Theorem 3.5's proof measured along the run, per method (color) with seed bands: the W
    block's accumulated gradient from the examples that contain Q and from the P-only ones
    (Lemma 5.2 needs the first small under S once Q is fitted), W's margin on the P-only
    training examples and its direction's alignment with w* (Lemma 5.3), the train loss per
    example type; anneals marked. With `kappas` (theory-scaling), one row of panels per kappa."""
    rows = [{}] if kappas is None else [{"kappa": kappa} for kappa in kappas]
    fig, axes = figures.figure(columns=len(MECHANISM), rows=len(rows), width=4.2, height=3.4)
    for row, where in zip(axes, rows):
        _mechanism_row(row, records, methods, where)
    empty = [ax for ax in axes.flat if not ax.lines]
    figures.mark_diverged(fig, records.summary, empty=empty)
    figures.save(fig, out)


def _mechanism_row(axes, records: Records, methods: list[str], where: dict[str, Any]) -> None:
    for ax, (key, title, scale) in zip(axes, MECHANISM):
        names = [name for name in STYLES if key in name] or [key]
        for i, method in enumerate(methods):
            for name in names:
                steps, values = per_seed_series(records, method, name, every_seed=True, **where)
                if steps.size:
                    style, what = STYLES.get(name, ("-", ""))
                    label = LABELS.get(method, method) + (f": {what}" if what and len(names) > 1 else "")
                    figures.seed_band(ax, steps, values, label, color=f"C{i}")
                    ax.lines[-1].set_linestyle(style)
        positive = any(np.nanmax(np.asarray(line.get_ydata(), dtype=float), initial=0) > 0
                       for line in ax.lines)
        ax.set_yscale(scale if positive else "linear")  # a log axis needs a positive value
        _anneals(ax, records, methods, **where)
        ax.set(xlabel="iteration", title=title + "".join(f"\n{k} {v:g}" for k, v in where.items()))
        if len(names) > 1 and ax.lines:  # the panels whose line styles need a key
            ax.legend(fontsize=7, framealpha=0.9)
