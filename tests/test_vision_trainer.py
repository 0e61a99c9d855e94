"""The trainer: the released code's optimiser, exact resume, clean divergence, shared seeds."""

import copy
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lrorder.vision import experiment
from lrorder.vision.trainer import Method, Optimisation, Trainer, resumed_seed
from lrorder.vision.wrn import WideResNet

NOISY = Method("small_noise", 0.05, "2:0.1", sigma0=0.3, sigma_decay=0.9, sigma_per="iteration")


@pytest.fixture
def trainer(tiny_sets):
    """`trainer(method, epochs, seed, precision)`: a plain Trainer of WRN-10-1 on the tiny sets."""
    def make(method=NOISY, epochs=3, seed=0, precision=None):
        torch.manual_seed(seed)
        train, evals = tiny_sets()
        return Trainer(WideResNet(10, 1), method, Optimisation(epochs, batch_size=40), train, evals,
                       seed, "cpu", precision)
    return make


def test_a_step_is_nesterov_sgd_with_weight_decay(trainer):
    """The released code's update: the first Nesterov step (momentum 0.9, buffer = gradient) moves
    every parameter by lr (1 + 0.9) (grad + 5e-4 p)."""
    t = trainer(Method("small", 0.05), precision="fp32")
    x, y = next(iter(t.train_set.batches(8, torch.Generator().manual_seed(1), True)))
    twin = copy.deepcopy(t.model)
    F.cross_entropy(twin(x), y).backward()
    before = [p.detach().clone() for p in t.model.parameters()]
    t.step(x, y)
    for p, p0, q in zip(t.model.parameters(), before, twin.parameters()):
        torch.testing.assert_close(p.detach(), p0 - 0.05 * 1.9 * (q.grad + 5e-4 * p0), rtol=1e-4, atol=1e-6)


def test_an_epoch_logs_what_the_issue_asks_for_and_follows_the_schedules(trainer):
    t = trainer()
    first, second = t.run_epoch(), t.run_epoch()
    assert set(first) >= {"epoch", "lr", "sigma", "train_loss", "train_acc", "clean_acc", "clean_loss",
                          "mixed_acc", "mixed_loss", "patch_acc", "patch_loss", "train_seconds",
                          "eval_seconds", "diverged"}
    assert (first["lr"], second["lr"]) == pytest.approx((0.05, 0.005))
    # per-iteration decay, 3 steps per epoch (96 images, batch 40, last partial batch kept)
    assert t.iteration == 6
    assert second["sigma"] == pytest.approx(0.3 * 0.9 ** 5)  # sigma has no milestone here


def test_resume_from_a_checkpoint_is_exact(trainer):
    straight = trainer()
    records = [straight.run_epoch() for _ in range(3)]
    first = trainer()
    first.run_epoch()
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = trainer()
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    tail = [resumed.run_epoch() for _ in range(2)]
    for key in ("train_loss", "clean_acc", "mixed_loss", "patch_loss"):
        assert [r[key] for r in tail] == [r[key] for r in records[1:]]
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


