"""The two-layer ReLU network f(u, U; x) = u^T relu(U x) of Section 2, batched over methods and seeds.

Weights are [M, S, k, f] (method, seed, neuron, feature); the second layer u is fixed and shared
by the methods of a seed. A network is a tuple of blocks, each seeing one input:
- structured (Section 2): W sees x1 (f = d) and V sees x2 (f = 2, the plane basis of
  `lrorder.theory.data`; V's other d - 2 columns meet no data, so they never reach the output
  and their gradient is zero: keeping only the plane is exact, tested against the R^d form);
- unstructured U: one block sees x = (x1, x2) (f = d + 2, the same reduction).
Gradients are derived by hand (tested against autograd): for out = u^T relu(A x + xi),
d out / dA = (u * 1(A x + xi > 0)) x^T.

A block that sees x2 alone, without pre-activation noise, is evaluated on the rays z, z + zeta,
z - zeta only: relu is positively homogeneous, so g(alpha ray) = alpha g(ray). This makes the
cost of V independent of the number of examples, and is exact. With pre-activation noise shared
by the examples (Appendix F.1) it still is, through sorted thresholds (`_NoisyRaysPass`); only
per-example noise evaluates V on every example.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from lrorder.theory.data import Examples


@dataclasses.dataclass(frozen=True)
class Block:
    """`sees` is "x1" (the W block), "x2" (the V block) or "x" (the unstructured U)."""

    sees: str
    u: torch.Tensor  # [S, k], entries +-1/sqrt(k), fixed (Section 2)

    @property
    def width(self) -> int:
        return self.u.shape[-1]


@dataclasses.dataclass(frozen=True)
class Architecture:
    blocks: tuple[Block, ...]
    rays: torch.Tensor  # [3, 2], `Distribution.rays`
    d: int

    def features(self, block: Block) -> int:
        return {"x1": self.d, "x2": 2, "x": self.d + 2}[block.sees]


def second_layer(seeds: int, k: int, balanced: bool, gen: torch.Generator, device=None) -> torch.Tensor:
    """[S, k] entries +-1/sqrt(k): i.i.d. signs (Section 2), or exactly half of each sign in a random
    order, which removes the random output offset sum_j u_j E relu(<w_j, x>) of a bias-free net."""
    uniform = torch.rand(seeds, k, generator=gen, device=device)
    if balanced:
        negative = uniform.argsort(-1).argsort(-1) < k // 2  # a random half of the neurons
    else:
        negative = uniform < 0.5
    return torch.where(negative, -1.0, 1.0) / math.sqrt(k)


def architecture(structure: str, widths: tuple[int, ...], d: int, rays: torch.Tensor, seeds: int,
                 gen: torch.Generator, balanced: bool = True) -> Architecture:
    """"wv": blocks W (widths[0] neurons) and V (widths[1]); "u": one block of widths[0] neurons.

    u's scale is 1/sqrt(k) with k the block's own width: the paper's 1/sqrt(m) for each block seen
    as its own two-layer net, so that a narrow W beside a wide V still moves.
    """
    sees = ("x1", "x2") if structure == "wv" else ("x",)
    blocks = tuple(Block(s, second_layer(seeds, k, balanced, gen, rays.device)) for s, k in zip(sees, widths))
    return Architecture(blocks, rays, d)


def init_weights(arch: Architecture, methods: int, tau0: float, gen: torch.Generator) -> list[torch.Tensor]:
    """U0 ~ N(0, tau0^2) (Section 3); every method of a seed starts from the same U0 (paired runs)."""
    weights = []
    for block in arch.blocks:
        seeds, k = block.u.shape
        draw = tau0 * torch.randn(seeds, k, arch.features(block), generator=gen, device=block.u.device)
        weights.append(draw.expand(methods, -1, -1, -1).clone())
    return weights


def _inputs(block: Block, ex: Examples, rays: torch.Tensor) -> torch.Tensor:
    if block.sees == "x1":
        return ex.x1
    if block.sees == "x2":
        return ex.x2(rays)
    return torch.cat([ex.x1, ex.x2(rays)], dim=-1)


@dataclasses.dataclass
class _Pass:
    """One block's forward pass, kept for its gradient."""

    x: torch.Tensor  # [S, n', f]: the examples, or the 3 rays
    pre: torch.Tensor  # [M, S, n', k], pre-activations including the noise
    u: torch.Tensor
    ex: Examples | None  # set when evaluated on the rays: maps rays back to examples

    def grad(self, coeff: torch.Tensor) -> torch.Tensor:
        """sum_n coeff[m, s, n] d out_n / d A  ->  [M, S, k, f]."""
        if self.ex is not None:  # d(alpha g(ray)) = alpha d g(ray): gather the weights per ray
            ray = self.ex.ray.expand_as(coeff)
            coeff = coeff.new_zeros(*coeff.shape[:-1], 3).scatter_add_(-1, ray, coeff * self.ex.alpha)
        active = (self.pre > 0) * coeff[..., None] * self.u[:, None, :]
        return torch.einsum("msnk,snf->mskf", active, self.x)


