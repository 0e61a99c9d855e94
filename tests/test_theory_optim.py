"""eq. 3.1-3.3 and the schedules: stationarity of the initialization, the anneal and stop rules."""

import math

import pytest
import torch

from lrorder.theory import data, model, optim

D, SEEDS = 10, 4


def trainer(methods, tau0=0.5, lam=0.01, tau_xi=None, n=30, split=False):
    dist = data.Distribution(d=D, r=0.3, p0=0.2, q0=0.4)
    dirs = data.directions(dist, list(range(SEEDS)))
    gen = torch.Generator().manual_seed(0)
    train = data.sample(dist, dirs, n, gen)
    arch = model.architecture("wv", (5, 5), D, dist.rays(), SEEDS, gen)
    tau_xi = optim.stationary_tau_xi(tau0, methods[0].lrs[0], lam) if tau_xi is None else tau_xi
    noise = [torch.Generator().manual_seed(100 + s) for s in range(SEEDS)]
    p_only = model.Subset.where(train, train.kind == data.P_ONLY) if split else None
    run = optim.Trainer(arch, train, methods, lam, tau_xi, False, noise, p_only)
    return run, run.start(model.init_weights(arch, len(methods), tau0, gen)), train


def test_noise_alone_keeps_the_weights_at_the_initial_scale():
    """Assumption 3.1: with no loss gradient, the weight-decay + noise recursion leaves U_t ~ N(0, tau0^2)."""
    tau0, eta1, lam = 0.4, 0.5, 0.2
    tau_xi = optim.stationary_tau_xi(tau0, eta1, lam)
    gen = torch.Generator().manual_seed(1)
    weights = tau0 * torch.randn(200_000, generator=gen)
    for _ in range(50):
        weights = (1 - eta1 * lam) * weights - eta1 * tau_xi * torch.randn(weights.shape, generator=gen)
    assert weights.std().item() == pytest.approx(tau0, rel=0.01)


def test_trainer_noise_is_stationary_when_the_data_gives_no_gradient():
    """The Trainer's own update: with y * f saturated the loss gradient vanishes, the scale stays tau0."""
    method = optim.Method("noise", (0.5,), (0.0,), ())
    run, state, train = trainer([method], tau0=0.4, lam=0.2)
    run.train = data.Examples(train.x1 * 0, train.alpha * 0, train.ray, train.y, train.kind)
    for _ in range(60):
        run.step(state)
    w = state.weights[0]
    assert w.std().item() == pytest.approx(0.4, rel=0.05)


def test_anneal_fires_at_the_milestone_and_switches_the_learning_rate():
    """L-S anneals at step T when eps1 + q log 2 is out of reach; lr is eta1 up to T, eta2 from T on."""
    ls = optim.large_then_small(eta1=0.3, eta2=0.01, eps1=-10.0, eps2=-10.0, anneal_at=5)
    run, state, _ = trainer([ls, optim.small(0.01, -10.0)])
    seen = []
    for _ in range(8):
        lr = run._per_run(run.lr_table, state)
        run.step(state, on_anneal=lambda s, mask: seen.append((s.step, mask.clone())))
        if state.step <= 5:
            assert torch.all(lr[0] == 0.3) and torch.all(lr[1] == 0.01)
    assert torch.all(state.anneal_step[0] == 5) and torch.all(state.anneal_step[1] == optim.NEVER)
    assert [step for step, _ in seen] == [5]
    assert torch.all(seen[0][1][0]) and not seen[0][1][1].any()
    assert torch.all(run._per_run(run.lr_table, state)[0] == 0.01)


def test_anneal_fires_when_the_loss_drops_below_eps1_plus_q_log2():
    """Algorithm 1: the threshold is eps1 + q log 2, with q the seed's empirical Q-only fraction."""
    ls = optim.large_then_small(eta1=0.3, eta2=0.01, eps1=0.0, eps2=-10.0, anneal_at=10**6)
    run, state, train = trainer([ls])
    q = (train.kind == data.Q_ONLY).float().mean(-1)
    threshold = q * math.log(2)
    just_below = (threshold - 1e-4).expand(1, SEEDS)
    fired = run._advance(state, just_below)
    assert torch.all(fired) and torch.all(state.anneal_step == 0)
    run2, state2, _ = trainer([ls])
    assert not run2._advance(state2, (threshold + 1e-4).expand(1, SEEDS)).any()


