"""On-device image sets: the whole split lives on the device as uint8; batches are slices of a
device permutation, normalised (and patched) per batch by vectorized tensor ops.

Uint8 keeps the resident copy 4x smaller than floats and the conversion is one fused kernel
per batch, so no per-example Python and no host-to-device copy ever sits on the hot path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import torch

from lrorder.vision.patch import PatchRule


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """A labelled split on the device, or (pixels None) `size` all-zero images with labels drawn
    at each load, as the released code's patch-only set; `patch` rewrites its patchable images."""

    name: str
    pixels: torch.Tensor | None
    labels: torch.Tensor | None
    mean: torch.Tensor
    std: torch.Tensor
    shape: tuple[int, int, int]
    classes: int
    size: int
    patch: PatchRule | None = None
    patchable: torch.Tensor | None = None
    channels_last: bool = False

    @classmethod
    def from_arrays(cls, name: str, x: np.ndarray, y: np.ndarray, mean, std, device, *,
                    classes: int = 10, patch: PatchRule | None = None,
                    patchable: torch.Tensor | None = None, channels_last: bool = False) -> ImageSet:
        pixels = torch.from_numpy(np.ascontiguousarray(x)).to(device)
        stats = [torch.tensor(v, dtype=torch.float32, device=device).view(1, -1, 1, 1)
                 for v in (mean, std)]
        return cls(name, pixels, torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device),
                   *stats, tuple(x.shape[1:]), classes, len(x),
                   None if patch is None else patch.to(device),
                   None if patchable is None else patchable.to(device), channels_last)

    @classmethod
    def blank(cls, name: str, like: ImageSet, size: int) -> ImageSet:
        """`size` zero images (in normalised space) shaped like `like`, every one patchable."""
        device = like.mean.device
        return dataclasses.replace(like, name=name, pixels=None, labels=None, size=size,
                                   patchable=torch.ones(size, dtype=torch.bool, device=device))

    def with_patch(self, name: str, patch: PatchRule, patchable: torch.Tensor) -> ImageSet:
        return dataclasses.replace(self, name=name, patch=patch.to(self.mean.device),
                                   patchable=patchable.to(self.mean.device))

    def subset(self, index: torch.Tensor) -> ImageSet:
        index = index.to(self.mean.device)
        return dataclasses.replace(
            self, pixels=self.pixels[index], labels=self.labels[index], size=len(index),
            patchable=None if self.patchable is None else self.patchable[index])

    def batch(self, index: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Images `index` as normalised floats with the patch rule applied, and their labels."""
        device = self.mean.device
        if self.pixels is None:
            y = torch.randint(0, self.classes, (len(index),), device=device, generator=generator)
            x = torch.zeros((len(index), *self.shape), device=device)
        else:
            y = self.labels[index]
            x = (self.pixels[index].float() / 255 - self.mean) / self.std
        if self.patch is not None:
            x = self.patch.apply(x, y, self.patchable[index], generator)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def batches(self, batch_size: int, generator: torch.Generator, shuffle: bool
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass in batches of `batch_size`; the last, partial batch is kept."""
        device = self.mean.device
        order = (torch.randperm(self.size, device=device, generator=generator) if shuffle
                 else torch.arange(self.size, device=device))
        for start in range(0, self.size, batch_size):
            yield self.batch(order[start:start + batch_size], generator)

    def steps(self, batch_size: int) -> int:
        return -(-self.size // batch_size)