def saved_and_loaded(state):
    """`state` through a file, as a resume point is (a live state dict shares the trainer's tensors)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def as_if_from_cuda(state):
    """A checkpoint as a CUDA run stores it, saved and loaded: its generator states are CUDA's (a
    Philox seed and offset, 16 bytes), which no CPU generator can take."""
    philox = torch.tensor(list(range(16)), dtype=torch.uint8)
    return saved_and_loaded({**state, "device": "cuda",
                             "generators": {name: philox for name in state["generators"]}})


def test_a_checkpoint_from_another_device_type_resumes_with_streams_from_the_seed_and_epoch(trainer):
    first = trainer()
    first.run_epoch()
    resumed, again = trainer(), trainer()
    resumed.load_state_dict(as_if_from_cuda(first.state_dict()))
    again.load_state_dict(as_if_from_cuda(first.state_dict()))
    for a, b in zip(first.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(first.optimizer.state.values(), resumed.optimizer.state.values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    assert (resumed.epoch, resumed.iteration) == (1, 3)
    for name, generator in resumed.generators.items():  # seed 0, after epoch 1
        reseeded = torch.Generator().manual_seed(resumed_seed(0, 1, name))
        assert torch.equal(generator.get_state(), reseeded.get_state())
    assert resumed.model.noise.generator is resumed.generators["noise"]
    tail = resumed.run_epoch()
    assert tail["train_loss"] == again.run_epoch()["train_loss"]  # reproducible
    exact = trainer()
    exact.load_state_dict(saved_and_loaded(first.state_dict()))  # same device type: exact
    assert exact.run_epoch()["train_loss"] != tail["train_loss"]
    seeds = {resumed_seed(seed, epoch, stream) for seed in (0, 1) for epoch in (1, 2)
             for stream in ("data", "noise", "eval")}
    assert len(seeds) == 12 and not seeds & {seed * 1000 + i for seed in (0, 1) for i in range(3)}


def test_a_non_finite_loss_stops_with_diverged_and_the_epoch(trainer):
    t = trainer(Method("large", 0.1))
    with torch.no_grad():
        t.model.fc.bias.fill_(math.inf)
    record = t.run_epoch()
    assert record["diverged"] and record["epoch"] == 1 and "clean_acc" not in record


def test_same_seed_same_run_new_seed_new_run(trainer):
    a, b, c = trainer(seed=3), trainer(seed=3), trainer(seed=4)
    ra, rb, rc = a.run_epoch(), b.run_epoch(), c.run_epoch()
    assert ra["train_loss"] == rb["train_loss"] != rc["train_loss"]


def test_control_subset_is_exactly_the_never_patched_images_of_the_patch_setting(monkeypatch):
    train_x = np.arange(500 * 3 * 32 * 32, dtype=np.int64).reshape(500, 3, 32, 32) % 251
    fake = experiment.data.Images(train_x.astype(np.uint8), np.arange(500) % 10,
                                  train_x[:200].astype(np.uint8), np.arange(200) % 10,
                                  (0.5,) * 3, (0.25,) * 3, "fake")
    monkeypatch.setattr(experiment.data, "load", lambda *args: fake)
    config = experiment.VisionConfig(train_size=400, test_size=100)
    control = experiment.build_setting(config, 7, "cpu", patched=False)
    patch = experiment.build_setting(config, 7, "cpu", patched=True)
    assert control.trains["full"].size == 400 and control.trains["subset"].size == 80
    train = patch.trains["train"]
    never = train.pixels[~train.patchable]
    assert torch.equal(never, control.trains["subset"].pixels)
    assert set(patch.evals) == {"clean", "mixed", "patch"} and patch.evals["patch"].size == 1000


def test_cpu_bf16_is_autocast_in_channels_last_and_fp32_the_contiguous_reference(trainer):
    logits = {}
    for precision in ("bf16", "fp32"):
        t = trainer(precision=precision)
        t.model.fc.register_forward_hook(lambda module, args, out, p=precision: logits.__setitem__(p, out))
        t.model.train()
        x, y = t.train_set.batch(torch.arange(40), t.generators["data"])
        t.step(x, y)
        conv = t.model.features[0].weight
        assert conv.is_contiguous(memory_format=torch.channels_last) == (precision == "bf16")
    assert (logits["bf16"].dtype, logits["fp32"].dtype) == (torch.bfloat16, torch.float32)
    # the same network from the same weights: bf16 rounds to 3 significant digits, no more
    torch.testing.assert_close(logits["bf16"].float(), logits["fp32"], rtol=0.05, atol=0.05)
    assert not torch.equal(logits["bf16"].float(), logits["fp32"])


def test_a_precision_other_than_bf16_or_fp32_is_refused(trainer):
    with pytest.raises(ValueError, match="bf16, fp32"):
        trainer(precision="fp16")


@pytest.mark.gpu
def test_cuda_path_uses_bf16_autocast_and_channels_last(tiny_sets):
    torch.manual_seed(0)
    train, evals = tiny_sets(device="cuda")
    t = Trainer(WideResNet(10, 1), NOISY, Optimisation(1), train, evals, 0, "cuda")
    assert t.model.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert math.isfinite(t.run_epoch()["train_loss"])


def test_a_step_counts_the_flops_of_the_paper_network():
    """4.82 GFLOP per WRN-16-10 image forward (x3 with the backward pass): the figure TFLOP/s and
    the projected recipe times of `lrorder bench train-step` rest on (its output: test_cli)."""
    from lrorder.vision import bench

    assert bench.step_flops(16, 10, 1) / 3 / 1e9 == pytest.approx(4.82, abs=0.01)
