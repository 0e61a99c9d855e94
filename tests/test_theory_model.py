"""The two-layer network of Section 2: hand-derived gradients against autograd, the exact plane
reduction of x2 against the R^d form, and Lemma 4.2's quantity."""

import dataclasses

import pytest
import torch

from lrorder.theory import data, model

D, SEEDS, METHODS = 12, 2, 3
PATCH, PATCHES = 12, 3  # conv: stride 4, x1 in R^16 (patches 1-3), x2 in the last 4 coordinates


def setting(structure, dtype=torch.float64):
    conv_dims = {"d": PATCH + (PATCHES - 2) * PATCH // PATCHES, "q_dim": PATCH // PATCHES}
    dist = data.Distribution(r=0.3, p0=0.2, q0=0.4, **(conv_dims if structure == "conv" else {"d": D}))
    dirs = data.directions(dist, list(range(SEEDS)))
    gen = torch.Generator().manual_seed(0)
    ex = data.sample(dist, dirs, 40, gen)
    ex = data.Examples(ex.x1.to(dtype), ex.alpha.to(dtype), ex.ray, ex.y.to(dtype), ex.kind)
    conv = model.Convolution(PATCH, PATCHES, dirs.q_basis.to(dtype))
    arch = model.architecture(structure, (7, 9), dist.d, dist.rays().to(dtype), SEEDS, gen, conv=conv)
    blocks = tuple(dataclasses.replace(b, u=b.u.to(dtype)) for b in arch.blocks)
    arch = dataclasses.replace(arch, blocks=blocks)
    weights = [w.to(dtype) for w in model.init_weights(arch, METHODS, 0.5, gen)]
    weights = [w + 0.1 * torch.randn(w.shape, generator=gen, dtype=dtype) for w in weights]  # methods differ
    return dist, dirs, ex, arch, weights, gen


def preact_noise(arch, examples, gen):
    """Pre-activation noise of every block: one value per neuron shared by the examples
    (`examples` 1), one per example (n), or none (None)."""
    if examples is None:
        return None
    return [0.3 * torch.randn(METHODS, SEEDS, examples, b.width, generator=gen, dtype=torch.float64)
            for b in arch.blocks]


def noise_examples(noise_kind, ex):
    return {"none": None, "per_neuron": 1, "per_example": ex.y.shape[-1]}[noise_kind]


def autograd_grad(arch, weights, ex, noise=None):
    leaves = [w.clone().requires_grad_() for w in weights]
    loss = model.logistic(model.output(arch, leaves, ex, noise), ex.y).mean(-1).sum()
    return torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("structure", ["wv", "u", "conv"])
@pytest.mark.parametrize("noise_kind", ["none", "per_neuron", "per_example"])
def test_hand_gradient_matches_autograd(structure, noise_kind):
    _, _, ex, arch, weights, gen = setting(structure)
    noise = preact_noise(arch, noise_examples(noise_kind, ex), gen)
    _, grads = model.loss_and_grad(arch, weights, ex, noise)
    for mine, reference in zip(grads, autograd_grad(arch, weights, ex, noise)):
        torch.testing.assert_close(mine, reference, rtol=1e-9, atol=1e-12)


def dense_output(arch, weights, ex, noise=None):
    """f = sum over blocks and patches of u_i^T relu(A x^(i) + xi_i), every example and patch in full."""
    out = 0.0
    x2 = ex.x2(arch.rays)
    for b, (block, weight) in enumerate(zip(arch.blocks, weights)):
        if block.conv:
            x = block.conv.patches(ex.x1, x2)
        else:
            x = {"x1": ex.x1, "x2": x2, "x": torch.cat([ex.x1, x2], -1)}[block.sees][:, :, None]
        pre = torch.einsum("snpf,mskf->msnpk", x, weight)
        if noise is not None:
            pre = pre + noise[b].unflatten(-1, (block.patches, block.filters))
        out = out + torch.einsum("msnpk,spk->msn", pre.relu(), block.per_patch_u())
    return out


@pytest.mark.parametrize("structure", ["wv", "u", "conv"])
@pytest.mark.parametrize("noise_kind", ["none", "per_neuron", "per_example"])
@pytest.mark.parametrize("chunk", [1, 50, 2**20])
def test_chunks_and_skipped_zero_patches_give_the_dense_output_and_gradient(structure, noise_kind, chunk,
                                                                            monkeypatch):
    """Rows are computed in chunks of seeds and rows, all-zero patches (x1 of Q-only examples, x2
    of P-only ones) skipped or, under shared noise, counted once; the hidden units are written
    into kept buffers on the second call."""
    monkeypatch.setattr(model, "CHUNK", chunk)
    _, _, ex, arch, weights, gen = setting(structure)
    assert (ex.x1.abs().sum(-1) == 0).any() and (ex.alpha == 0).any()  # there are zero patches
    noise = preact_noise(arch, noise_examples(noise_kind, ex), gen)
    torch.testing.assert_close(model.output(arch, weights, ex, noise), dense_output(arch, weights, ex, noise),
                               rtol=1e-12, atol=1e-12)
    leaves = [w.clone().requires_grad_() for w in weights]
    loss = model.logistic(dense_output(arch, leaves, ex, noise), ex.y).mean(-1).sum()
    reference = torch.autograd.grad(loss, leaves)
    buffers = {}
    for _ in range(2):
        _, grads = model.loss_and_grad(arch, weights, ex, noise, buffers)
        for mine, expected in zip(grads, reference):
            torch.testing.assert_close(mine, expected, rtol=1e-10, atol=1e-12)
    assert buffers


@pytest.mark.parametrize("structure", ["wv", "u", "conv"])
def test_buffers_kept_across_calls_serve_noise_switched_on_and_off(structure):
    """A trainer keeps one buffer dict while its pre-activation noise is switched off at the
    anneal: every kind of call then still gives the dense gradient."""
    _, _, ex, arch, weights, gen = setting(structure)
    buffers = {}
    for examples in (1, None, ex.y.shape[-1], None, 1):
        noise = preact_noise(arch, examples, gen)
        leaves = [w.clone().requires_grad_() for w in weights]
        loss = model.logistic(dense_output(arch, leaves, ex, noise), ex.y).mean(-1).sum()
        _, grads = model.loss_and_grad(arch, weights, ex, noise, buffers)
        for mine, expected in zip(grads, torch.autograd.grad(loss, leaves)):
            torch.testing.assert_close(mine, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("structure", ["wv", "u", "conv"])
@pytest.mark.parametrize("kind", [data.P_ONLY, data.Q_ONLY, data.BOTH])
def test_first_block_gradient_from_a_subset_is_that_of_its_examples_alone(structure, kind):
    """Lemma 5.2's split: the first block's gradient from the examples of one type equals autograd
    of the dense loss summed over those examples only (the subset's padding rows, examples of
    other types, count for nothing), with and without noise, on one buffer dict."""
    _, _, ex, arch, weights, gen = setting(structure)
    part = model.Subset.where(ex, ex.kind == kind)
    assert not part.valid.all()  # padded: the seeds hold different numbers of such examples
    buffers, n = {}, ex.y.shape[-1]
    for examples in (None, 1, n, None):
        noise = preact_noise(arch, examples, gen)
        leaves = [w.clone().requires_grad_() for w in weights]
        per_example = model.logistic(dense_output(arch, leaves, ex, noise), ex.y)
        loss = (per_example * (ex.kind == kind)).sum(-1).sum() / n
        expected = torch.autograd.grad(loss, leaves[0])[0]
        train_loss = model.logistic(model.output(arch, weights, ex, noise), ex.y)
        mine = model.first_block_grad(arch, weights, train_loss, part, noise, buffers)
        torch.testing.assert_close(mine, expected, rtol=1e-10, atol=1e-12)


def test_convolution_is_the_sum_over_patches_of_shared_filters():
    """Eq. F.3 written out: f(x) = sum_i u_i^T relu(U x^(i)), x^(i) = x[4 i : 4 i + 12] of
    x = (x1, x2) in R^20, x2 = alpha z or alpha (z + b zeta) in the last 4 coordinates only."""
    dist, dirs, ex, arch, weights, _ = setting("conv")
    (block,) = arch.blocks
    assert (block.patches, block.filters, block.width) == (PATCHES, 7, 21)
    torch.testing.assert_close(block.u.abs(), torch.full_like(block.u, 7**-0.5))  # u_i: +-1/sqrt(m)
    assert torch.all(block.per_patch_u().sign().sum(-1) == torch.tensor([1.0, 1.0, 1.0]))  # 4 vs 3 per patch
    z, zeta = dirs.z.double()[:, None], dist.r * dirs.zeta_unit.double()[:, None]
    sign = torch.where(ex.ray == 1, 1.0, -1.0).double()[..., None]
    x2 = ex.alpha[..., None] * torch.where((ex.ray == 0)[..., None], z, z + sign * zeta)

    def by_hand(x):
        u = block.u.unflatten(-1, (PATCHES, 7))
        hidden = [torch.einsum("snf,mskf->msnk", x[:, :, 4 * i:4 * i + 12], weights[0]).relu()
                  for i in range(PATCHES)]
        return sum(torch.einsum("msnk,sk->msn", h, u[:, i]) for i, h in enumerate(hidden))

    no_x1, no_x2 = ex.x1.new_zeros(ex.x1.shape), x2.new_zeros(x2.shape)
    torch.testing.assert_close(model.output(arch, weights, ex), by_hand(torch.cat([ex.x1, x2], -1)))
    r, g = model.parts(arch, weights, ex)  # eq. F.6-F.7
    torch.testing.assert_close(r, by_hand(torch.cat([ex.x1, no_x2], -1)))
    torch.testing.assert_close(g, by_hand(torch.cat([no_x1, x2], -1)))


@pytest.mark.parametrize("structure", ["wv", "u", "conv"])
def test_examples_without_x1_on_their_rays_equal_every_example_computed(structure):
    """Positive homogeneity: an example whose x1 is zero (every example, for V) evaluated on its
    ray z, z +- zeta and scaled by alpha is exact."""
    _, _, ex, arch, weights, gen = setting(structure)
    assert (ex.kind == data.Q_ONLY).any()
    n = ex.y.shape[-1]
    zero_noise = [torch.zeros(METHODS, SEEDS, n, b.width, dtype=torch.float64) for b in arch.blocks]
    out_rays, grads_rays = model.loss_and_grad(arch, weights, ex)
    out_each, grads_each = model.loss_and_grad(arch, weights, ex, zero_noise)  # noise forces per example
    torch.testing.assert_close(out_rays, out_each)
    for a, b in zip(grads_rays, grads_each):
        torch.testing.assert_close(a, b)


def test_plane_basis_equals_the_full_d_computation():
    """V kept as [k, 2] in the basis (z, zeta/r) gives the output and gradient of V in R^{k x d};
    the gradient has no component off the plane, so the other columns only carry noise."""
    _, dirs, ex, arch, weights, gen = setting("wv")
    block = arch.blocks[1]
    basis = dirs.q_basis.double()  # [S, 2, d]
    v_full = torch.randn(METHODS, SEEDS, block.width, D, generator=gen, dtype=torch.float64)
    v_full.requires_grad_()
    x2_full = data.embed_x2(ex.x2(arch.rays), basis)
    out_full = torch.einsum("msnk,sk->msn", torch.einsum("snd,mskd->msnk", x2_full, v_full).relu(), block.u)
    loss = model.logistic(out_full, ex.y).mean(-1).sum()
    (grad_full,) = torch.autograd.grad(loss, v_full)
    v_plane = torch.einsum("mskd,sjd->mskj", v_full.detach(), basis)
    x2_only = ex.with_x2_only()
    plane_weights = [weights[0], v_plane]
    torch.testing.assert_close(model.output(arch, plane_weights, x2_only), out_full.detach())
    _, grads = model.loss_and_grad(arch, plane_weights, x2_only)
    torch.testing.assert_close(grads[1], torch.einsum("mskd,sjd->mskj", grad_full, basis))
    off_plane = grad_full - torch.einsum("mskj,sjd->mskd", grads[1], basis)
    assert off_plane.abs().max() < 1e-12


def test_parts_add_up_to_the_output_of_the_structured_net():
    """f = r + g for the W/V structure (eq. 3.5-3.6)."""
    _, _, ex, arch, weights, _ = setting("wv")
    r, g = model.parts(arch, weights, ex)
    torch.testing.assert_close(r + g, model.output(arch, weights, ex))


def test_lemma42_vanishes_for_a_linear_g_and_not_for_the_memorizing_pair():
    """A V whose neurons all stay active on the Q plane is linear there; the two-neuron
    memorizer of Section 2 (w active on z - zeta only, v on z + zeta only) is not."""
    dist = data.Distribution(d=D, r=0.3, p0=0.2, q0=0.4)
    gen = torch.Generator().manual_seed(0)
    arch = model.architecture("wv", (1, 2), D, dist.rays(), 1, gen)
    arch = model.Architecture((arch.blocks[0], model.Block("x2", torch.tensor([[-1.0, -1.0]]))), arch.rays, D)
    w_block = torch.zeros(1, 1, 1, D)
    linear = torch.tensor([[[[1.0, 0.5], [2.0, -1.0]]]])
    assert model.lemma42(arch, [w_block, linear]).item() == pytest.approx(0.0, abs=1e-6)
    memorizer = torch.tensor([[[[-0.1, -1.0], [-0.1, 1.0]]]])  # <w, z> < 0 < <w, z - zeta>
    g = 0.3 - 0.1  # each neuron fires on one of z +- zeta with pre-activation r - 0.1
    assert model.lemma42(arch, [w_block, memorizer]).item() == pytest.approx(2 * g, rel=1e-5)


def test_v_with_shared_noise_on_the_rays_equals_v_on_every_example():
    """The sorted-threshold evaluation of V under per-neuron pre-activation noise is exact."""
    _, _, ex, arch, weights, gen = setting("wv")
    shared = preact_noise(arch, 1, gen)
    per_example = [xi.expand(-1, -1, ex.y.shape[-1], -1) for xi in shared]  # same values, forced per example
    loss_rays, grads_rays = model.loss_and_grad(arch, weights, ex, shared)
    loss_each, grads_each = model.loss_and_grad(arch, weights, ex, per_example)
    torch.testing.assert_close(loss_rays, loss_each)
    for a, b in zip(grads_rays, grads_each):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("balanced", [True, False])
def test_second_layer_has_the_paper_scale_and_balanced_signs_when_asked(balanced):
    u = model.second_layer(500, 10, balanced, torch.Generator().manual_seed(0))
    assert torch.all(u.abs() == 1 / 10**0.5)
    sums = (u > 0).sum(-1)
    if balanced:
        assert torch.all(sums == 5) and len({tuple(row.tolist()) for row in u}) > 100  # random order
    else:
        assert sums.float().std().item() > 1.0  # i.i.d. signs: Binomial(10, 1/2)
