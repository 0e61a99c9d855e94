"""Random problems of Nakkiran (2020) in the common eigenbasis: spectra and initial residuals.

Both settings are batches of independent quadratics `(gamma, lam, delta0)`, each array of shape
(batch, d), which `lrorder.convex.quadratic` solves all at once.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Quadratics:
    """A batch of early-stopped least-squares problems (Appendix A.1 notation)."""

    gamma: np.ndarray   # sample-covariance eigenvalues, (batch, d)
    lam: np.ndarray     # population-covariance eigenvalues, (batch, d)
    delta0: np.ndarray  # initial residual U^T (beta0 - beta*), (batch, d)
    eps: np.ndarray     # early-stopping train loss, (batch,)

    @property
    def large_step(self) -> np.ndarray:
        """eta = 1 / gamma_1: the top eigendirection oscillates, the others contract."""
        return 1.0 / self.gamma.max(axis=-1)


def claim1(draws: int, n: int, alpha: float, eps: float, rng: np.random.Generator) -> Quadratics:
    """Claim 1: x uniform on {e1, e2}, y = <beta*, x>, beta* = 100 alpha^-1/2 (1, 1), beta0 = 0.

    The sample covariance of n draws is diag(c1/n, c2/n) with c1 ~ Binomial(n, 1/2); the
    standard basis already diagonalises both covariances.
    """
    first = rng.binomial(n, 0.5, size=draws)
    gamma = np.stack([first, n - first], axis=-1) / n
    beta_star = 100.0 / np.sqrt(alpha)
    return Quadratics(gamma=gamma, lam=np.full((draws, 2), 0.5),
                      delta0=np.full((draws, 2), -beta_star), eps=np.full(draws, eps))


def lemma2(instances: int, d: int, small: int, gap: float, alpha: float, scale: float,
           rng: np.random.Generator) -> Quadratics:
    """Random instances meeting both conditions of Lemma 2, with S the last `small` coordinates.

    gamma_1 = 1 is the unique top eigenvalue; the other "large" eigenvalues lie in
    [(1 + gap) g, 1) and the small block in [g / 10, g] with gamma_k = g, so every large one
    is at least (1 + gap) gamma_k. Population eigenvalues are uniform in [0.1, 1], initial
    residuals Gaussian of size `scale`. eps is drawn below the largest value both conditions
    allow: gamma_1 delta_1(0)^2 > eps (1) and the condition-2 bound with p = gap.
    """
    g = 0.5 / (1.0 + gap)
    large = rng.uniform((1.0 + gap) * g, 1.0, size=(instances, d - small))
    large[:, 0] = 1.0
    small_block = rng.uniform(g / 10.0, g, size=(instances, small))
    small_block[:, 0] = g
    gamma = np.concatenate([large, small_block], axis=-1)
    lam = rng.uniform(0.1, 1.0, size=(instances, d))
    delta0 = scale * rng.standard_normal((instances, d))
    weight = gamma * delta0**2
    weakest = weight[:, -small:].min(axis=-1)
    condition2 = (alpha * (small * weakest) ** (1.0 + gap) / weight[:, :-small].sum(axis=-1)) ** (1.0 / gap)
    eps = rng.uniform(0.05, 0.95, size=instances) * np.minimum(condition2, weight[:, 0])
    return Quadratics(gamma=gamma, lam=lam, delta0=delta0, eps=eps)


def lemma2_bounds(problems: Quadratics, alpha: float, small: int,
                  steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Lemma 2's lower bound on the flow's test loss and upper bound on the annealed one.

    The annealed bound's exp(-Omega(K)) is the proof's explicit term: after K steps with
    eta = 1/gamma_1 every non-top coordinate has shrunk by c^(K/2), c = max |1 - 2 gamma_j/gamma_1|^2,
    and the flow afterwards only shrinks it further.
    """
    ratio = problems.lam / problems.gamma
    lower = problems.eps * (1.0 - alpha) * ratio[:, -small:].min(axis=-1)
    top = problems.gamma == problems.gamma.max(axis=-1, keepdims=True)
    contraction = np.where(top, 0.0, (1.0 - 2.0 * problems.gamma * problems.large_step[:, None]) ** 2)
    off_top = np.where(top, 0.0, problems.lam * problems.delta0**2)
    tail = contraction.max(axis=-1) ** steps * off_top.sum(axis=-1)
    upper = problems.eps * np.where(top, ratio, 0.0).max(axis=-1) + tail
    return lower, upper
