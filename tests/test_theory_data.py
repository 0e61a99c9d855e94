"""The data distribution of Section 2 (eq. 2.1-2.5) and the defaults of Assumption 3.3."""

import math

import pytest
import torch

from lrorder.theory import data
from lrorder.theory.config import paper_defaults

D, SEEDS, N = 64, 3, 40_000


@pytest.fixture(scope="module")
def drawn():
    dist = data.Distribution(d=D, r=0.2, p0=0.1, q0=0.3)
    dirs = data.directions(dist, list(range(SEEDS)))
    return dist, dirs, data.sample(dist, dirs, N, torch.Generator().manual_seed(0))


def test_fractions_of_labels_and_example_types(drawn):
    dist, _, ex = drawn
    tolerance = 4 * math.sqrt(0.25 / N)
    assert (ex.y > 0).float().mean().item() == pytest.approx(0.5, abs=tolerance)
    expected_fractions = {data.P_ONLY: dist.p0, data.Q_ONLY: dist.q0, data.BOTH: 1 - dist.p0 - dist.q0}
    for kind, expected in expected_fractions.items():
        assert (ex.kind == kind).float().mean().item() == pytest.approx(expected, abs=tolerance)


def test_p_part_has_margin_gamma0_along_w_star_and_the_right_norm(drawn):
    """y <w*, x1> >= gamma0 = 1/sqrt(d) on every P example, with E[y <w*, x1>] = gamma0 + sqrt(2/(pi d))."""
    dist, dirs, ex = drawn
    along = ex.y * torch.einsum("snd,sd->sn", ex.x1, dirs.w_star)
    has_p = ex.has_p()
    assert along[has_p].min().item() >= dist.gamma0 * (1 - 1e-5)
    expected = dist.gamma0 + math.sqrt(2 / (math.pi * D))
    assert along[has_p].mean().item() == pytest.approx(expected, rel=0.01)
    squared_norm = ex.x1[has_p].pow(2).sum(-1).mean().item()  # d - 1 noise directions + the w* one
    assert squared_norm == pytest.approx((D - 1) / D + (along[has_p] ** 2).mean().item(), rel=0.01)
    assert ex.x1[~has_p].abs().max().item() == 0.0


def test_q_part_lies_on_three_rays_with_labels_and_uniform_scale(drawn):
    """eq. 2.5: y = +1 on alpha z, y = -1 on alpha (z +- zeta), alpha ~ U[0, 1], b = +-1 equally."""
    dist, _, ex = drawn
    x2 = ex.x2(dist.rays())
    has_q = ex.has_q()
    assert torch.all((ex.ray == 0) == (ex.y > 0))
    torch.testing.assert_close(x2[..., 0][has_q], ex.alpha[has_q])
    torch.testing.assert_close(x2[..., 1][has_q], ex.alpha[has_q] * dist.r * ((ex.ray == 1).float()
                                                                              - (ex.ray == 2).float())[has_q])
    alpha = ex.alpha[has_q]
    assert alpha.min().item() >= 0 and alpha.max().item() <= 1
    assert alpha.mean().item() == pytest.approx(0.5, abs=0.01)
    negative = ex.ray[has_q & (ex.y < 0)]
    assert (negative == 1).float().mean().item() == pytest.approx(0.5, abs=0.02)
    assert ex.alpha[~has_q].abs().max().item() == 0.0


def test_directions_are_unit_orthogonal_random_and_differ_by_seed(drawn):
    dist, dirs, ex = drawn
    for vector in (dirs.w_star, dirs.z, dirs.zeta_unit):
        torch.testing.assert_close(vector.norm(dim=-1), torch.ones(SEEDS))
        assert vector.abs().max().item() < 0.9  # not axis-aligned
    assert torch.einsum("sd,sd->s", dirs.z, dirs.zeta_unit).abs().max().item() < 1e-6
    assert (dirs.w_star[0] - dirs.w_star[1]).norm().item() > 0.5
    full = data.embed_x2(ex.x2(dist.rays())[:, :50], dirs.q_basis)
    zeta = dist.r * dirs.zeta_unit
    y = ex.y[:, :50]
    expected = ex.alpha[:, :50, None] * (dirs.z[:, None] + torch.where(
        ex.ray[:, :50, None] == 1, 1.0, torch.where(ex.ray[:, :50, None] == 2, -1.0, 0.0)) * zeta[:, None])
    torch.testing.assert_close(full, expected)
    assert torch.all((ex.ray[:, :50] == 0) == (y > 0))


def test_assumption_3_3_defaults():
    values = paper_defaults(d=256, kappa=0.5)
    assert values == {"n_train": 1024, "r": 256**-0.75, "p0": 0.125, "lam": 256**-1.25}
