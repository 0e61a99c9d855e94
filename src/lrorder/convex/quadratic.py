"""Closed forms for gradient flow and gradient descent on an early-stopped quadratic.

Nakkiran (2020), Appendix A.1: with the population and sample covariances simultaneously
diagonalised (Sigma = U Lambda U^T, Sigma_hat = U Gamma U^T) and delta = U^T (beta - beta*),

    train loss  L_hat(delta) = sum_i gamma_i delta_i^2,   test loss  L_D(delta) = sum_i lambda_i delta_i^2,
    gradient flow        delta_i(t)   = delta_i(0) exp(-2 gamma_i t),
    gradient descent     delta_i(k+1) = (1 - 2 eta gamma_i) delta_i(k).

Every function takes arrays whose last axis is the coordinate i and whose leading axes are
independent problems (draws, instances), so many problems are solved at once.
"""

from __future__ import annotations

import numpy as np

NEWTON_ITERATIONS = 100


def train_loss(delta: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    return np.sum(gamma * delta**2, axis=-1)


def test_loss(delta: np.ndarray, lam: np.ndarray) -> np.ndarray:
    return np.sum(lam * delta**2, axis=-1)


def flow(delta0: np.ndarray, gamma: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Gradient flow on the train loss for time `t` (broadcast over the leading axes)."""
    return delta0 * np.exp(-2.0 * gamma * np.asarray(t)[..., None])


def flow_stop_time(delta0: np.ndarray, gamma: np.ndarray, eps: float | np.ndarray) -> np.ndarray:
    """The time at which gradient flow from `delta0` reaches train loss `eps` (0 if already there).

    Solves log L_hat(t) = log eps by Newton's method. log L_hat(t) is a log-sum-exp of affine
    functions of t, hence convex and decreasing, so Newton from t = 0 climbs monotonically
    to the root without overshooting.
    """
    with np.errstate(divide="ignore"):
        log_weight = np.log(gamma * delta0**2)
    log_eps = np.log(eps)
    t = np.zeros(delta0.shape[:-1])
    for _ in range(NEWTON_ITERATIONS):
        exponent = log_weight - 4.0 * gamma * t[..., None]
        top = np.max(exponent, axis=-1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        terms = np.exp(exponent - top)
        total = np.sum(terms, axis=-1)
        with np.errstate(divide="ignore"):
            excess = np.log(total) + top[..., 0] - log_eps
        slope = -4.0 * np.sum(terms * gamma, axis=-1) / np.where(total > 0, total, 1.0)
        step = np.where(excess > 0, -excess / np.where(slope < 0, slope, -1.0), 0.0)
        t = t + step
        if np.all(step <= 1e-13 * np.maximum(t, 1.0)):
            break
    return t


def flow_until(delta0: np.ndarray, gamma: np.ndarray, eps: float | np.ndarray) -> np.ndarray:
    """Algorithm A: the point where gradient flow from `delta0` is early-stopped at `eps`."""
    return flow(delta0, gamma, flow_stop_time(delta0, gamma, eps))


def descent_step(delta: np.ndarray, gamma: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """One gradient-descent step with step size `eta` (one per problem)."""
    return (1.0 - 2.0 * np.asarray(eta)[..., None] * gamma) * delta


def descent(delta0: np.ndarray, gamma: np.ndarray, eta: np.ndarray, steps: int,
            eps: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`steps` steps of gradient descent with step size `eta`, early-stopped at train loss `eps`.

    Returns the final point and the number of steps each problem took (fewer than `steps`
    where it reached `eps` first). The loop runs over steps; each step moves every problem.
    """
    delta, taken = delta0, np.zeros(delta0.shape[:-1], dtype=int)
    for _ in range(steps):
        live = train_loss(delta, gamma) > eps
        if not live.any():
            break
        delta = np.where(live[..., None], descent_step(delta, gamma, eta), delta)
        taken += live
    return delta, taken


def annealed(delta0: np.ndarray, gamma: np.ndarray, eta: np.ndarray, steps: int,
             eps: float | np.ndarray) -> np.ndarray:
    """Algorithm B: `steps` of gradient descent with step `eta`, then gradient flow, stopped at `eps`."""
    return flow_until(descent(delta0, gamma, eta, steps, eps)[0], gamma, eps)
