"""The production trainer computes what the plain `Trainer`, the oracle, computes: one model, or
several stacked in one network, trained by one fused Nesterov SGD, give every model's own
losses, parameters, BatchNorm statistics and evaluations (CPU, fp32, tight tolerance).

In fp32 the two paths round differently (grouped vs single convolutions); at lr 0.1 on random
images a difference of 1e-7 flips a few ReLUs within a few steps and then grows, so the long
comparison is also made in float64, where the paths agree to 1e-12 at every step."""

import io
import math

import pytest
import torch

from lrorder.vision import experiment
from lrorder.vision.config import PatchConfig
from lrorder.vision.stacked import NesterovSGD, StackedTrainer, stack_states, unstack_state
from lrorder.vision.trainer import Method, Optimisation, Trainer, resumed_seed
from lrorder.vision.wrn import WideResNet

# three methods with different learning rates, schedules and noise
METHODS = [Method("large", 0.1, "2:0.04"),
           Method("small_noise", 0.02, sigma0=0.4, sigma_schedule="2:0.5"),
           Method("noise_per_iteration", 0.05, sigma0=0.3, sigma_decay=0.9, sigma_per="iteration")]
TOL = {"rtol": 1e-4, "atol": 1e-5}


def models(count=3):
    """Different initial weights per model (one per method), so that any cross-talk between
    models would show."""
    nets = []
    for seed in range(count):
        torch.manual_seed(seed)
        nets.append(WideResNet(10, 1))
    return nets


@pytest.fixture
def both_paths(tiny_sets):
    """`both_paths(epochs, methods)`: a plain fp32 Trainer per method and one StackedTrainer of
    the same models."""
    def make(epochs=2, methods=METHODS):
        return _both_paths(*tiny_sets(), epochs, methods)
    return make


def _both_paths(train, evals, epochs, methods=METHODS):
    optim = Optimisation(epochs, batch_size=40)
    plain = [Trainer(net, method, optim, train, evals, 0, "cpu", "fp32")
             for net, method in zip(models(len(methods)), methods)]
    stacked = StackedTrainer(models(len(methods)), methods, optim, train, evals, 0, "cpu", precision="fp32")
    return plain, stacked


# the production trainer's groupings: the three methods stacked, and one model (the noisy one)
GROUPS = pytest.mark.parametrize("methods", [METHODS, METHODS[1:2]], ids=["stacked", "one-model"])


def test_a_run_trains_every_group_with_the_stacked_trainer_and_one_arm_is_an_ordinary_network(tiny_sets):
    """One production trainer for every grouping: `fast` off gives each arm its own, M = 1, with
    no grouped convolution; on, the arms sharing a training set share one."""
    train, evals = tiny_sets()
    setting = experiment.Setting({"train": train}, evals, 3, "tiny")
    arms = [experiment.Arm(method.name, method) for method in METHODS]
    initial = WideResNet(10, 1).state_dict()
    assert experiment._groups(arms, True) == [arms]
    assert experiment._groups(arms, False) == [[arm] for arm in arms]
    for fast in (False, True):
        for group in experiment._groups(arms, fast):
            trainer = experiment._trainer(PatchConfig(depth=10, widen=1), group, setting, initial, 0, "cpu")
            assert isinstance(trainer, StackedTrainer) and trainer.methods == [arm.method for arm in group]
            convs = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d)]
            assert [conv.groups for conv in convs] == [1] + [len(group)] * (len(convs) - 1)  # stem: 1


def test_stacking_a_state_and_unstacking_it_is_the_identity():
    states = [net.state_dict() for net in models()]
    for original, back in zip(states, unstack_state(stack_states(states), len(states))):
        assert original.keys() == back.keys()
        assert all(torch.equal(original[k], back[k]) for k in original)


def test_a_stacked_forward_is_every_model_forward():
    nets = models()
    stacked = WideResNet(10, 1, models=len(nets))
    stacked.load_state_dict(stack_states([net.state_dict() for net in nets]))
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        logits = stacked.eval()(x)
        for m, net in enumerate(nets):
            torch.testing.assert_close(logits[:, m], net.eval()(x), **TOL)


