"""Nakkiran (2020): learning-rate annealing helps generalization even in 2-D linear regression.

Both recipes solve thousands of early-stopped quadratics at once with the closed forms of
`lrorder.convex.quadratic`; a seed is an independent batch of draws.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from lrorder.convex import problems, quadratic
from lrorder.core import figures
from lrorder.core.config import at_least, between, each, greater, param
from lrorder.core.recipe import PaperValue, Recipe, register
from lrorder.core.report import fmt
from lrorder.core.rundir import Records

PAPER = "Nakkiran (2020), Learning rate annealing can provably help generalization, even for convex problems"


@dataclasses.dataclass(frozen=True)
class Claim1Config:
    alpha: float = param(0.01, "Claim 1's alpha: beta* = 100 alpha^-1/2 (1, 1); the flow's loss is "
                         ">= 1.5 eps (1 - alpha)", check=between(1e-9, 0.999))
    eps: float = param(0.1, "early-stopping train loss of both algorithms (the claim holds for "
                       "any 0 < eps < 1)", check=greater(0))
    steps: int = param(20, "K, large-step gradient-descent steps before the flow (the annealed "
                       "loss is within exp(-Omega(K)) of 0.75 eps)", check=at_least(0))
    n: int = param(3, "training samples per draw", check=at_least(1), paper=3)
    draws: int = param(100_000, "independent draws of the n samples per seed", check=at_least(1))


def _mean(values: np.ndarray) -> float:
    """Mean over the draws that qualify; NaN (reported as n/a) when none does."""
    return float(values.mean()) if values.size else float("nan")


def _ratio_or_one(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.ones_like(a), where=b > 0)


@register
class ConvexClaim1(Recipe):
    name = "convex-claim1"
    description = "2-D regression: gradient flow vs large step then flow, stopped at the same train loss"
    reference = f"{PAPER}, Claim 1 (Section 2, Appendix A.3)"
    Config = Claim1Config
    profiles = {"quick": {}, "full": {"draws": 1_000_000}}
    cost = {"quick": "~1 s CPU", "full": "~10 s CPU"}
    default_seeds = 3
    uses_torch = False

    def paper(self, config: Claim1Config) -> dict[str, PaperValue]:
        if config.n != 3:
            return {}
        sampling = 3.0 * np.sqrt(0.75 * 0.25 / config.draws)
        return {
            "p_both_seen": PaperValue(0.75, "Claim 1", "≈", float(sampling)),
            "gf_test_loss_over_eps": PaperValue(1.5 * (1 - config.alpha), "Claim 1.1", ">="),
            "annealed_test_loss_over_eps": PaperValue(0.75, "Claim 1.2", "<=", 1e-6),
            "test_loss_ratio": PaperValue(2.0, "Claim 1", "≈", 0.05),
            "agree_when_one_unseen": PaperValue(1.0, "Claim 1", "≈"),
        }

    def run_seed(self, ctx, seed: int) -> dict[str, float]:
        c: Claim1Config = ctx.config
        start = time.perf_counter()
        batch = problems.claim1(c.draws, c.n, c.alpha, c.eps, np.random.default_rng(seed))
        gf = quadratic.flow_until(batch.delta0, batch.gamma, batch.eps)
        annealed = quadratic.annealed(batch.delta0, batch.gamma, batch.large_step, c.steps, batch.eps)
        gf_test = quadratic.test_loss(gf, batch.lam)
        annealed_test = quadratic.test_loss(annealed, batch.lam)
        seconds = time.perf_counter() - start
        both = (batch.gamma > 0).all(axis=-1)
        ratio = _ratio_or_one(gf_test, annealed_test)
        agree = np.isclose(gf_test, annealed_test, rtol=1e-9, atol=0.0)
        ctx.log(seed=seed, step=0, draws=c.draws, seconds=seconds)
        print(f"convex-claim1 seed {seed}: {c.draws:,} draws solved in {seconds:.3f} s")
        if seed == ctx.seeds[0]:
            ctx.save_arrays("ratio", ratio=ratio.astype(np.float32), both_seen=both)
            if c.n >= 2:  # a draw that sees both coordinates exists to follow
                self._log_paths(ctx, seed)
        return {
            "p_both_seen": float(both.mean()),
            "gf_test_loss_over_eps": _mean(gf_test[both] / c.eps),
            "annealed_test_loss_over_eps": _mean(annealed_test[both] / c.eps),
            "test_loss_ratio": _mean(ratio[both]),
            "agree_when_one_unseen": _mean(agree[~both]),
            "solve_seconds": seconds,
        }

    def _log_paths(self, ctx, seed: int) -> None:
        """Log both trajectories of the draw the figures follow (see `_typical_draw`)."""
        c: Claim1Config = ctx.config
        gamma, beta_star = _typical_draw(c.n, c.alpha)
        lam, delta0, eta = np.full(2, 0.5), -beta_star, 1.0 / gamma.max()

        def log_point(path: str, step: int, t: float, delta: np.ndarray) -> None:
            beta = beta_star + delta
            ctx.log(seed=seed, step=step, path=path, t=t, beta1=beta[0], beta2=beta[1],
                    train_loss=quadratic.train_loss(delta, gamma),
                    test_loss=quadratic.test_loss(delta, lam))

        def log_flow(path: str, first_step: int, start: np.ndarray) -> None:
            """Points along the flow; `t` is flow time (for the annealed path, after its K steps)."""
            stop = quadratic.flow_stop_time(start, gamma, c.eps)
            times = np.concatenate([[0.0], np.geomspace(1e-3, 1.0, 199) * stop]) if stop > 0 else [0.0]
            for i, t in enumerate(times):
                log_point(path, first_step + i, t, quadratic.flow(start, gamma, t))

        log_flow("gf", 1, delta0)
        delta = delta0
        for k in range(c.steps):  # one draw: the large steps one by one, for the picture
            log_point("annealed", k + 1, 0.0, delta)
            if quadratic.train_loss(delta, gamma) <= c.eps:
                break
            delta = quadratic.descent_step(delta, gamma, eta)
        log_flow("annealed", c.steps + 1, delta)

    def draw(self, records: Records, figure_dir: Path) -> None:
        config = records.config["config"]
        eps = config["eps"]
        paths = {p: records.series(path=p) for p in ("gf", "annealed")}
        if paths["gf"]:
            gamma, beta_star = _typical_draw(config["n"], config["alpha"])
            _draw_paths(paths, eps, gamma, beta_star, figure_dir / "trajectories.png")
            _draw_test_vs_train(paths, eps, gamma, figure_dir / "test_vs_train.png")
        if (records.path / "arrays" / "ratio.npz").exists():
            _draw_ratio(records.array("ratio"), figure_dir / "ratio_distribution.png")

    def discuss(self, records: Records) -> list[str]:
        m = {name: fmt(mean) for name, mean in records.means().items()}
        return [f"Where both coordinates were sampled ({m['p_both_seen']} of draws), "
                f"gradient flow stops at {m['gf_test_loss_over_eps']} eps of test loss "
                f"and the annealed run at {m['annealed_test_loss_over_eps']} eps: the "
                f"same train loss, a test-loss ratio of {m['test_loss_ratio']}. "
                "The large step oscillates along the sharp direction (beta1) while it fits beta2, "
                "so the flow that follows spends the train-loss budget where the test loss "
                "weighs it least."]


def _typical_draw(n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Sample-covariance spectrum and beta* of the draw the figures follow: the most likely
    unequal split of the n samples with both coordinates seen (two e1 and one e2 for n = 3)."""
    first = n // 2 + 1 if n >= 3 else 1
    return np.array([first, n - first]) / n, np.full(2, 100.0 / np.sqrt(alpha))


