"""The P/Q data distribution of Li, Wei & Ma (2019), Section 2 (eq. 2.1-2.5), batched over seeds.

An example is x = (x1, x2): x1 in R^d is the P part (two half-Gaussians with margin gamma0
along a unit w*), x2 in R^q_dim the Q part (alpha z or alpha (z + b zeta), |zeta| = r, zeta ⟂ z;
q_dim = d as in Section 2, or the last stride of Appendix F.2's convolution).
x2 always lies in the plane spanned by z and zeta, so it is stored exactly as its coordinates
in the orthonormal basis (z, zeta / r): (alpha, 0) for y = +1 and (alpha, alpha b r) for y = -1.
Because x2 = alpha * ray with alpha >= 0, it is also stored as (alpha, ray index), which lets a
ReLU block without pre-activation noise evaluate an example without x1 on the three rays z,
z + zeta, z - zeta only (positive homogeneity), see `lrorder.theory.model`. `embed_x2` maps back to R^q_dim.
"""

from __future__ import annotations

import dataclasses
import math

import torch

P_ONLY, Q_ONLY, BOTH = 0, 1, 2  # example types: eq. 2.2, 2.3, 2.4
KINDS = {"p_only": P_ONLY, "q_only": Q_ONLY, "both": BOTH}


@dataclasses.dataclass(frozen=True)
class Distribution:
    """The knobs of Section 2; `theory.config.paper_defaults` fills them from Assumption 3.3."""

    d: int
    r: float
    p0: float
    q0: float
    q_dim: int | None = None  # dimension of the space of z and zeta (unset: d, as in Section 2)
    alpha_min: float = 0.0  # Q's scale alpha ~ U[alpha_min, 1] (Section 2: U[0, 1])

    @property
    def gamma0(self) -> float:
        """Margin of P along w* (Section 2: gamma0 = 1/sqrt(d))."""
        return 1.0 / math.sqrt(self.d)

    def rays(self, device=None) -> torch.Tensor:
        """[3, 2]: z, z + zeta, z - zeta in the basis (z, zeta / r); ray 0 has label +1 (eq. 2.5)."""
        return torch.tensor([[1.0, 0.0], [1.0, self.r], [1.0, -self.r]], device=device)


@dataclasses.dataclass(frozen=True)
class Directions:
    """Per-seed unit w* (P), unit z and unit zeta/r (Q), drawn at random (not axis-aligned)."""

    w_star: torch.Tensor  # [S, d]
    z: torch.Tensor  # [S, q_dim]
    zeta_unit: torch.Tensor  # [S, q_dim], orthogonal to z

    @property
    def q_basis(self) -> torch.Tensor:
        """[S, 2, q_dim]: the orthonormal basis (z, zeta / r) of the Q plane."""
        return torch.stack([self.z, self.zeta_unit], dim=1)


@dataclasses.dataclass(frozen=True)
class Examples:
    """A batch of examples for S seeds: x1 is zero where there is no P part, alpha zero where no Q."""

    x1: torch.Tensor  # [S, n, d]
    alpha: torch.Tensor  # [S, n], the Q part's scale, U[alpha_min, 1]
    ray: torch.Tensor  # [S, n] long: 0 for y = +1, 1 or 2 (b = +1 or -1) for y = -1
    y: torch.Tensor  # [S, n] in {-1, +1}
    kind: torch.Tensor  # [S, n] long: P_ONLY, Q_ONLY or BOTH

    def x2(self, rays: torch.Tensor) -> torch.Tensor:
        """[S, n, 2]: the Q part in the basis (z, zeta / r)."""
        return self.alpha[..., None] * rays[self.ray]

    def has_p(self) -> torch.Tensor:
        return self.kind != Q_ONLY

    def has_q(self) -> torch.Tensor:
        return self.kind != P_ONLY

    def with_x1_only(self) -> Examples:
        return dataclasses.replace(self, alpha=torch.zeros_like(self.alpha))

    def with_x2_only(self) -> Examples:
        return dataclasses.replace(self, x1=torch.zeros_like(self.x1))


def directions(dist: Distribution, seeds: list[int], device=None) -> Directions:
    """Random orthonormal pair (z, zeta/r) and an independent unit w* per seed."""
    q_dim = dist.q_dim or dist.d
    w_stars, planes = [], []
    for seed in seeds:
        gen = torch.Generator().manual_seed(1_000_003 * seed + 1)
        gaussian = torch.randn(3, max(dist.d, q_dim), generator=gen, dtype=torch.float64)
        w_stars.append(gaussian[0, :dist.d] / gaussian[0, :dist.d].norm())
        planes.append(torch.linalg.qr(gaussian[1:, :q_dim].T)[0].T)  # [2, q_dim] orthonormal
    w_star, plane = (torch.stack(t).float().to(device) for t in (w_stars, planes))
    return Directions(w_star, plane[:, 0], plane[:, 1])


def sample(dist: Distribution, dirs: Directions, n: int, gen: torch.Generator) -> Examples:
    """n i.i.d. examples per seed from eq. 2.1-2.5, all seeds at once."""
    seeds, d = dirs.w_star.shape
    device = dirs.w_star.device

    def uniform(*shape):
        return torch.rand(*shape, generator=gen, device=device)

    y = torch.where(uniform(seeds, n) < 0.5, -1.0, 1.0)
    u = uniform(seeds, n)
    kind = torch.full_like(y, BOTH, dtype=torch.long)
    kind[u < dist.p0] = P_ONLY
    kind[(u >= dist.p0) & (u < dist.p0 + dist.q0)] = Q_ONLY
    noise = torch.randn(seeds, n, d, generator=gen, device=device) / math.sqrt(d)
    along = torch.einsum("snd,sd->sn", noise, dirs.w_star)
    # half-Gaussian: reflect the w* component to the label's side, then shift by the margin
    shift = (y * along.abs() - along + y * dist.gamma0)[..., None] * dirs.w_star[:, None, :]
    x1 = (noise + shift) * (kind != Q_ONLY)[..., None]
    b_negative = uniform(seeds, n) < 0.5
    ray = torch.where(y > 0, 0, torch.where(b_negative, 2, 1))
    alpha = (dist.alpha_min + (1 - dist.alpha_min) * uniform(seeds, n)) * (kind != P_ONLY)
    return Examples(x1=x1, alpha=alpha, ray=ray, y=y, kind=kind)


def embed_x2(x2_plane: torch.Tensor, q_basis: torch.Tensor) -> torch.Tensor:
    """[S, n, 2] plane coordinates -> [S, n, q_dim] vectors alpha z + alpha b zeta, given
    `Directions.q_basis`."""
    return torch.einsum("snk,skd->snd", x2_plane, q_basis)