def test_fused_optimizer_is_torch_sgd_with_nesterov_and_weight_decay_per_model_lr():
    torch.manual_seed(0)
    lrs = [0.1, 0.01, 0.5]
    params = [torch.nn.Parameter(torch.randn(3 * 4, 5)), torch.nn.Parameter(torch.randn(3, 2, 2))]
    singles = [[torch.nn.Parameter(p.detach().chunk(3)[m].clone()) for p in params] for m in range(3)]
    fused = NesterovSGD(params, torch.tensor(lrs), momentum=0.9, weight_decay=5e-4)
    references = [torch.optim.SGD(ps, lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
                  for ps, lr in zip(singles, lrs)]
    for _ in range(4):
        grads = [torch.randn_like(p) for p in params]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        fused.step()
        for m, (ps, reference) in enumerate(zip(singles, references)):
            for p, g in zip(ps, grads):
                p.grad = g.chunk(3)[m].clone()
            reference.step()
    for m, ps in enumerate(singles):
        for p, stacked in zip(ps, params):
            torch.testing.assert_close(stacked.detach().chunk(3)[m], p.detach(), rtol=1e-6, atol=1e-7)


@pytest.fixture(params=[(torch.float32, 3, TOL), (torch.float64, 6, {"rtol": 1e-12, "atol": 1e-12})],
                ids=["fp32-3-steps", "fp64-6-steps"])
def precision(request):
    """One thread: fp32 sums in another order with more threads, and at lr 0.1 a 1e-7
    difference that flips a ReLU grows within a few steps (float64 shows the math is equal)."""
    dtype, steps, tolerance = request.param
    default, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(dtype)
    torch.set_num_threads(1)
    yield dtype, steps, tolerance
    torch.set_default_dtype(default)
    torch.set_num_threads(threads)


@GROUPS
def test_every_step_has_each_models_own_loss_and_the_final_state_matches(both_paths, precision, methods):
    dtype, steps, tolerance = precision
    plain, stacked = both_paths(methods=methods)
    generator = torch.Generator().manual_seed(5)
    for trainer in (*plain, stacked):
        trainer.model.train()
    for step in range(steps):
        x, y = plain[0].train_set.batch(torch.randperm(96, generator=generator)[:24], generator)
        x = x.to(dtype)
        sigmas = [m.sigma(1, step, 2) for m in methods]
        stacked.noise.sigma.copy_(torch.tensor(sigmas))
        stacked.optimizer.lr.copy_(torch.tensor([m.lr(1, 2) for m in methods]))
        out = stacked.step(x, y)
        for m, (trainer, sigma) in enumerate(zip(plain, sigmas)):
            trainer.model.noise.sigma = sigma
            loss, hits = trainer.step(x, y)
            torch.testing.assert_close(out[0, m], loss, **tolerance)
            assert out[1, m] == hits
    for trainer, state in zip(plain, stacked.models()):
        for key, value in trainer.model.state_dict().items():
            torch.testing.assert_close(state[key], value, **tolerance, msg=key)


@GROUPS
def test_epochs_log_the_same_records_as_the_plain_trainer(both_paths, methods):
    plain, stacked = both_paths(methods=methods)
    for _ in range(2):
        fast = stacked.run_epoch()
        for trainer, record in zip(plain, fast):
            reference = trainer.run_epoch()
            assert list(record) == list(reference)
            for key, value in reference.items():
                if not key.endswith("seconds"):
                    assert record[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    for trainer, state in zip(plain, stacked.models()):
        for key in ("features.4.running_mean", "features.4.running_var", "fc.weight"):
            torch.testing.assert_close(state[key], trainer.model.state_dict()[key], **TOL)


def test_resume_of_a_stacked_trainer_is_exact(both_paths):
    _, straight = both_paths(epochs=3)
    records = [straight.run_epoch() for _ in range(3)]
    _, first = both_paths(epochs=3)
    first.run_epoch()
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    _, resumed = both_paths(epochs=3)
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    tail = [resumed.run_epoch() for _ in range(2)]
    strip = [[{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rs] for rs in records[1:]]
    assert [[{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rs] for rs in tail] == strip


def test_a_stacked_checkpoint_from_another_device_type_resumes_with_streams_from_the_seed_and_epoch(
        both_paths):
    """Every noisy model gets the same re-derived noise stream, as each gets a copy of the one
    noise stream at a fresh start; weights and momentum buffers come over as they were."""
    _, first = both_paths(epochs=3)
    first.run_epoch()
    state = first.state_dict()
    philox = torch.tensor(list(range(16)), dtype=torch.uint8)  # a CUDA generator's state
    state = {**state, "device": "cuda", "generators": {name: philox for name in state["generators"]},
             "noise_generators": [None if g is None else philox for g in state["noise_generators"]]}
    buffer = io.BytesIO()
    torch.save(state, buffer)  # as a resume point is: a live state dict shares the trainer's tensors
    _, resumed = both_paths(epochs=3)
    _, again = both_paths(epochs=3)
    for trainer in (resumed, again):
        buffer.seek(0)
        trainer.load_state_dict(torch.load(buffer, weights_only=True))
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    for a, b in zip(first.optimizer.buffers, resumed.optimizer.buffers):
        assert torch.equal(a, b)
    expected = {name: torch.Generator().manual_seed(resumed_seed(0, 1, name)).get_state()
                for name in ("data", "noise", "eval")}
    for name, generator in resumed.generators.items():
        assert torch.equal(generator.get_state(), expected[name])
    noisy = [g for g in resumed.noise_generators if g is not None]
    assert len(noisy) == 2 and all(torch.equal(g.get_state(), expected["noise"]) for g in noisy)
    assert resumed.noise.generators == resumed.noise_generators  # the same objects, set in place
    tail = resumed.run_epoch()
    assert [r["train_loss"] for r in tail] == [r["train_loss"] for r in again.run_epoch()]


@pytest.mark.gpu
def test_a_cuda_graph_replays_the_eager_step_and_resumes(tiny_sets):
    """10 steps per epoch: 3 eager warm-up steps, the capture, replays, an eager partial batch."""
    train, evals = tiny_sets(n=390, device="cuda")
    optim = Optimisation(3, batch_size=40)

    def trainer(graph):
        return StackedTrainer(models(), METHODS, optim, train, evals, 0, "cuda", graph=graph)

    eager, graphed = trainer(False), trainer(True)
    for _ in range(2):
        for a, b in zip(eager.run_epoch(), graphed.run_epoch()):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-2)
            assert a["clean_acc"] == pytest.approx(b["clean_acc"], abs=5)
    resumed = trainer(True)
    resumed.load_state_dict(graphed.state_dict())
    for a, b in zip(graphed.run_epoch(), resumed.run_epoch()):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-2)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_a_diverging_model_leaves_the_others_untouched(tiny_sets, device):
    """A kernel that mixed the models (a block-diagonal dense conv would: NaN * 0 = NaN) fails this.
    On CUDA two runs need not agree bit for bit (kernels pick their summation order), so there the
    others are checked to stay finite and train; on the CPU they equal a healthy group's exactly."""
    train, evals = tiny_sets(device=device)
    optim = Optimisation(1, batch_size=40)
    healthy = StackedTrainer(models(), METHODS, optim, train, evals, 0, device)
    broken = StackedTrainer(models(), METHODS, optim, train, evals, 0, device)
    with torch.no_grad():
        broken.model.fc.bias[0].fill_(float("inf"))
    good, bad = healthy.run_epoch(), broken.run_epoch()
    assert bad[0]["diverged"] and "clean_acc" not in bad[0]
    assert not any(r["diverged"] for r in bad[1:])
    assert all(math.isfinite(r[key]) for r in bad[1:] for key in ("train_loss", "clean_acc", "patch_loss"))
    states = broken.models()
    assert not all(torch.isfinite(value).all() for value in states[0].values())  # the NaN is model 0's
    for state, initial in zip(states[1:], models()[1:]):
        assert all(torch.isfinite(value).all() for value in state.values())
        trained = [key for key, value in initial.state_dict().items() if value.is_floating_point()
                   and not torch.equal(state[key].cpu(), value)]
        assert "fc.weight" in trained and "features.0.weight" in trained
    if device == "cpu":  # deterministic: the others are the healthy group's, bit for bit
        assert [r["train_loss"] for r in good[1:]] == [r["train_loss"] for r in bad[1:]]
        assert [r["clean_acc"] for r in good[1:]] == [r["clean_acc"] for r in bad[1:]]