def _draw_paths(paths: dict[str, list[dict]], eps: float, gamma: np.ndarray, star: np.ndarray,
                out: Path) -> None:
    fig, axes = figures.figure(columns=2)
    whole, zoom = axes[0]
    radius = np.sqrt(eps / gamma.min())
    angle = np.linspace(0, 2 * np.pi, 200)
    ellipse = star[:, None] + np.sqrt(eps / gamma)[:, None] * np.stack([np.cos(angle), np.sin(angle)])
    for ax, title, origin in ((whole, "from beta = 0", np.zeros(2)),
                              (zoom, "near beta*: the train-loss = eps ellipse", star)):
        for name, style in (("gf", "-"), ("annealed", "o-")):
            b1 = np.array([p["beta1"] for p in paths[name]]) - origin[0]
            b2 = np.array([p["beta2"] for p in paths[name]]) - origin[1]
            label = "gradient flow (A)" if name == "gf" else "large step, then flow (B)"
            ax.plot(b1, b2, style, markersize=3, label=label)
        ax.plot(*(ellipse - origin[:, None]), "k--", linewidth=1, label="train loss = eps")
        ax.plot(*(star - origin), "k*", markersize=10, label="beta*")
        shift = " - beta*" if origin.any() else ""
        ax.set(xlabel=f"beta1{shift} (sample curvature {gamma[0]:.2g})",
               ylabel=f"beta2{shift} (sample curvature {gamma[1]:.2g})", title=title)
    zoom.set(xlim=(-1.5 * radius, 1.5 * radius), ylim=(-1.5 * radius, 1.5 * radius), aspect="equal")
    whole.legend(fontsize=8)
    figures.save(fig, out)


