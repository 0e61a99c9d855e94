"""The computations of Nakkiran's convex recipes, one seed at a time: thousands of early-stopped
quadratics solved at once with the closed forms of `lrorder.convex.quadratic`."""

from __future__ import annotations

import time

import numpy as np

from lrorder.convex import problems, quadratic
from lrorder.convex.config import Claim1Config, Lemma2Config


def _mean(values: np.ndarray) -> float:
    """Mean over the draws that qualify; NaN (reported as n/a) when none does."""
    return float(values.mean()) if values.size else float("nan")


def _ratio_or_one(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.ones_like(a), where=b > 0)


def typical_draw(n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Sample-covariance spectrum and beta* of the draw the figures follow: the most likely
    unequal split of the n samples with both coordinates seen (two e1 and one e2 for n = 3)."""
    first = n // 2 + 1 if n >= 3 else 1
    return np.array([first, n - first]) / n, np.full(2, 100.0 / np.sqrt(alpha))


def claim1_seed(ctx, seed: int) -> dict[str, float]:
    """Claim 1 on `draws` independent draws of seed `seed`; logs the followed draw's paths."""
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
            _log_paths(ctx, seed)
    return {
        "p_both_seen": float(both.mean()),
        "gf_test_loss_over_eps": _mean(gf_test[both] / c.eps),
        "annealed_test_loss_over_eps": _mean(annealed_test[both] / c.eps),
        "test_loss_ratio": _mean(ratio[both]),
        "agree_when_one_unseen": _mean(agree[~both]),
        "solve_seconds": seconds,
    }

def _log_paths(ctx, seed: int) -> None:
    """Log both trajectories of the draw the figures follow (see `_typical_draw`)."""
    c: Claim1Config = ctx.config
    gamma, beta_star = typical_draw(c.n, c.alpha)
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


def lemma2_seed(ctx, seed: int) -> dict[str, float]:
    """Both bounds of Lemma 2 on `instances` random instances of seed `seed`, and the approach of
    the annealed loss to its bound as K grows."""
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