@dataclasses.dataclass
class _NoisyRaysPass:
    """V on the rays with one pre-activation noise value per neuron, shared by the examples (F.2).

    Neuron j is active on alpha * ray iff alpha a_j + xi_j > 0 with a_j = <v_j, ray>: a threshold
    t_j = -xi_j / a_j on alpha (above it if a_j > 0, below if a_j < 0). Sorting the thresholds
    (forward) and the alphas (gradient) turns the sums over active neurons or examples into prefix
    sums: O((n + k) log) per ray instead of O(n k), exact (ties between a threshold and an alpha
    have probability 0).
    """

    rays: torch.Tensor  # [S, 3, 2]
    threshold: torch.Tensor  # [M, S, 3, k]
    rising: torch.Tensor  # [M, S, 3, k]: active above the threshold (a_j > 0, or a_j = 0 < xi_j)
    falling: torch.Tensor  # [M, S, 3, k]: active below it (a_j < 0)
    u: torch.Tensor
    ex: Examples

    @classmethod
    def forward(cls, weight, u, xi, ex, rays) -> tuple[torch.Tensor, _NoisyRaysPass]:
        a = torch.einsum("srf,mskf->msrk", rays, weight)
        b = xi.expand_as(a)
        rising, falling = (a > 0) | ((a == 0) & (b > 0)), a < 0
        threshold = torch.where(a != 0, -b / torch.where(a != 0, a, 1.0), -torch.inf).contiguous()
        alpha = ex.alpha[None, :, None, :].expand(*a.shape[:-1], -1).contiguous()
        key, order = threshold.sort(-1)
        ua, ub = u[:, None] * a, u[:, None] * b
        weights = torch.stack([ua * rising, ub * rising, ua * falling, ub * falling])  # [4, M, S, 3, k]
        sums = F.pad(torch.gather(weights, -1, order.expand_as(weights)).cumsum(-1), (1, 0))
        below = sums.gather(-1, torch.searchsorted(key, alpha).expand(4, *alpha.shape))  # threshold < alpha
        taken = below[:2] + sums[2:, ..., -1:] - below[2:]  # rising below alpha, falling above it
        per_ray = alpha * taken[0] + taken[1]
        out = torch.gather(per_ray, 2, ex.ray[None, :, None, :].expand(len(weight), -1, 1, -1))[:, :, 0]
        return out, cls(rays, threshold, rising, falling, u, ex)

    def grad(self, coeff: torch.Tensor) -> torch.Tensor:
        alpha, order = self.ex.alpha.sort(-1)
        on_ray = self.ex.ray[:, None, :] == torch.arange(3, device=coeff.device)[:, None]  # [S, 3, n]
        weights = (coeff * self.ex.alpha)[:, :, None, :] * on_ray  # [M, S, 3, n]
        sums = F.pad(torch.gather(weights, -1, order[None, :, None].expand_as(weights)).cumsum(-1), (1, 0))
        alpha = alpha[None, :, None].expand(*self.threshold.shape[:-1], -1).contiguous()
        below = sums.gather(-1, torch.searchsorted(alpha, self.threshold))  # examples with alpha < threshold
        above = sums[..., -1:] - below
        per_neuron = torch.where(self.rising, above, torch.where(self.falling, below, 0.0))
        return torch.einsum("msrk,srf->mskf", per_neuron * self.u[:, None, :], self.rays)