def _draw_test_vs_train(paths: dict[str, list[dict]], eps: float, gamma: np.ndarray, out: Path) -> None:
    fig, axes = figures.figure()
    ax = axes[0][0]
    for name, label in (("gf", "gradient flow (A)"), ("annealed", "large step, then flow (B)")):
        ax.loglog([p["train_loss"] for p in paths[name]], [p["test_loss"] for p in paths[name]],
                  ".-", markersize=3, label=label)
    ax.axvline(eps, color="k", linestyle=":", label="stop: train loss = eps")
    for color, curvature in (("C0", gamma.min()), ("C1", gamma.max())):
        level = 0.5 / curvature  # eps lambda / gamma: all the train loss in one direction
        ax.axhline(level * eps, color=color, linestyle="--", linewidth=0.8, label=f"{level:.3g} eps")
    ax.invert_xaxis()
    ax.set(xlabel="train loss (decreasing →)", ylabel="test loss",
           title="Same train loss, different test loss")
    ax.legend(fontsize=8)
    figures.save(fig, out)


def _draw_ratio(arrays: dict[str, np.ndarray], out: Path) -> None:
    fig, axes = figures.figure()
    ax = axes[0][0]
    ratio, both = arrays["ratio"], arrays["both_seen"].astype(bool)
    bins = np.linspace(min(0.9, ratio.min()), max(2.1, ratio.max()), 60)
    ax.hist([ratio[both], ratio[~both]], bins=bins, stacked=True,
            label=[f"both coordinates seen ({both.mean():.1%})", f"one unseen ({(~both).mean():.1%})"])
    ax.set(xlabel="test loss A / test loss B", ylabel="draws", title="Ratio over independent draws")
    ax.legend(fontsize=8)
    figures.save(fig, out)


@dataclasses.dataclass(frozen=True)
class Lemma2Config:
    d: int = param(10, "dimension", check=at_least(2))
    small: int = param(3, "|S|, size of the small-eigenvalue block", check=at_least(1))
    gap: float = param(1.0, "p: every large eigenvalue is >= (1 + p) gamma_k", check=greater(0))
    alpha: float = param(0.1, "alpha of condition 2 (the flow's bound carries 1 - alpha)",
                         check=between(1e-9, 0.999))
    steps: int = param(20, "K, large-step gradient-descent steps before the flow", check=at_least(0))
    scale: float = param(100.0, "size of the initial residual delta(0)", check=greater(0))
    instances: int = param(10_000, "random instances per seed", check=at_least(1))
    sweep_steps: tuple[int, ...] = param((0, 1, 2, 4, 8, 16, 32, 64),
                                         "values of K for the approach-to-the-bound curve",
                                         check=each(at_least(0)))

    def problems(self) -> list[str]:
        return [] if self.small < self.d else [f"small must be < d (got small={self.small}, d={self.d})"]


