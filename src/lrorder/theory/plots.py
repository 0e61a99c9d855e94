"""Figures of the theory recipes, drawn from a run directory's records alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lrorder.core import figures
from lrorder.core.rundir import Records
from lrorder.theory.probes import LINEAR_Q_ERR

LABELS = {"ls": "L-S (large then small LR)", "s": "S (small LR)", "s_noise": "S + pre-activation noise"}
KINDS = (("p_only_err", "P only"), ("q_only_err", "Q only"), ("both_err", "both"), ("test_err", "all"))


def _per_seed_series(records: Records, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Probe steps and a [seeds, steps] array of the logged value `name`."""
    seeds = records.config["seeds"]
    rows = [records.series(seed=s) for s in seeds]
    steps = np.array([p["step"] for p in rows[0] if name in p])
    values = np.array([[p.get(name, np.nan) for p in row if name in p][: len(steps)] for row in rows],
                      dtype=float)
    return steps, values


def learning_order(records: Records, methods: list[str], out: Path) -> None:
    """Per method: the P part's error on P and the Q part's on Q (eq. 3.5-3.6: the W- and V-part of
    the structured net) vs iteration, seed bands, anneal marked."""
    fig, axes = figures.figure(columns=len(methods), width=4.6)
    metrics = records.summary["metrics"] if records.summary else {}
    for ax, method in zip(axes[0], methods):
        for name, label, color in ((f"w_on_p_err_{method}", "P part r = f(x1, 0) on P", "C0"),
                                   (f"v_on_q_err_{method}", "Q part g = f(0, x2) on Q", "C3")):
            steps, values = _per_seed_series(records, name)
            if steps.size:
                figures.seed_band(ax, steps, values, label, color=color)
        anneal = np.array(metrics.get(f"anneal_iter_{method}", {}).get("per_seed", []), dtype=float)
        if np.isfinite(anneal).any():  # NaN: a seed that never annealed within the run
            ax.axvline(np.nanmean(anneal), color="k", linestyle="--", linewidth=1, label="anneal (mean)")
        ax.axhline(LINEAR_Q_ERR, color="gray", linestyle=":", linewidth=1, label="linear part of Q only")
        ax.set(xlabel="iteration", ylabel="test error of the part", ylim=(-0.02, 0.6),
               title=LABELS.get(method, method))
    axes[0][0].legend(fontsize=7)
    figures.save(fig, out)


def final_errors(records: Records, methods: list[str], out: Path) -> None:
    """Final test error per example type and method, mean ± standard error over seeds."""
    metrics = records.summary["metrics"]
    fig, axes = figures.figure(width=6.0)
    ax = axes[0][0]
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        stats = [metrics[f"{kind}_{method}"] for kind, _ in KINDS]
        means = [s["mean"] for s in stats]
        errors = [s["std"] / np.sqrt(len(s["per_seed"])) for s in stats]
        ax.bar(np.arange(len(KINDS)) + (i - (len(methods) - 1) / 2) * width, means, width, yerr=errors,
               capsize=3, label=LABELS.get(method, method))
    ax.set_xticks(range(len(KINDS)), [label for _, label in KINDS])
    ax.set(ylabel="final test error (mean ± s.e. over seeds)", title="Final test error by example type")
    ax.legend(fontsize=8)
    figures.save(fig, out)


def scaling(kappas: np.ndarray, errors: dict[str, tuple[np.ndarray, np.ndarray]], out: Path,
            xlabel: str = "kappa") -> None:
    """Per error name, test error of S / test error of L-S vs kappa on log-log axes: the ratio of
    the seed means (seeds as dots where both are non-zero), beside a line through Omega(1/kappa).

    `errors[name]` is ([seeds, kappas] of S, the same of L-S)."""
    fig, axes = figures.figure(columns=len(errors))
    for ax, (name, (s, ls)) in zip(axes[0], errors.items()):
        with np.errstate(divide="ignore", invalid="ignore"):
            per_seed = s / ls
            ratio = np.nanmean(s, 0) / np.nanmean(ls, 0)
        for column, kappa in enumerate(kappas):
            finite = per_seed[np.isfinite(per_seed[:, column]) & (per_seed[:, column] > 0), column]
            ax.plot(np.full(finite.size, kappa), finite, ".", color="C0", alpha=0.4)
        shown = np.isfinite(ratio) & (ratio > 0)
        ax.plot(kappas[shown], ratio[shown], "o-", color="C0", label="measured: S / L-S (seed means)")
        if shown.any():
            anchor = ratio[shown][0] * kappas[shown][0]
            ax.plot(kappas, anchor / kappas, "k--",
                    label="Omega(1/kappa) (Theorems 3.4-3.5), through the first point")
        ax.axhline(1.0, color="gray", linestyle=":", linewidth=1)
        ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=f"{name}: S / L-S",
               title=f"{name}: does the gap scale as the paper says?")
        ax.legend(fontsize=7)
    figures.save(fig, out)
