"""Figures of Nakkiran's convex recipes, drawn from a run's records only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D

from lrorder.convex.experiment import typical_draw
from lrorder.core import figures
from lrorder.core.rundir import Records

A, B = "C0", "C1"  # gradient flow (A) and large steps then flow (B), in every figure
LEGEND = {"fontsize": 9, "framealpha": 0.9}


def claim1(records: Records, figure_dir: Path) -> None:
    """Trajectories of the followed draw, test vs train loss along them, the ratio over draws."""
    paths = {p: records.series(path=p) for p in ("gf", "annealed")}
    if paths["gf"] or figures.diverged(records.summary):
        _draw_paths(records, paths, figure_dir / "trajectories.png")
        _draw_test_vs_train(records, paths, figure_dir / "test_vs_train.png")
    has_ratio = (records.path / "arrays" / "ratio.npz").exists()
    if has_ratio or figures.diverged(records.summary):
        _draw_ratio(records, records.array("ratio") if has_ratio else None,
                    figure_dir / "ratio_distribution.png")


def lemma2(records: Records, figure_dir: Path) -> None:
    """Measured loss vs bound per instance, and the approach to the bound as K grows."""
    has_instances = (records.path / "arrays" / "instances.npz").exists()
    if has_instances or figures.diverged(records.summary):
        _draw_bounds(records, records.array("instances") if has_instances else None,
                     figure_dir / "bounds.png")
    sweep = records.series(seed=records.config["seeds"][0])
    if sweep or figures.diverged(records.summary):
        _draw_sweep(records, [p for p in sweep if "bound_over_eps" in p], figure_dir / "bound_vs_steps.png")


def _betas(points: list[dict]) -> np.ndarray:
    """[points, 2] array of (beta1, beta2)."""
    return np.array([[p["beta1"], p["beta2"]] for p in points], dtype=float).reshape(-1, 2)


def _draw_paths(records: Records, paths: dict[str, list[dict]], out: Path) -> None:
    """Left: both paths from beta = 0, B's large steps as arrows between markers (where it lands
    repeatedly, which steps land there), the flows as lines. Right: the end of both flows near
    beta*, where each stops on the train loss = eps ellipse and at what test loss."""
    config = records.config["config"]
    eps, steps = config["eps"], config["steps"]
    gamma, star = typical_draw(config["n"], config["alpha"])
    gf = _betas(paths["gf"])
    jumps = _betas([p for p in paths["annealed"] if p["step"] <= steps])
    after = [p for p in paths["annealed"] if p["step"] > steps]
    flow = _betas(after)
    landings = np.concatenate([jumps, flow[:1]])  # where each large step starts and lands
    fig, axes = figures.figure(columns=3, width=4.4, height=4.6)
    whole, zoom, key = axes[0]
    whole.get_gridspec().set_width_ratios([1.25, 0.85, 0.45])  # the third column holds the legend
    key.axis("off")

    whole.plot(*gf.T, color=A, linewidth=2)
    taken = _draw_steps(whole, landings)
    whole.plot(*flow.T, color=B, linewidth=2.5)
    whole.plot(*star, "k*", markersize=12, zorder=5)
    if paths["gf"]:
        whole.annotate("β*: both runs stop\nnear it (middle panel)", xy=star, xytext=(18, -50),
                       textcoords="offset points", ha="left", fontsize=9,
                       arrowprops={"arrowstyle": "->", "color": "k", "lw": 0.8})
    whole.margins(x=0.06, y=0.22)  # room for the labels of the landing points
    whole.set(xlabel=f"β1 (sharp direction, sample curvature {gamma[0]:.2g})",
              ylabel=f"β2 (flat direction, sample curvature {gamma[1]:.2g})",
              title="Whole paths, from β = 0")

    stops = {}
    for name, color, points, path in (("A", A, gf, paths["gf"]), ("B", B, flow, after)):
        zoom.plot(*(points - star).T, color=color, linewidth=2)
        if path:
            stops[name] = points[-1] - star
            zoom.plot(*stops[name], "o" if name == "A" else "s", color=color, markersize=9,
                      markeredgecolor="k", zorder=5)
            zoom.annotate(f"{name} stops:\ntest loss {path[-1]['test_loss'] / eps:.3g} eps",
                          xy=stops[name], xytext=(22, -30) if name == "A" else (-8, 34),
                          textcoords="offset points", ha="left" if name == "A" else "center",
                          fontsize=9, color=color, fontweight="bold",
                          bbox={"boxstyle": "round", "fc": "white", "ec": color, "alpha": 0.9})
    radius = np.sqrt(eps / gamma)
    angle = np.linspace(0, 2 * np.pi, 200)
    zoom.plot(radius[0] * np.cos(angle), radius[1] * np.sin(angle), "k--", linewidth=1.2)
    zoom.plot(0, 0, "k*", markersize=12)
    half = 1.5 * max([radius.max(), *(np.abs(s).max() for s in stops.values())])
    zoom.set(xlim=(-half, half), ylim=(-half, half), aspect="equal",
             xlabel="β1 - β*1", ylabel="β2 - β*2", title="Near β*: where each run stops")

    handles = [Line2D([], [], color=A, linewidth=2, marker="o", markeredgecolor="k",
                      label="A: gradient flow\n(● where it stops)"),
               Line2D([], [], color=B, linewidth=0.8, marker="o", markersize=5,
                      label=f"B: {taken} large steps,\nη = 1/γmax (arrows)"),
               Line2D([], [], color=B, linewidth=2.5, marker="s", markeredgecolor="k",
                      label="B: then gradient flow\n(■ where it stops)"),
               Line2D([], [], color="k", linestyle="--", linewidth=1.2, label="train loss = eps"),
               Line2D([], [], color="k", marker="*", markersize=12, linestyle="", label="β*")]
    key.legend(handles=handles, loc="center left", **LEGEND)
    figures.mark_diverged(fig, records.summary, empty=[whole, zoom] if not paths["gf"] else [])
    figures.save(fig, out)


def _draw_steps(ax, landings: np.ndarray) -> int:
    """Each large step as a curved arrow between markers (one arrow per distinct step, so a
    bounce back and forth reads as a lens, not as a band); a point landed on more than once is
    labelled with the steps that land there. Returns the number of steps taken."""
    ax.plot(*landings.T, "o", color=B, markersize=5, zorder=4)
    moves = [(tuple(a), tuple(b)) for a, b in zip(landings[:-1], landings[1:]) if not np.allclose(a, b)]
    for start, end in dict.fromkeys(moves):
        ax.annotate("", xy=end, xytext=start,
                    arrowprops={"arrowstyle": "-|>", "color": B, "lw": 0.8, "alpha": 0.8,
                                "connectionstyle": "arc3,rad=0.25", "shrinkA": 4, "shrinkB": 4})
    landed: dict[tuple, list[int]] = {}
    for step, (_, end) in enumerate(moves, start=1):
        landed.setdefault(end, []).append(step)
    for point, hits in landed.items():
        if len(hits) > 1:
            listed = ", ".join(map(str, hits[:2])) + (f", ..., {hits[-1]}" if len(hits) > 2 else "")
            left = point[0] <= np.mean(ax.get_xlim())
            ax.annotate(f"after steps {listed}\n({len(hits)}x)", xy=point, xytext=(-6 if left else 6, 10),
                        textcoords="offset points", ha="left" if left else "right", va="bottom",
                        fontsize=8, color=B, bbox={"fc": "white", "ec": "none", "alpha": 0.8, "pad": 1})
    return len(moves)


def _draw_test_vs_train(records: Records, paths: dict[str, list[dict]], out: Path) -> None:
    config = records.config["config"]
    eps = config["eps"]
    gamma, _ = typical_draw(config["n"], config["alpha"])
    fig, axes = figures.figure()
    ax = axes[0][0]
    if paths["gf"]:
        for name, label, color in (("gf", "gradient flow (A)", A),
                                   ("annealed", "large step, then flow (B)", B)):
            ax.loglog([p["train_loss"] for p in paths[name]], [p["test_loss"] for p in paths[name]],
                      ".-", markersize=3, label=label, color=color)
        ax.axvline(eps, color="k", linestyle=":", label="stop: train loss = eps")
        for color, curvature in ((A, gamma.min()), (B, gamma.max())):
            level = 0.5 / curvature  # eps lambda / gamma: all the train loss in one direction
            ax.axhline(level * eps, color=color, linestyle="--", linewidth=0.8, label=f"{level:.3g} eps")
        ax.invert_xaxis()
        ax.legend(**LEGEND)
    ax.set(xlabel="train loss (decreasing →)", ylabel="test loss",
           title="Same train loss, different test loss")
    figures.mark_diverged(fig, records.summary, empty=[] if paths["gf"] else [ax])
    figures.save(fig, out)


def _draw_ratio(records: Records, arrays: dict[str, np.ndarray] | None, out: Path) -> None:
    fig, axes = figures.figure()
    ax = axes[0][0]
    if arrays is not None:
        ratio, both = arrays["ratio"], arrays["both_seen"].astype(bool)
        bins = np.linspace(min(0.9, ratio.min()), max(2.1, ratio.max()), 60)
        ax.hist([ratio[both], ratio[~both]], bins=bins, stacked=True,
                label=[f"both coordinates seen ({both.mean():.1%})", f"one unseen ({(~both).mean():.1%})"])
        ax.legend(**LEGEND)
    ax.set(xlabel="test loss A / test loss B", ylabel="draws", title="Ratio over independent draws")
    figures.mark_diverged(fig, records.summary, empty=[] if arrays is not None else [ax])
    figures.save(fig, out)


def _draw_bounds(records: Records, arrays: dict[str, np.ndarray] | None, out: Path) -> None:
    """Measured vs bound per instance on the data's range: where a bound is looser than ten
    times the largest measured loss the instance is drawn on the right edge and counted, so the
    axes show the instances that test the bound instead of eighteen empty decades."""
    fig, axes = figures.figure(columns=2, width=5.4, height=4.4)
    for ax, (measured, bound, lower, words) in zip(axes[0], (
            ("gf_test", "gf_lower", True, "Gradient flow: test loss ≥ lower bound"),
            ("annealed_test", "annealed_upper", False, "Annealed: test loss ≤ upper bound"))):
        ax.set(xscale="log", yscale="log", xlabel="bound / eps", ylabel="measured test loss / eps",
               title=words)
        if arrays is not None:
            _bound_panel(ax, arrays[bound], arrays[measured], lower, records.config["seeds"][0])
    figures.mark_diverged(fig, records.summary, empty=list(axes[0]) if arrays is None else [])
    figures.save(fig, out)


def _bound_panel(ax, bound: np.ndarray, measured: np.ndarray, lower: bool, seed: int) -> None:
    slack = 1e-9  # the tolerance the recipe's bound_holds metrics use
    holds = measured >= bound * (1 - slack) if lower else measured <= bound * (1 + slack)
    top = measured.max()
    edge = min(bound.max(), 10 * top) if top > 0 else bound.max()
    inside = bound <= edge
    xspan = (bound.min() / 1.3, edge * 1.5)
    yspan = (min(measured.min(), bound.min()) / 1.3, top * 1.3)
    ax.plot(bound[inside], measured[inside], ".", color="C0", markersize=2, alpha=0.35,
            label=f"instance ({inside.sum():,})")
    if (~inside).any():
        ax.plot(np.full((~inside).sum(), edge * 1.2), measured[~inside], ">", color="0.5",
                markersize=3, alpha=0.35,
                label=f"bound > {edge:.3g} eps ({(~inside).sum():,}; on the edge)")
    line = np.geomspace(min(xspan[0], yspan[0]), max(xspan[1], yspan[1]), 10)
    ax.plot(line, line, "k--", linewidth=1, label="measured = bound")
    ax.fill_between(line, line, yspan[0] if lower else yspan[1], color="C3", alpha=0.08, linewidth=0,
                    label="bound violated")
    ax.set(xlim=xspan, ylim=yspan)
    figures.plain_log_ticks(ax.xaxis)
    figures.plain_log_ticks(ax.yaxis)
    ax.set_title(f"{ax.get_title()}\nholds on {holds.mean():.1%} of {bound.size:,} instances (seed {seed})")
    ax.legend(loc="lower right" if lower else "upper left", markerscale=3, **LEGEND)


def _draw_sweep(records: Records, sweep: list[dict], out: Path) -> None:
    fig, axes = figures.figure()
    ax = axes[0][0]
    if sweep:
        k = [p["step"] for p in sweep]
        ax.plot(k, [p["annealed_over_eps"] for p in sweep], "o-", color=B, label="annealed test loss / eps")
        ax.plot(k, [p["bound_over_eps"] for p in sweep], "s--", color="k", label="Lemma 2 bound / eps")
        ax.plot(k, [p["gf_over_eps"] for p in sweep], "^:", color=A, label="gradient flow test loss / eps")
        ax.set(xscale="symlog", yscale="log")
        ax.legend(**LEGEND)
    ax.set(xlabel="K (large-step GD steps)", ylabel="median over instances",
           title="Annealed loss approaches its bound as K grows")
    figures.mark_diverged(fig, records.summary, empty=[] if sweep else [ax])
    figures.save(fig, out)