@register
class ConvexLemma2(Recipe):
    name = "convex-lemma2"
    description = "Lemma 2 in d dimensions: both bounds checked on random instances"
    reference = f"{PAPER}, Lemma 2 (Appendix A.2)"
    Config = Lemma2Config
    profiles = {"quick": {}, "full": {"instances": 200_000, "d": 50, "small": 10}}
    cost = {"quick": "~1 s CPU", "full": "~1 min CPU"}
    default_seeds = 3
    uses_torch = False

    def paper(self, config: Lemma2Config) -> dict[str, PaperValue]:
        return {"gf_bound_holds": PaperValue(1.0, "Lemma 2.1"),
                "annealed_bound_holds": PaperValue(1.0, "Lemma 2.2")}

    def run_seed(self, ctx, seed: int) -> dict[str, float]:
        c: Lemma2Config = ctx.config
        batch = problems.lemma2(c.instances, c.d, c.small, c.gap, c.alpha, c.scale,
                                np.random.default_rng(seed))
        gf_test = quadratic.test_loss(quadratic.flow_until(batch.delta0, batch.gamma, batch.eps), batch.lam)
        for steps in sorted({*c.sweep_steps, c.steps}):
            end = quadratic.annealed(batch.delta0, batch.gamma, batch.large_step, steps, batch.eps)
            test = quadratic.test_loss(end, batch.lam)
            lower, upper = problems.lemma2_bounds(batch, c.alpha, c.small, steps)
            ctx.log(seed=seed, step=steps, annealed_over_eps=np.median(test / batch.eps),
                    bound_over_eps=np.median(upper / batch.eps),
                    gf_over_eps=np.median(gf_test / batch.eps))
            if steps == c.steps:
                annealed_test, annealed_upper, gf_lower = test, upper, lower
        if seed == ctx.seeds[0]:
            per_eps = {"gf_test": gf_test, "gf_lower": gf_lower,
                       "annealed_test": annealed_test, "annealed_upper": annealed_upper}
            ctx.save_arrays("instances", **{k: v / batch.eps for k, v in per_eps.items()})
        return {
            "gf_bound_holds": float(np.mean(gf_test >= gf_lower * (1 - 1e-9))),
            "annealed_bound_holds": float(np.mean(annealed_test <= annealed_upper * (1 + 1e-9))),
            "gf_margin_min": float(np.min(gf_test / gf_lower - 1)),
            "annealed_margin_min": float(np.min(1 - annealed_test / annealed_upper)),
            "gf_over_annealed_median": float(np.median(gf_test / annealed_test)),
        }

    def draw(self, records: Records, figure_dir: Path) -> None:
        if (records.path / "arrays" / "instances.npz").exists():
            _draw_bounds(records.array("instances"), figure_dir / "bounds.png")
        sweep = records.series(seed=records.config["seeds"][0])
        if sweep:
            fig, axes = figures.figure()
            ax = axes[0][0]
            k = [p["step"] for p in sweep]
            ax.plot(k, [p["annealed_over_eps"] for p in sweep], "o-", label="annealed test loss / eps")
            ax.plot(k, [p["bound_over_eps"] for p in sweep], "s--", label="Lemma 2 bound / eps")
            ax.plot(k, [p["gf_over_eps"] for p in sweep], "^:", label="gradient flow test loss / eps")
            ax.set(xscale="symlog", yscale="log", xlabel="K (large-step GD steps)",
                   ylabel="median over instances", title="Annealed loss approaches its bound as K grows")
            ax.legend(fontsize=8)
            figures.save(fig, figure_dir / "bound_vs_steps.png")

    def discuss(self, records: Records) -> list[str]:
        m = {name: fmt(mean) for name, mean in records.means().items()}
        return [f"The flow stays above its lower bound on {m['gf_bound_holds']} of the instances and "
                f"the annealed run below its upper bound on {m['annealed_bound_holds']}. The closest "
                f"calls (relative margin of the worst instance, mean over seeds) are "
                f"{m['gf_margin_min']} and {m['annealed_margin_min']}: the annealed bound is tight "
                f"once K has removed the tail. The median instance's flow ends with "
                f"{m['gf_over_annealed_median']}x the annealed test loss."]


def _draw_bounds(arrays: dict[str, np.ndarray], out: Path) -> None:
    fig, axes = figures.figure(columns=2)
    for ax, (measured, bound, title) in zip(axes[0], (
            ("gf_test", "gf_lower", "gradient flow: test >= lower bound"),
            ("annealed_test", "annealed_upper", "annealed: test <= upper bound"))):
        x, y = arrays[bound], arrays[measured]
        ax.loglog(x, y, ".", markersize=2, alpha=0.4)
        line = np.geomspace(min(x.min(), y.min()), max(x.max(), y.max()), 10)
        ax.loglog(line, line, "k--", linewidth=1, label="measured = bound")
        ax.set(xlabel="bound / eps", ylabel="measured test loss / eps", title=title)
        ax.legend(fontsize=8)
    figures.save(fig, out)