def test_a_stopped_run_freezes_and_a_run_only_stops_in_its_last_phase():
    ls = optim.large_then_small(eta1=0.3, eta2=0.01, eps1=-10.0, eps2=10.0, anneal_at=3)
    run, state, _ = trainer([ls])
    run.step(state)
    assert torch.all(state.stop_step == optim.NEVER)  # loss < eps2 but still in phase 0
    for _ in range(3):
        run.step(state)
    assert torch.all(state.stop_step == 3)
    frozen = [w.clone() for w in state.weights]
    run.step(state)
    for before, after in zip(frozen, state.weights):
        torch.testing.assert_close(before, after)


def test_preactivation_noise_is_drawn_only_while_its_phase_is_on():
    noisy = optim.small_with_noise(eta2=0.01, sigma=0.5, eps1=-10.0, eps2=-10.0, anneal_at=2)
    run, state, train = trainer([noisy])
    noise = run._preact_noise(state)
    assert [xi.shape for xi in noise] == [(1, SEEDS, 1, 5), (1, SEEDS, 1, 5)]
    run.per_example_noise = True
    assert run._preact_noise(state)[0].shape == (1, SEEDS, train.y.shape[-1], 5)
    for _ in range(3):
        run.step(state)
    assert run._preact_noise(state) is None


def test_resume_continues_the_same_noise_stream():
    ls = optim.large_then_small(eta1=0.3, eta2=0.01, eps1=-10.0, eps2=-10.0, anneal_at=3)
    run, state, _ = trainer([ls])
    for _ in range(2):
        run.step(state)
    saved = optim.State(state.step, [w.clone() for w in state.weights], state.phase.clone(),
                        state.anneal_step.clone(), state.stop_step.clone(), state.rng.clone(), [])
    for _ in range(3):
        run.step(state)
    again, _, _ = trainer([ls])
    again.resume(saved)
    for _ in range(3):
        again.step(saved)
    for a, b in zip(state.weights, saved.weights):
        torch.testing.assert_close(a, b)


def test_the_accumulated_signal_is_lemma_52s_sum_of_decayed_gradients():
    """State.signal is eq. 5.1 with each run's own learning rates, sum_s eta_s prod_{s<j<=t}
    (1 - eta_j lambda) grad_W L(U_s) restricted to the P-only examples and to the others (1/N
    normalised), computed here step by step with autograd on the same weights."""
    lam = 0.05
    methods = [optim.large_then_small(0.5, 0.05, -10.0, -10.0, anneal_at=3), optim.small(0.05, -10.0)]
    run, state, train = trainer(methods, lam=lam, split=True)
    p_only = train.kind == data.P_ONLY
    assert 0 < int(p_only.sum()) < p_only.numel()
    expected = [torch.zeros_like(state.weights[0]) for _ in range(2)]
    for step in range(6):
        weights = [w.clone().requires_grad_() for w in state.weights]
        per_example = model.logistic(model.output(run.arch, weights, train), train.y) / train.y.shape[-1]
        grads = [torch.autograd.grad((per_example * part).sum(), weights[0], retain_graph=True)[0]
                 for part in (p_only, ~p_only)]
        lr = torch.tensor([0.5 if step < 3 else 0.05, 0.05])[:, None, None, None]  # L-S anneals at 3
        expected = [(1 - lr * lam) * e + lr * g for e, g in zip(expected, grads)]
        run.step(state)
    for got, want in zip(state.signal, expected):
        assert float(want.norm()) > 1e-3
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_a_state_from_another_kind_of_device_resumes_on_a_stream_from_the_seed_and_step():
    """A CUDA generator's state does not fit a CPU generator: the run goes on, reproducibly."""
    ls = optim.large_then_small(eta1=0.3, eta2=0.01, eps1=-10.0, eps2=-10.0, anneal_at=3)
    finals = []
    for _ in range(2):
        run, state, _ = trainer([ls])
        run.step(state)
        state.rng = torch.zeros(SEEDS, 16, dtype=torch.uint8)  # a CUDA (Philox) state's size
        again, _, _ = trainer([ls])
        again.resume(state)
        again.step(state)
        finals.append(state.weights[0].clone())
    torch.testing.assert_close(finals[0], finals[1])
    run, state, _ = trainer([ls])
    run.step(state)
    run.step(state)
    assert not torch.equal(state.weights[0], finals[0])  # another stream than the uninterrupted run's
