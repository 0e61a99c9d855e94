"""WideResNet against the reference file's description, pre-activation noise, and the schedules."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lrorder.vision import schedules
from lrorder.vision.wrn import NoiseSource, NoisyReLU, WideResNet, parameter_count


def test_wrn_16_10_has_17_1_million_parameters_and_4_82_gflop_per_image():
    model = WideResNet(16, 10)
    assert parameter_count(model) == 17_116_634  # "about 17.1 M parameters"
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 32, 32))
    assert counter.get_total_flops() / 1e9 == pytest.approx(4.82, abs=0.01)  # "about 4.82 GFLOP"


def test_reference_init():
    model = WideResNet(10, 2)
    conv = model.features[1].conv2
    assert conv.weight.std().item() == pytest.approx((2 / (9 * 32)) ** 0.5, rel=0.05)
    assert all(torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
               for bn in model.modules() if isinstance(bn, torch.nn.BatchNorm2d))
    assert torch.all(model.fc.bias == 0)
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())


def test_noise_is_one_hw_map_per_call_broadcast_over_batch_and_channels():
    noise = NoiseSource(torch.Generator().manual_seed(0))
    noise.sigma = 0.5
    relu = NoisyReLU(noise)
    out = relu(torch.full((4, 3, 5, 6), 10.0)) - 10.0  # far from the kink: out = sigma * n
    assert torch.allclose(out, out[:1, :1].expand_as(out))
    assert out.std().item() == pytest.approx(0.5, rel=0.3)
    assert not torch.equal(relu(torch.full((4, 3, 5, 6), 10.0)) - 10.0, out)  # fresh each step
    relu.eval()
    assert torch.equal(relu(torch.full((4, 3, 5, 6), 10.0)), torch.full((4, 3, 5, 6), 10.0))


def test_noise_is_added_before_the_relu_not_after():
    """relu(x + sigma n) at x = -10, sigma 0.5: zero wherever n < 20, never -10 + sigma n."""
    noise = NoiseSource(torch.Generator().manual_seed(1))
    noise.sigma = 0.5
    out = NoisyReLU(noise)(torch.full((2, 3, 5, 6), -10.0))
    assert torch.equal(out, torch.zeros_like(out))


def test_noise_sits_before_every_relu_and_evaluation_is_noise_free():
    model = WideResNet(10, 1)
    relus = [m for m in model.modules() if isinstance(m, NoisyReLU)]
    assert len(relus) == 2 * 3 + 1  # twice per block (3 blocks at depth 10), plus the final one
    assert all(r.noise is model.noise for r in relus)
    x = torch.randn(2, 3, 32, 32)
    model.noise.sigma = 1.0
    model.eval()
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("epoch, lr", [(1, 0.1), (59, 0.1), (60, 0.02), (119, 0.02), (120, 0.004),
                                       (149, 0.004), (150, 0.0008), (200, 0.0008)])
def test_default_schedule_anneals_at_60_120_150_of_200(epoch, lr):
    assert schedules.lr_at(0.1, schedules.milestones("default", 200), epoch) == pytest.approx(lr)


@pytest.mark.parametrize("epoch, lr", [(1, 0.1), (29, 0.1), (30, 0.004), (60, 0.004)])
def test_decay_early_anneals_at_30_of_60(epoch, lr):
    assert schedules.lr_at(0.1, schedules.milestones("decay_early", 60), epoch) == pytest.approx(lr)


def test_fixed_and_explicit_schedules_and_a_scaled_quick_run():
    assert schedules.lr_at(0.004, schedules.milestones("fixed", 60), 60) == 0.004
    steps = schedules.milestones("5:0.5,10:0.1", 20)
    assert [schedules.lr_at(1.0, steps, e) for e in (4, 5, 9, 10)] == pytest.approx([1, 0.5, 0.5, 0.05])
    assert schedules.milestones("decay_early", 12) == ((6, 0.04),)
    assert [e for e, _ in schedules.milestones("default", 10)] == [3, 6, 8]
    with pytest.raises(ValueError, match="is not default"):
        schedules.milestones("sometimes", 10)


def test_noise_decay_per_epoch_is_the_released_code_per_iteration_the_paper():
    assert schedules.sigma_at(0.2, (), 0.995, "epoch", 1, 0) == 0.2
    assert schedules.sigma_at(0.2, (), 0.995, "epoch", 3, 5000) == pytest.approx(0.2 * 0.995 ** 2)
    per_iteration = schedules.sigma_at(0.2, (), 0.995, "iteration", 3, 782)
    assert per_iteration == pytest.approx(0.2 * 0.995 ** 782) and per_iteration < 1e-2


@pytest.mark.parametrize("epoch, sigma", [(1, 0.4), (29, 0.4), (30, 4e-6), (60, 4e-6)])
def test_patch_noise_drops_to_4e_6_at_the_anneal(epoch, sigma):
    assert schedules.sigma_at(0.4, ((30, 1e-5),), 1.0, "epoch", epoch, 0) == pytest.approx(sigma)
