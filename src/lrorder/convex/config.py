"""Configs of Nakkiran's convex recipes: every knob typed, documented and checked."""

from __future__ import annotations

import dataclasses

from lrorder.core.config import at_least, between, each, greater, param


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

