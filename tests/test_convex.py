"""Nakkiran (2020): the closed forms against an independent discrete solver and the paper's facts."""

import numpy as np
import pytest

from lrorder.convex import problems, quadratic


def random_quadratics(rng, batch=4, d=3):
    gamma = rng.uniform(0.5, 1.0, size=(batch, d))
    lam = rng.uniform(0.1, 1.0, size=(batch, d))
    delta0 = rng.standard_normal((batch, d))
    return gamma, lam, delta0


def test_flow_stops_exactly_at_eps():
    rng = np.random.default_rng(0)
    gamma, _, delta0 = random_quadratics(rng, batch=1000, d=5)
    eps = 1e-3 * quadratic.train_loss(delta0, gamma)
    end = quadratic.flow_until(delta0, gamma, eps)
    np.testing.assert_allclose(quadratic.train_loss(end, gamma), eps, rtol=1e-10)


def test_flow_does_not_move_when_already_below_eps():
    gamma, delta0 = np.array([[1.0, 0.5]]), np.array([[0.1, 0.1]])
    assert quadratic.flow_stop_time(delta0, gamma, 1.0)[0] == 0.0


def test_closed_form_flow_matches_tiny_step_gradient_descent_in_a_rotated_basis():
    """Independent check: plain GD on L(beta) = (beta - beta*)^T Sigma_hat (beta - beta*), step 1e-4."""
    rng = np.random.default_rng(1)
    gamma, lam, delta0 = random_quadratics(rng, batch=1, d=3)
    rotation, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    sigma_hat = rotation @ np.diag(gamma[0]) @ rotation.T
    sigma = rotation @ np.diag(lam[0]) @ rotation.T
    beta_star = rng.standard_normal(3)
    beta = beta_star + rotation @ delta0[0]
    eps = 1e-2 * quadratic.train_loss(delta0, gamma)[0]
    step = 1e-4
    while (beta - beta_star) @ sigma_hat @ (beta - beta_star) > eps:
        beta = beta - step * 2 * sigma_hat @ (beta - beta_star)
    discrete_test = (beta - beta_star) @ sigma @ (beta - beta_star)
    closed_test = quadratic.test_loss(quadratic.flow_until(delta0, gamma, eps), lam)[0]
    assert discrete_test == pytest.approx(closed_test, rel=2e-3)


def test_large_step_oscillates_the_top_direction_and_contracts_the_rest():
    gamma = np.array([[1.0, 0.25, 0.5]])
    delta0 = np.array([[2.0, 1.0, 1.0]])
    for k in range(5):
        end, taken = quadratic.descent(delta0, gamma, 1.0 / gamma.max(-1), steps=k, eps=0.0)
        assert taken[0] == k
        np.testing.assert_allclose(end[0], [2 * (-1) ** k, 0.5**k, float(k == 0)])


def test_descent_stops_at_the_first_step_below_eps():
    gamma, delta0 = np.array([[1.0], [1.0]]), np.array([[1.0], [10.0]])
    end, taken = quadratic.descent(delta0, gamma, np.array([0.25, 0.25]), steps=10, eps=0.1)
    # delta_k = 0.5^k delta_0, loss 0.25^k delta_0^2 <= 0.1 first at k = 2 and k = 5
    np.testing.assert_array_equal(taken, [2, 5])
    np.testing.assert_allclose(end[:, 0], [0.25, 10 / 32])


@pytest.mark.parametrize("alpha", [0.5, 0.01])
def test_claim1_typical_draw_paper_numbers(alpha):
    """Counts (2, 1): flow ends at >= 1.5 eps (1 - alpha), annealed at 0.75 eps, ratio 2."""
    eps = 0.1
    beta_star = 100 / np.sqrt(alpha)
    gamma, lam = np.array([[2 / 3, 1 / 3]]), np.array([[0.5, 0.5]])
    delta0 = np.full((1, 2), -beta_star)
    gf = quadratic.test_loss(quadratic.flow_until(delta0, gamma, eps), lam)[0]
    ann = quadratic.test_loss(quadratic.annealed(delta0, gamma, np.array([1.5]), 20, eps), lam)[0]
    assert gf >= 1.5 * eps * (1 - alpha)
    assert gf == pytest.approx(1.5 * eps, rel=1e-4)
    assert ann == pytest.approx(0.75 * eps, rel=1e-9)


def test_claim1_sampling_sees_both_coordinates_three_quarters_of_the_time():
    batch = problems.claim1(200_000, 3, 0.01, 0.1, np.random.default_rng(0))
    both = (batch.gamma > 0).all(-1)
    assert abs(both.mean() - 0.75) < 4 * np.sqrt(0.75 * 0.25 / 200_000)
    assert set(np.unique(batch.gamma * 3)) == {0, 1, 2, 3}
    np.testing.assert_allclose(batch.gamma.sum(-1), 1.0)


def test_claim1_algorithms_agree_when_one_coordinate_is_unseen():
    batch = problems.claim1(1000, 3, 0.01, 0.1, np.random.default_rng(1))
    one = ~(batch.gamma > 0).all(-1)
    gf = quadratic.test_loss(quadratic.flow_until(batch.delta0, batch.gamma, batch.eps), batch.lam)
    ann = quadratic.test_loss(
        quadratic.annealed(batch.delta0, batch.gamma, batch.large_step, 20, batch.eps), batch.lam)
    assert one.any()
    np.testing.assert_allclose(gf[one], ann[one], rtol=1e-9)


def test_lemma2_instances_meet_both_conditions_and_bounds_hold():
    alpha, small, gap, steps = 0.1, 3, 1.0, 20
    batch = problems.lemma2(5000, 8, small, gap, alpha, 100.0, np.random.default_rng(2))
    weight = batch.gamma * batch.delta0**2
    assert np.all(weight[:, 0] > batch.eps)  # condition 1
    weakest = weight[:, -small:].min(-1)
    condition2 = batch.eps**gap * weight[:, :-small].sum(-1) / (small * weakest) ** (1 + gap)
    assert np.all(condition2 <= alpha)
    assert np.all(batch.gamma[:, :-small].min(-1) >= (1 + gap) * batch.gamma[:, -small:].max(-1) - 1e-12)
    lower, upper = problems.lemma2_bounds(batch, alpha, small, steps)
    gf = quadratic.test_loss(quadratic.flow_until(batch.delta0, batch.gamma, batch.eps), batch.lam)
    ann = quadratic.test_loss(
        quadratic.annealed(batch.delta0, batch.gamma, batch.large_step, steps, batch.eps), batch.lam)
    assert np.all(gf >= lower * (1 - 1e-9))
    assert np.all(ann <= upper * (1 + 1e-9))


@pytest.mark.parametrize("n", [4, 5, 6])
def test_ratio_is_the_sample_curvature_ratio_once_the_large_steps_have_converged(n):
    """Beyond n = 3: the flow ends in the flat direction (test eps lam/gamma_min), the annealed run
    in the sharp one (eps lam/gamma_max), so A/B = gamma_max/gamma_min; equal counts give 1."""
    batch = problems.claim1(2000, n, 0.01, 0.1, np.random.default_rng(n))
    gf = quadratic.test_loss(quadratic.flow_until(batch.delta0, batch.gamma, batch.eps), batch.lam)
    ann = quadratic.test_loss(
        quadratic.annealed(batch.delta0, batch.gamma, batch.large_step, 400, batch.eps), batch.lam)
    both = (batch.gamma > 0).all(-1)
    expected = batch.gamma.max(-1)[both] / batch.gamma.min(-1)[both]
    np.testing.assert_allclose(gf[both] / ann[both], expected, rtol=1e-3)
