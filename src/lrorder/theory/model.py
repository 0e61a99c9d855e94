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

Without pre-activation noise, a block evaluates an example whose x1 is zero (a Q-only example;
every example, for V, which sees x2 alone) on its ray z, z + zeta or z - zeta only: relu is
positively homogeneous, so g(alpha ray) = alpha g(ray). This makes V's arithmetic independent
of the number of examples, spares U and the convolution their Q-only rows, and is exact. With
pre-activation noise shared by the examples (Appendix F.1) V still is evaluated on the rays,
through sorted thresholds (`_NoisyRaysPass`); only per-example noise evaluates V on every example.

Every block skips its all-zero patches (x1 of a Q-only example, x2 of a P-only one: half of
theory-order's W rows, a third of theory-conv's patches; without noise also the rows of the
examples taken on their rays) and computes the rest in cache-sized chunks (`_block_forward`);
both are exact.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from lrorder.theory.data import Q_ONLY, Examples, embed_x2

CHUNK = 2**20  # hidden units computed at once (4 MB): see `_block_forward`


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
class _Chunk:
    """The hidden units of some rows of one patch for a run of seeds, kept for the gradient."""

    seeds: slice
    patch: int
    rows: torch.Tensor  # [S', r]: which examples (or rays) of each seed
    x: torch.Tensor  # [S', r, f]: their patch
    hidden: torch.Tensor  # [M, S', r, k]: relu of the pre-activations (noise included)


@dataclasses.dataclass
class _Pass:
    """One block's forward pass, kept for its gradient."""

    chunks: list[_Chunk]
    u: torch.Tensor  # [S, p, k]
    shape: torch.Size  # of the block's weight, [M, S, k, f]
    ex: Examples
    by_ray: torch.Tensor | None  # [S, n]: the examples evaluated on their ray (rows n to n + 2)

    def grad(self, coeff: torch.Tensor) -> torch.Tensor:
        """sum_n coeff[m, s, n] d out_n / d A  ->  [M, S, k, f]. The activity masks overwrite the
        kept hidden units (no second buffer), so a pass gives one gradient."""
        if self.by_ray is not None:  # d(alpha g(ray)) = alpha d g(ray): sum the weights per ray
            on_ray = coeff.new_zeros(*coeff.shape[:-1], 3).scatter_add_(
                -1, self.ex.ray.expand_as(coeff), coeff * self.ex.alpha * self.by_ray)
            coeff = torch.cat([coeff, on_ray], dim=-1)
        grad = coeff.new_zeros(self.shape).transpose(-1, -2)  # [M, S, f, k]: the faster product
        for c in self.chunks:
            weights = coeff[:, c.seeds].gather(-1, c.rows.expand(len(coeff), -1, -1))
            active = c.hidden.gt_(0)
            per_filter = (weights[..., None] * c.x).transpose(-1, -2) @ active  # [M, S', f, k]
            grad[:, c.seeds] += per_filter * self.u[c.seeds, c.patch, None]
        return grad.transpose(-1, -2)


