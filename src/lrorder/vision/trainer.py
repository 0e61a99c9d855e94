"""Training one WideResNet by one method of the paper, epoch by epoch, resumable exactly: the
oracle of the released code's maths, not a production path. Runs train with
`lrorder.vision.stacked.StackedTrainer` (M = 1 for one arm), which the tests, `lrorder selftest`
and `lrorder bench` hold to this `Trainer`; the pieces both share (methods, precision, random
streams, resume across devices) live here.

SGD with Nesterov momentum 0.9, weight decay 5e-4, batch 128, cross-entropy (the released
code). `precision` "bf16" is bf16 autocast with channels_last, on CUDA and on the CPU alike;
"fp32" is the reference (channels_last on CUDA only). Losses and hit counts are summed
on the device and read once per epoch, so the step never waits for the host. Every random
stream (batch order and patches, pre-activation noise, evaluation draws) has its own seeded
generator whose state is part of the checkpoint. A checkpoint may be resumed on another device
than the one that wrote it (`restore_generators` says what happens to the random streams then).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from lrorder.vision import schedules
from lrorder.vision.loader import ImageSet
from lrorder.vision.wrn import WideResNet

EVAL_BATCH = {True: 1000, False: 250}  # CUDA: large batches; CPU: cache-sized ones (2x faster)
Precision = Literal["bf16", "fp32"]
PRECISIONS: tuple[Precision, ...] = ("bf16", "fp32")
STREAMS = ("data", "noise", "eval")  # the random streams of a seed, in the order of their seeds
# bf16 on CUDA and on the CPU alike: on the 2-core AVX-512 BF16 test CPU a WRN-10-1 step at batch
# 128 is 2.1-2.6x faster than in fp32, and the quick accuracies move less than the seed spread
DEFAULT_PRECISION: Precision = "bf16"


@dataclasses.dataclass(frozen=True)
class Method:
    """One training method of the paper: its learning-rate and pre-activation-noise schedules."""

    name: str
    lr0: float
    lr_schedule: str = "fixed"
    sigma0: float = 0.0
    sigma_schedule: str = "fixed"
    sigma_decay: float = 1.0
    sigma_per: Literal["epoch", "iteration"] = "epoch"

    def lr(self, epoch: int, epochs: int) -> float:
        """Learning rate of 1-based `epoch` in a run of `epochs`."""
        return schedules.lr_at(self.lr0, schedules.milestones(self.lr_schedule, epochs), epoch)

    def sigma(self, epoch: int, iteration: int, epochs: int) -> float:
        """Noise level at 1-based `epoch` and 0-based global `iteration` in a run of `epochs`."""
        return schedules.sigma_at(self.sigma0, schedules.milestones(self.sigma_schedule, epochs),
                                  self.sigma_decay, self.sigma_per, epoch, iteration)


@dataclasses.dataclass(frozen=True)
class Optimisation:
    """The settings every method shares (Section H: the released code's values)."""

    epochs: int
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4


def resolve_precision(device: str, precision: Precision | None) -> tuple[Precision, torch.memory_format]:
    """`precision` (None: `DEFAULT_PRECISION`) and the memory format to train in:
    channels_last where the convolutions are faster in it (CUDA; bf16 on the CPU), else the
    contiguous layout of the fp32 CPU reference."""
    precision = precision or DEFAULT_PRECISION
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    cuda = device.startswith("cuda")
    return precision, torch.channels_last if cuda or precision == "bf16" else torch.contiguous_format


def autocast(device: str, precision: Precision, cache: bool = True):
    """bf16 autocast on the device's type, or nothing for fp32 (the reference). A step captured
    as a CUDA graph must not cache casts across the capture (`cache=False`; each weight is cast
    once per forward anyway)."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext()


def seeded_generators(seed: int, device: str) -> dict[str, torch.Generator]:
    """One generator per random stream, seeded from the seed alone, so every arm of a seed sees
    the same batches, patch draws, noise maps and evaluation draws: a paired design, better for
    comparing arms (the released code draws a new initialization and batch order per model)."""
    return {name: torch.Generator(device).manual_seed(seed * 1000 + i) for i, name in enumerate(STREAMS)}


def resumed_seed(seed: int, epoch: int, stream: str) -> int:
    """The seed of random stream `stream` of `seed` re-derived after `epoch` completed epochs
    (see `restore_generators`): a 64-bit hash of the three (numpy's SeedSequence), so it depends
    on nothing else and differs from stream to stream and epoch to epoch."""
    entropy = (seed, epoch, STREAMS.index(stream))
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


def device_type(device: str) -> str:
    return torch.device(device).type


def restore_generators(generators: Mapping[str, torch.Generator | None], saved: Mapping[str, Any],
                       saved_on: str, device: str, seed: int, epoch: int) -> None:
    """Set every generator (None: a stream not drawn) to its state in `saved`, in place, or, when
    `saved` was written on another device type, re-derive it.

    A generator state fits only the device type that wrote it (a CPU generator holds a Mersenne
    Twister state, a CUDA one a Philox seed and offset), so a run resumed on another device type
    cannot go on with the draws it would have made: each generator is then seeded again, with
    `resumed_seed(seed, epoch, stream)`, deterministically from the seed, the completed epochs
    and the stream. Such a run is reproducible (the same checkpoint resumed on the same device
    type twice gives the same run), but it is not the uninterrupted run, on either device; a
    resume on the device type that wrote the checkpoint is exact."""
    rederive = device_type(saved_on) != device_type(device)
    for name, generator in generators.items():
        if generator is None:
            continue
        if rederive:
            generator.manual_seed(resumed_seed(seed, epoch, name.split(" ")[0]))
        else:
            generator.set_state(saved[name])


def sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


class Trainer:
    """Trains `model` on `train` by `method`, evaluating every set in `evals` after each epoch;
    `precision` None is `DEFAULT_PRECISION`."""

    def __init__(self, model: WideResNet, method: Method, optim: Optimisation, train: ImageSet,
                 evals: Mapping[str, ImageSet], seed: int, device: str,
                 precision: Precision | None = None):
        self.cuda = device.startswith("cuda")
        self.device = device
        self.precision, self.layout = resolve_precision(device, precision)
        self.model = model.to(device, memory_format=self.layout)
        self.method, self.optim, self.train_set, self.evals = method, optim, train, evals
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=method.lr0,
                                         momentum=optim.momentum, nesterov=True,
                                         weight_decay=optim.weight_decay)
        self.seed = seed
        self.generators = seeded_generators(seed, device)
        self.model.noise.generator = self.generators["noise"]
        self.epoch = 0  # epochs completed
        self.iteration = 0  # training steps completed

    def autocast(self):
        return autocast(self.device, self.precision)

    def lr(self, epoch: int) -> float:
        return self.method.lr(epoch, self.optim.epochs)

    def sigma(self, epoch: int, iteration: int) -> float:
        return self.method.sigma(epoch, iteration, self.optim.epochs)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step on the batch; returns its summed loss and hits, left on the device."""
        with self.autocast():
            logits = self.model(x.contiguous(memory_format=self.layout))
            loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach() * len(y), (logits.argmax(1) == y).sum()

    def train_epoch(self) -> dict[str, float]:
        epoch = self.epoch + 1
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(epoch)
        self.model.train()
        totals = torch.zeros(2, device=self.model.fc.weight.device)
        for x, y in self.train_set.batches(self.optim.batch_size, self.generators["data"], True):
            self.model.noise.sigma = self.sigma(epoch, self.iteration)
            loss, hits = self.step(x, y)
            totals += torch.stack([loss.float(), hits.float()])
            self.iteration += 1
        loss_sum, hit_sum = totals.tolist()
        return {"lr": self.lr(epoch), "sigma": self.model.noise.sigma,
                "train_loss": loss_sum / self.train_set.size,
                "train_acc": 100.0 * hit_sum / self.train_set.size}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Accuracy (%) and mean loss on every evaluation set, without noise (eval mode)."""
        self.model.eval()
        record = {}
        for name, images in self.evals.items():
            totals = torch.zeros(2, device=self.model.fc.weight.device)
            for x, y in images.batches(EVAL_BATCH[self.cuda], self.generators["eval"], shuffle=False):
                with self.autocast():
                    logits = self.model(x.contiguous(memory_format=self.layout))
                loss = F.cross_entropy(logits.float(), y, reduction="sum")
                totals += torch.stack([loss, (logits.argmax(1) == y).sum().float()])
            loss_sum, hit_sum = totals.tolist()
            record[f"{name}_loss"] = loss_sum / images.size
            record[f"{name}_acc"] = 100.0 * hit_sum / images.size
        return record

    def run_epoch(self) -> dict[str, Any]:
        """Train one epoch and evaluate; `diverged` is True when the training loss is not finite."""
        start = time.perf_counter()
        record = self.train_epoch()
        sync(self.cuda)
        middle = time.perf_counter()
        self.epoch += 1
        diverged = not math.isfinite(record["train_loss"])
        if not diverged:
            record.update(self.evaluate())
        sync(self.cuda)
        return {"epoch": self.epoch, **record, "train_seconds": middle - start,
                "eval_seconds": time.perf_counter() - middle, "diverged": diverged}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch, "iteration": self.iteration, "device": device_type(self.device),
                "generators": {n: g.get_state() for n, g in self.generators.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from `state`, wherever its tensors are (a resume point is loaded on the CPU):
        the weights and momentum buffers are copied into this trainer's, on its device; the
        generators as `restore_generators` says (re-derived when `state` comes from another
        device type)."""
        self.model.load_state_dict(state["model"])  # copies into the parameters, on their device
        self.optimizer.load_state_dict(state["optimizer"])  # torch moves the buffers to the params'
        self.epoch, self.iteration = state["epoch"], state["iteration"]
        restore_generators(self.generators, state["generators"], state.get("device", self.device),
                           self.device, self.seed, self.epoch)
