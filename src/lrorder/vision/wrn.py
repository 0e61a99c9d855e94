"""WideResNet with pre-activation noise (Li, Wei & Ma 2019, Sections 6 and H.1).

The architecture and init follow the PyTorch WideResNet the released code uses
(xternalz/WideResNet-pytorch): pre-activation basic blocks BN -> ReLU -> conv, a 1x1 shortcut
conv on the activated input where the width changes, conv weights N(0, 2 / (k*k*out)), BN
weight 1 and bias 0, linear bias 0, no dropout. WRN-16-10 has 17,116,634 parameters.

Before every ReLU the network adds sigma * n, where n is one Gaussian map of shape (H, W)
drawn at every training step and broadcast over batch and channels (the paper's cheap
stand-in for i.i.d. noise on the whole hidden layer). Evaluation mode adds none.

`WideResNet(..., models=M)` is M such networks in one set of kernels (`lrorder.vision.stacked`):
every conv after the stem is grouped with M groups, BatchNorm runs over the M stacked channel
blocks (its statistics are per channel, so this is exactly per-model BN), the stem reads the
shared input, and the last layer is a `StackedLinear`; logits are (batch, M, classes).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class NoiseSource:
    """The noise level sigma shared by every noisy ReLU of a network, and its generator."""

    def __init__(self, generator: torch.Generator | None = None):
        self.sigma = 0.0
        self.generator = generator

    def sample(self, x: torch.Tensor) -> torch.Tensor | None:
        """sigma * n for one (H, W) map n, or None without noise (then nothing is drawn)."""
        if self.sigma <= 0:
            return None
        n = torch.randn(x.shape[-2:], device=x.device, dtype=x.dtype, generator=self.generator)
        return self.sigma * n


class NoisyReLU(nn.Module):
    """ReLU(x + sigma * n) with one (H, W) Gaussian map n per call, in training mode only."""

    def __init__(self, noise: NoiseSource):
        super().__init__()
        self.noise = noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = self.noise.sample(x) if self.training else None
        return torch.relu(x if noise is None else x + noise)


class StackedLinear(nn.Module):
    """M linear layers, weight (M, out, in): features (B, M * in) -> logits (B, M, out)."""

    def __init__(self, models: int, features: int, classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(models, classes, features))
        self.bias = nn.Parameter(torch.zeros(models, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.shape[0], self.weight.shape[0], -1)
        out = torch.einsum("bmc,mkc->bmk", x, self.weight)
        return out + self.bias.to(out.dtype)  # as nn.Linear under autocast: bias in the matmul's dtype


def _conv(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False, groups=groups)


class BasicBlock(nn.Module):
    """Pre-activation block; where the width changes, the shortcut sees the activated input."""

    def __init__(self, cin: int, cout: int, stride: int, noise: NoiseSource, models: int = 1):
        super().__init__()
        m = models
        self.bn1, self.relu1 = nn.BatchNorm2d(m * cin), NoisyReLU(noise)
        self.conv1 = _conv(m * cin, m * cout, 3, stride, m)
        self.bn2, self.relu2 = nn.BatchNorm2d(m * cout), NoisyReLU(noise)
        self.conv2 = _conv(m * cout, m * cout, 3, 1, m)
        self.shortcut = _conv(m * cin, m * cout, 1, stride, m) if (cin != cout or stride != 1) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(activated))))
        return out + (x if self.shortcut is None else self.shortcut(activated))


class WideResNet(nn.Module):
    """WRN-depth-widen: three groups of (depth - 4) / 6 blocks, widths 16k, 32k, 64k."""

    def __init__(self, depth: int = 16, widen: int = 10, classes: int = 10, channels: int = 3,
                 noise: NoiseSource | None = None, models: int | None = None):
        super().__init__()
        if (depth - 4) % 6 or depth < 10:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1 (got {depth})")
        self.noise = noise or NoiseSource()
        self.arch = {"depth": depth, "widen": widen, "classes": classes, "channels": channels}
        blocks = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        m = models or 1
        layers: list[nn.Module] = [_conv(channels, m * widths[0], 3, 1)]
        for group in range(3):
            for i in range(blocks):
                cin = widths[group] if i == 0 else widths[group + 1]
                stride = 2 if (group > 0 and i == 0) else 1
                layers.append(BasicBlock(cin, widths[group + 1], stride, self.noise, m))
        layers += [nn.BatchNorm2d(m * widths[3]), NoisyReLU(self.noise)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(widths[3], classes) if models is None else StackedLinear(m, widths[3], classes)
        self._init()

    def _init(self) -> None:
        """The reference init of one network (a stacked one is loaded from its members)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