@dataclasses.dataclass
class _NoisyRaysPass:
    """V on the rays with one pre-activation noise value per neuron, shared by the examples (F.2).

    Neuron j is active on alpha * ray iff alpha a_j + xi_j > 0 with a_j = <v_j, ray>: above the
    threshold t_j = -xi_j / a_j if a_j > 0, below it if a_j < 0 (always if a_j = 0 < xi_j). The
    rank of t_j among the seed's sorted alphas (one searchsorted) turns the sums over the neurons
    active on an example (forward) and over the examples a neuron is active on (gradient) into
    prefix sums: O(k log n + n) per ray instead of O(n k), exact (a threshold ties an alpha with
    probability 0).
    """

    rays: torch.Tensor  # [S, 3, 2]
    rank: torch.Tensor  # [M, S, 3, k]: how many of the seed's alphas lie below t_j
    rising: torch.Tensor  # [M, S, 3, k]: active above the threshold (a_j > 0, or a_j = 0 < xi_j)
    falling: torch.Tensor  # [M, S, 3, k]: active below it (a_j < 0)
    u: torch.Tensor
    order: torch.Tensor  # [S, n]: the examples by increasing alpha
    ex: Examples

    @classmethod
    def forward(cls, weight, u, xi, ex, rays) -> tuple[torch.Tensor, _NoisyRaysPass]:
        a = torch.einsum("srf,mskf->msrk", rays, weight)
        b = xi.expand_as(a)
        rising, falling = (a > 0) | ((a == 0) & (b > 0)), a < 0
        threshold = torch.where(a != 0, -b / torch.where(a != 0, a, 1.0), -torch.inf).contiguous()
        alpha, order = ex.alpha.sort(-1)
        n = alpha.shape[-1]
        rank = torch.searchsorted(alpha[None, :, None].expand(*a.shape[:-1], n).contiguous(), threshold)
        ua, ub = u[:, None] * a, u[:, None] * b
        weights = torch.stack([ua * rising, ub * rising, ua * falling, ub * falling])  # [4, M, S, 3, k]
        by_rank = weights.new_zeros(*weights.shape[:-1], n + 1).scatter_add_(
            -1, rank.expand_as(weights), weights)
        sums = by_rank.cumsum(-1)  # [..., i]: neurons whose threshold lies below the i-th alpha
        taken = sums[:2, ..., :n] + sums[2:, ..., n:] - sums[2:, ..., :n]  # rising below, falling above
        per_ray = alpha[:, None] * taken[0] + taken[1]  # [M, S, 3, n], examples by alpha
        ray = ex.ray.gather(-1, order)[None, :, None].expand(len(weight), -1, 1, -1)
        by_alpha = torch.gather(per_ray, 2, ray)[:, :, 0]
        out = torch.empty_like(by_alpha).scatter_(-1, order.expand_as(by_alpha), by_alpha)
        return out, cls(rays, rank, rising, falling, u, order, ex)

    def grad(self, coeff: torch.Tensor) -> torch.Tensor:
        on_ray = self.ex.ray[:, None, :] == torch.arange(3, device=coeff.device)[:, None]  # [S, 3, n]
        weights = (coeff * self.ex.alpha)[:, :, None, :] * on_ray  # [M, S, 3, n]
        by_alpha = torch.gather(weights, -1, self.order[None, :, None].expand_as(weights))
        sums = F.pad(by_alpha.cumsum(-1), (1, 0))
        below = sums.gather(-1, self.rank)  # examples whose alpha lies below the threshold
        above = sums[..., -1:] - below
        per_neuron = torch.where(self.rising, above, torch.where(self.falling, below, 0.0))
        return torch.einsum("msrk,srf->mskf", per_neuron * self.u[:, None, :], self.rays)


@dataclasses.dataclass(frozen=True)
class _Rows:
    """What a block's chunks read: per chunk (patch, seeds, rows [S', r], their inputs [S', r, f]);
    per patch the rows left out, [S, n' - r] (all zero)."""

    chunks: list[tuple[int, slice, torch.Tensor, torch.Tensor]]
    left_out: list[torch.Tensor]


def _rays(seeds: int, d: int, rays: torch.Tensor) -> Examples:
    """The three rays as Q-only examples of every seed, alpha = 1."""
    ones = rays.new_ones(seeds, 3)
    which = torch.arange(3, device=rays.device).expand(seeds, 3)
    return Examples(x1=rays.new_zeros(seeds, 3, d), alpha=ones, ray=which, y=ones,
                    kind=torch.full_like(which, Q_ONLY))


