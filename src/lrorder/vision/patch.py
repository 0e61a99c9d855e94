"""The patch-augmented data set of Li, Wei & Ma (2019), Section H.2, as the released code builds it.

A 7x7 patch in the image centre, written in normalised pixel space. Before training, once:
z = 1.25 N(0, I) and, per class c, zeta_c ~ U[-0.1, 0.1] (all of shape (C, 7, 7)), and a
fixed random 80% of the images are "patchable". Every time a patchable image is loaded it
becomes, with probability 0.2, patch-only (image zeroed, centre = z + s 1.75 a zeta_y) and
otherwise mixed (centre REPLACED by z + s zeta_y), with s uniform in {-1, +1}, a ~ U[0, 1].
The rule runs on whole batches on the device; the draws come from a torch.Generator.
"""

from __future__ import annotations

import dataclasses

import torch

SIZE = 7
Z_SCALE, ZETA_RANGE, ONLY_SCALE = 1.25, 0.1, 1.75  # sigma_z, beta, alpha of Section H.2
P_ONLY, P_PATCHABLE = 0.2, 0.8


def patch_start(height: int) -> int:
    """First row (and column) of the centre patch: int(16 - 7/2) = 12 on 32x32 images."""
    return int(height / 2 - SIZE / 2)


@dataclasses.dataclass(frozen=True)
class PatchRule:
    """The drawn-once patterns z (C, 7, 7) and zeta (classes, C, 7, 7), and the per-load rule."""

    z: torch.Tensor
    zeta: torch.Tensor
    p_only: float = P_ONLY
    only_scale: float = ONLY_SCALE

    @classmethod
    def draw(cls, channels: int, classes: int, generator: torch.Generator, z_scale: float = Z_SCALE,
             patch_sep: float = ZETA_RANGE, patch_only_scale: float = ONLY_SCALE) -> PatchRule:
        """z = z_scale N(0, I), zeta_c ~ U[-patch_sep, patch_sep], patch-only scale patch_only_scale:
        the paper's sigma_z, beta, alpha (tuned
        "so that large and small learning rates don't both ignore the patch or overfit to it")."""
        z = z_scale * torch.randn(channels, SIZE, SIZE, generator=generator)
        zeta = (torch.rand(classes, channels, SIZE, SIZE, generator=generator) * 2 - 1) * patch_sep
        return cls(z, zeta, only_scale=patch_only_scale)

    def to(self, device: torch.device | str) -> PatchRule:
        return dataclasses.replace(self, z=self.z.to(device), zeta=self.zeta.to(device))

    def apply(self, x: torch.Tensor, y: torch.Tensor, patchable: torch.Tensor,
              generator: torch.Generator) -> torch.Tensor:
        """The batch `x` (normalised, (B, C, H, W)) with the rule applied to its patchable images.

        Draws are made for every image, patchable or not, so the stream of random numbers
        depends only on the batch size and the run is deterministic given the generator.
        """
        batch, device = x.shape[0], x.device
        only = patchable & (torch.rand(batch, device=device, generator=generator) < self.p_only)
        sign = torch.randint(0, 2, (batch,), device=device, generator=generator) * 2 - 1
        a = torch.rand(batch, device=device, generator=generator)
        scale = sign * torch.where(only, self.only_scale * a, torch.ones_like(a))
        centre = self.z + scale.view(-1, 1, 1, 1) * self.zeta[y]
        out = x * (~only).view(-1, 1, 1, 1).to(x.dtype)
        top = patch_start(x.shape[-2])
        rows = slice(top, top + SIZE)
        region = out[:, :, rows, rows]
        out[:, :, rows, rows] = torch.where(patchable.view(-1, 1, 1, 1), centre.to(x.dtype), region)
        return out


def patchable_mask(n: int, generator: torch.Generator, fraction: float = P_PATCHABLE) -> torch.Tensor:
    """A fixed random subset of round(fraction * n) of n images, as a boolean mask."""
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=generator)[:round(fraction * n)]] = True
    return mask
