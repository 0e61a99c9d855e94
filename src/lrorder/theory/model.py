"""The two-layer ReLU network f(u, U; x) = u^T relu(U x) of Section 2, batched over methods and seeds.

Weights are [M, S, k, f] (method, seed, neuron, feature); the second layer u is fixed and shared
by the methods of a seed. A network is a tuple of blocks, each seeing one input:
- structured (Section 2): W sees x1 (f = d) and V sees x2 (f = 2, the plane basis of
  `lrorder.theory.data`; V's other d - 2 columns meet no data, so they never reach the output
  and their gradient is zero: keeping only the plane is exact, tested against the R^d form);
- unstructured U: one block sees x = (x1, x2) (f = d + 2, the same reduction);
- convolution (Appendix F.2): k filters shared by p patches of x = (x1, x2) embedded in full,
  out = sum_i u_i^T relu(U x^(i)) with a second layer u_i per patch.
A block sees its input as p patches of f features (p = 1 but for the convolution).
Gradients are derived by hand (tested against autograd): for out = sum_i u_i^T relu(A x^(i) + xi_i),
d out / dA = sum_i (u_i * 1(A x^(i) + xi_i > 0)) x^(i)T.

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

from lrorder.theory.data import Examples, embed_x2


@dataclasses.dataclass(frozen=True)
class Convolution:
    """Appendix F.2's geometry: `count` patches of `size` coordinates at stride size / count over
    x = (x1, x2), whose last size / count coordinates hold x2 (F.2's simplifying assumption);
    `q_basis` [S, 2, size / count] embeds x2's plane coordinates (z, zeta / r) there."""

    size: int
    count: int
    q_basis: torch.Tensor

    def patches(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """[S, n, count, size] patches of x = (x1, x2), x2 [S, n, 2] given in the plane basis."""
        x = torch.cat([x1, embed_x2(x2, self.q_basis)], dim=-1)
        patches = x.unfold(-1, self.size, self.size // self.count)
        assert patches.shape[-2] == self.count, "x1 and x2 must fill the patches exactly"
        return patches


@dataclasses.dataclass(frozen=True)
class Block:
    """`sees` is "x1" (the W block), "x2" (the V block), "x" (the unstructured U) or "patches" (the
    convolution of `conv`)."""

    sees: str
    u: torch.Tensor  # [S, hidden units] (patch-major for the convolution), fixed (Section 2)
    conv: Convolution | None = None

    @property
    def width(self) -> int:
        """Hidden units: patches x filters."""
        return self.u.shape[-1]

    @property
    def patches(self) -> int:
        return self.conv.count if self.conv else 1

    @property
    def filters(self) -> int:
        """Rows of the block's weight (its neurons; shared by the patches)."""
        return self.width // self.patches

    def per_patch_u(self) -> torch.Tensor:
        """[S, patches, filters]: u_i of every patch i."""
        return self.u.unflatten(-1, (self.patches, self.filters))


@dataclasses.dataclass(frozen=True)
class Architecture:
    blocks: tuple[Block, ...]
    rays: torch.Tensor  # [3, 2], `Distribution.rays`
    d: int

    def features(self, block: Block) -> int:
        if block.conv:
            return block.conv.size
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
                 gen: torch.Generator, balanced: bool = True,
                 conv: Convolution | None = None) -> Architecture:
    """"wv": blocks W (widths[0] neurons) and V (widths[1]); "u": one block of widths[0] neurons;
    "conv": widths[0] filters over the patches of `conv`. d is the dimension of x1.

    u's scale is 1/sqrt(k) with k the block's own width: the paper's 1/sqrt(m) for each block seen
    as its own two-layer net, so that a narrow W beside a wide V still moves; for the convolution,
    each patch's u_i in R^m has entries +-1/sqrt(m) (Appendix F.2), balanced per patch.
    """
    if structure == "conv":
        u = second_layer(seeds * conv.count, widths[0], balanced, gen, rays.device).view(seeds, -1)
        return Architecture((Block("patches", u, conv),), rays, d)
    sees = ("x1", "x2") if structure == "wv" else ("x",)
    blocks = tuple(Block(s, second_layer(seeds, k, balanced, gen, rays.device)) for s, k in zip(sees, widths))
    return Architecture(blocks, rays, d)


def concat_seeds(archs: list[Architecture]) -> Architecture:
    """One architecture for all seeds from one per seed (same structure, per-seed u and Q basis)."""
    def merged(blocks: tuple[Block, ...]) -> Block:
        conv = blocks[0].conv and dataclasses.replace(
            blocks[0].conv, q_basis=torch.cat([b.conv.q_basis for b in blocks]))
        return Block(blocks[0].sees, torch.cat([b.u for b in blocks]), conv)

    return Architecture(tuple(merged(b) for b in zip(*(a.blocks for a in archs))), archs[0].rays, archs[0].d)


def init_weights(arch: Architecture, methods: int, tau0: float, gen: torch.Generator) -> list[torch.Tensor]:
    """U0 ~ N(0, tau0^2) (Section 3); every method of a seed starts from the same U0 (paired runs)."""
    weights = []
    for block in arch.blocks:
        seeds = block.u.shape[0]
        draw = tau0 * torch.randn(seeds, block.filters, arch.features(block), generator=gen,
                                  device=block.u.device)
        weights.append(draw.expand(methods, -1, -1, -1).clone())
    return weights


def _inputs(block: Block, ex: Examples, rays: torch.Tensor) -> torch.Tensor:
    """[S, n, patches, f]: what the block sees of every example."""
    if block.sees == "patches":
        return block.conv.patches(ex.x1, ex.x2(rays))
    if block.sees == "x1":
        return ex.x1[:, :, None]
    if block.sees == "x2":
        return ex.x2(rays)[:, :, None]
    return torch.cat([ex.x1, ex.x2(rays)], dim=-1)[:, :, None]


@dataclasses.dataclass
class _Pass:
    """One block's forward pass, kept for its gradient."""

    x: torch.Tensor  # [S, n', p, f]: the examples' patches, or the 3 rays
    pre: torch.Tensor  # [M, S, n', p, k], pre-activations including the noise
    u: torch.Tensor  # [S, p, k]
    ex: Examples | None  # set when evaluated on the rays: maps rays back to examples

    def grad(self, coeff: torch.Tensor) -> torch.Tensor:
        """sum_n coeff[m, s, n] d out_n / d A  ->  [M, S, k, f]."""
        if self.ex is not None:  # d(alpha g(ray)) = alpha d g(ray): gather the weights per ray
            ray = self.ex.ray.expand_as(coeff)
            coeff = coeff.new_zeros(*coeff.shape[:-1], 3).scatter_add_(-1, ray, coeff * self.ex.alpha)
        active = (self.pre > 0) * coeff[..., None, None] * self.u[:, None]
        return torch.einsum("msnpk,snpf->mskf", active, self.x)


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
    x = rays[:, None].expand(seeds, 3, 1, 2) if on_rays else _inputs(block, ex, rays)
    pre = torch.einsum("snpf,mskf->msnpk", x, weight)
    if xi is not None:
        pre = pre + xi.unflatten(-1, (block.patches, block.filters))
    u = block.per_patch_u()
    out = torch.einsum("msnpk,spk->msn", pre.clamp(min=0), u)
    if on_rays:
        out = ex.alpha * torch.gather(out, -1, ex.ray.expand(len(weight), seeds, n))
    return out, _Pass(x, pre, u, ex if on_rays else None)


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