def _rows(x: torch.Tensor, skip_zero: bool, rows_per_chunk: int) -> _Rows:
    """Chunks of at most `rows_per_chunk` rows of the inputs x [S, n', p, f], several seeds in a
    chunk where they fit. With `skip_zero` a patch's all-zero rows are left out: each seed's other
    rows come first, padded with its zero rows to the most any seed has."""
    seeds, _, patches, features = x.shape
    if skip_zero:
        live = (x.amax(-1) != 0) | (x.amin(-1) != 0)  # [S, n', p]
    else:
        live = x.new_ones(x.shape[:-1], dtype=torch.bool)
    chunks, left_out = [], []
    for i in range(patches):
        order = (~live[..., i]).byte().argsort(dim=-1, stable=True)
        taken = int(live[..., i].sum(-1).max())
        seeds_per_chunk = max(1, rows_per_chunk // max(taken, 1))
        for first in range(0, seeds, seeds_per_chunk):
            part = slice(first, first + seeds_per_chunk)
            for rows in order[part, :taken].split(rows_per_chunk, dim=-1):
                inputs = x[part, :, i].gather(1, rows[..., None].expand(-1, -1, features))
                chunks.append((i, part, rows, inputs))
        left_out.append(order[:, taken:])
    return _Rows(chunks, left_out)


def _block_forward(block: Block, weight: torch.Tensor, ex: Examples, rays: torch.Tensor,
                   xi: torch.Tensor | None, buffers: dict | None,
                   keep: bool = True) -> tuple[torch.Tensor, _Pass | _NoisyRaysPass]:
    """One block's output [M, S, n]: without noise the examples whose x1 is zero (all, for V) on
    the three rays, the others one by one; V under shared noise on the rays (`_NoisyRaysPass`).

    An all-zero patch (x1 of a Q-only example, x2 of a P-only one) has hidden units relu(xi):
    without noise it adds nothing, with noise shared by the examples relu(xi) . u, computed once;
    it has no gradient. So each patch is computed on its other rows only (`_rows`), in chunks of
    at most `CHUNK` hidden units that stay in the cache. Fresh memory is paid in page faults (on
    the 2-core test machine 30 ms for 41 MB, more than the arithmetic on it), so a caller that
    steps repeatedly keeps a dict `buffers`: the hidden units are written there, and the chunks'
    rows are kept there while the examples are the same. Without `keep` (no gradient wanted) a
    chunk's memory is free for the next one.
    """
    seeds, n = ex.y.shape
    if block.sees == "x2" and xi is not None and xi.shape[-2] == 1:
        return _NoisyRaysPass.forward(weight, block.u, xi, ex, rays.expand(seeds, 3, 2))
    on_rays = xi is None
    methods, k = len(weight), block.filters
    shared = xi is not None and xi.shape[-2] == 1
    skip_zero = xi is None or shared
    kept = None if buffers is None else buffers.get(("rows", skip_zero, on_rays))
    if kept is None or kept[0] is not ex:
        x, by_ray = _inputs(block, ex, rays), None
        if on_rays:  # rows n to n + 2 are the rays; an example evaluated on its ray is left out
            by_ray = ex.x1.new_ones(seeds, n, dtype=torch.bool) if block.sees == "x2" else ~ex.x1.any(-1)
            on_its_ray = _inputs(block, _rays(seeds, ex.x1.shape[-1], rays), rays)
            x = torch.cat([x * ~by_ray[..., None, None], on_its_ray], dim=1)
        kept = (ex, by_ray, _rows(x, skip_zero, max(1, CHUNK // (methods * k))))
        if buffers is not None:
            buffers[("rows", skip_zero, on_rays)] = kept
    _, by_ray, layout = kept
    u = block.per_patch_u()
    weight_t = weight.transpose(-1, -2).contiguous()
    out = weight.new_zeros(methods, seeds, n + 3 if on_rays else n)
    chunks = []
    for key, (i, part, rows, patch) in enumerate(layout.chunks):
        hidden = torch.matmul(patch, weight_t[:, part], out=_buffer(  # [M, S', r, k]
            buffers, key, (methods, *rows.shape, k), weight))
        if xi is not None:
            noise = xi[:, part, :, i * k:(i + 1) * k]  # [M, S', 1 or n, k]
            hidden += noise if shared else noise.gather(2, rows[None, ..., None].expand(methods, -1, -1, k))
        contribution = (hidden.relu_() * u[part, i, None]).sum(-1)
        out[:, part].scatter_add_(-1, rows.expand(methods, -1, -1), contribution)
        if keep:
            chunks.append(_Chunk(part, i, rows, patch, hidden))
    if shared:
        for i, zero in enumerate(layout.left_out):
            alone = (xi[..., i * k:(i + 1) * k].relu() * u[:, i, None]).sum(-1)  # [M, S, 1]
            out.scatter_add_(-1, zero.expand(methods, -1, -1), alone.expand(-1, -1, zero.shape[-1]))
    if on_rays:
        on_ray = torch.gather(out[..., n:], -1, ex.ray.expand(methods, seeds, n))
        out = out[..., :n] + torch.where(by_ray, ex.alpha * on_ray, 0.0)
    return out, _Pass(chunks, u, weight.shape, ex, by_ray)


def _buffer(buffers: dict | None, key: int, shape: tuple[int, ...],
            like: torch.Tensor) -> torch.Tensor | None:
    """`buffers[key]`, made anew where it has another shape; None without buffers."""
    if buffers is None:
        return None
    if key not in buffers or buffers[key].shape != shape:
        buffers[key] = like.new_empty(shape)
    return buffers[key]


def _forward(arch: Architecture, weights: list[torch.Tensor], ex: Examples,
             noise: list[torch.Tensor | None] | None = None, buffers: dict | None = None,
             keep: bool = True) -> tuple[torch.Tensor, list]:
    out, passes = 0.0, []
    for i, (block, weight, xi) in enumerate(zip(arch.blocks, weights, noise or [None] * len(weights))):
        block_buffers = None if buffers is None else buffers.setdefault(i, {})
        block_out, block_pass = _block_forward(block, weight, ex, arch.rays, xi, block_buffers, keep)
        out = out + block_out
        passes.append(block_pass)
    return out, passes


def output(arch: Architecture, weights: list[torch.Tensor], ex: Examples,
           noise: list[torch.Tensor | None] | None = None) -> torch.Tensor:
    """f(u, U; x) for every method, seed and example: [M, S, n]."""
    return _forward(arch, weights, ex, noise, keep=False)[0]


def logistic(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example logistic loss log(1 + exp(-y f)) (Section 2)."""
    return F.softplus(-y * out)


def loss_and_grad(arch: Architecture, weights: list[torch.Tensor], ex: Examples,
                  noise: list[torch.Tensor | None] | None = None,
                  buffers: dict | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Per-example train loss [M, S, n] and the gradient of its mean (without the lambda term);
    `buffers`: a dict kept across calls, where the hidden units are written (`_block_forward`)."""
    out, passes = _forward(arch, weights, ex, noise, buffers)
    loss = logistic(out, ex.y)
    coeff = -ex.y * torch.sigmoid(-ex.y * out) / ex.y.shape[-1]
    return loss, [p.grad(coeff) for p in passes]


@dataclasses.dataclass(frozen=True)
class Subset:
    """Some examples of each seed (`rows` [S, r] of the full set), padded to the most any seed has
    (`valid` [S, r] is False on the padding), and those examples themselves."""

    rows: torch.Tensor
    valid: torch.Tensor
    ex: Examples

    @classmethod
    def where(cls, ex: Examples, mask: torch.Tensor) -> Subset:
        """The examples where `mask` [S, n] holds."""
        taken = max(1, int(mask.sum(-1).max()))
        rows = (~mask).byte().argsort(dim=-1, stable=True)[:, :taken]  # the chosen rows first
        valid = mask.gather(-1, rows)
        def picked(field: torch.Tensor) -> torch.Tensor:  # [S, n, ...] -> [S, r, ...]
            index = rows.view(*rows.shape, *[1] * (field.dim() - 2)).expand(*rows.shape, *field.shape[2:])
            return field.gather(1, index)

        return cls(rows, valid, Examples(**{f.name: picked(getattr(ex, f.name))
                                            for f in dataclasses.fields(Examples)}))


def first_block_grad(arch: Architecture, weights: list[torch.Tensor], loss: torch.Tensor, part: Subset,
                     noise: list[torch.Tensor | None] | None = None,
                     buffers: dict | None = None) -> torch.Tensor:
    """The gradient of the mean train loss (without the lambda term) w.r.t. the first block (W, or
    the one U) from the examples of `part` alone, given the per-example losses [M, S, n] of the
    same forward pass (the coefficient is -y sigmoid(-y f) = -y (1 - exp(-loss))): Lemma 5.2
    splits W's gradient by the examples it comes from. Costs a forward on `part`'s rows only;
    `buffers` as `loss_and_grad`'s (a dict of its own: the rows of `part` are kept there)."""
    xi = noise[0] if noise else None
    if xi is not None and xi.shape[-2] > 1:  # per-example noise: the part's own rows
        xi = xi.gather(2, part.rows[None, ..., None].expand(len(xi), -1, -1, xi.shape[-1]))
    _, block_pass = _block_forward(arch.blocks[0], weights[0], part.ex, arch.rays, xi, buffers)
    picked = loss.gather(-1, part.rows.expand(len(loss), -1, -1))
    coeff = -part.ex.y * -torch.expm1(-picked) * part.valid / loss.shape[-1]
    return block_pass.grad(coeff)


def parts(arch: Architecture, weights: list[torch.Tensor], ex: Examples) -> tuple[torch.Tensor, torch.Tensor]:
    """r(x) = f on (x1, 0) and g(x) = f on (0, x2) (eq. 3.5-3.6): the network's P and Q parts."""
    return output(arch, weights, ex.with_x1_only()), output(arch, weights, ex.with_x2_only())


def lemma42(arch: Architecture, weights: list[torch.Tensor]) -> torch.Tensor:
    """|g(z + zeta) + g(z - zeta) - 2 g(z)| per method and seed (Lemma 4.2): 0 for any g linear
    on the Q plane, so Q (not linearly separable) is representable only when it is large."""
    g = output(arch, weights, _rays(arch.blocks[0].u.shape[0], arch.d, arch.rays))
    return (g[..., 1] + g[..., 2] - 2 * g[..., 0]).abs()