def _block_forward(block: Block, weight: torch.Tensor, ex: Examples, rays: torch.Tensor,
                   xi: torch.Tensor | None) -> tuple[torch.Tensor, _Pass | _NoisyRaysPass]:
    """One block's output [M, S, n]: V on the three rays where it can be, else on every example."""
    seeds, n = ex.y.shape
    if block.sees == "x2" and xi is not None and xi.shape[-2] == 1:
        return _NoisyRaysPass.forward(weight, block.u, xi, ex, rays.expand(seeds, 3, 2))
    on_rays = block.sees == "x2" and xi is None
    x = rays.expand(seeds, 3, 2) if on_rays else _inputs(block, ex, rays)
    pre = torch.einsum("snf,mskf->msnk", x, weight)
    if xi is not None:
        pre = pre + xi
    out = torch.einsum("msnk,sk->msn", pre.clamp(min=0), block.u)
    if on_rays:
        out = ex.alpha * torch.gather(out, -1, ex.ray.expand(len(weight), seeds, n))
    return out, _Pass(x, pre, block.u, ex if on_rays else None)


def _forward(arch: Architecture, weights: list[torch.Tensor], ex: Examples,
             noise: list[torch.Tensor | None] | None = None) -> tuple[torch.Tensor, list]:
    out, passes = 0.0, []
    for block, weight, xi in zip(arch.blocks, weights, noise or [None] * len(weights)):
        block_out, block_pass = _block_forward(block, weight, ex, arch.rays, xi)
        out = out + block_out
        passes.append(block_pass)
    return out, passes


def output(arch: Architecture, weights: list[torch.Tensor], ex: Examples,
           noise: list[torch.Tensor | None] | None = None) -> torch.Tensor:
    """f(u, U; x) for every method, seed and example: [M, S, n]."""
    return _forward(arch, weights, ex, noise)[0]


def logistic(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example logistic loss log(1 + exp(-y f)) (Section 2)."""
    return F.softplus(-y * out)


def loss_and_grad(arch: Architecture, weights: list[torch.Tensor], ex: Examples,
                  noise: list[torch.Tensor | None] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Per-example train loss [M, S, n] and the gradient of its mean (without the lambda term)."""
    out, passes = _forward(arch, weights, ex, noise)
    loss = logistic(out, ex.y)
    coeff = -ex.y * torch.sigmoid(-ex.y * out) / ex.y.shape[-1]
    return loss, [p.grad(coeff) for p in passes]


def parts(arch: Architecture, weights: list[torch.Tensor], ex: Examples) -> tuple[torch.Tensor, torch.Tensor]:
    """r(x) = f on (x1, 0) and g(x) = f on (0, x2) (eq. 3.5-3.6): the network's P and Q parts."""
    return output(arch, weights, ex.with_x1_only()), output(arch, weights, ex.with_x2_only())


def lemma42(arch: Architecture, weights: list[torch.Tensor]) -> torch.Tensor:
    """|g(z + zeta) + g(z - zeta) - 2 g(z)| per method and seed (Lemma 4.2): 0 for any g linear
    on the Q plane, so Q (not linearly separable) is representable only when it is large."""
    seeds = arch.blocks[0].u.shape[0]
    device = arch.rays.device
    ones = torch.ones(seeds, 3, device=device)
    rays = Examples(x1=torch.zeros(seeds, 3, arch.d, device=device), alpha=ones,
                    ray=torch.arange(3, device=device).expand(seeds, 3), y=ones,
                    kind=torch.zeros(seeds, 3, dtype=torch.long, device=device))
    g = output(arch, weights, rays)
    return (g[..., 1] + g[..., 2] - 2 * g[..., 0]).abs()
