"""The production trainer: M >= 1 WideResNets trained at once in one set of kernels, with the
maths of the plain `Trainer` (the released code's, the tests' oracle).

Every group of arms of a recipe trains here (`lrorder.vision.experiment`): one arm (M = 1, an
ordinary network, no grouped convolution), or the arms of a seed that share a training set.
Those see the same batches (their data generators share a seed), so their M networks become one
`WideResNet(models=M)`: grouped convolutions, per-model BatchNorm over the stacked channels, a
stacked last layer. The loss is the sum of the M models' mean cross-entropies, whose gradient
with respect to model m's parameters is model m's own. Each model keeps its own noise
generator, learning rate and sigma, so each trains exactly as it would alone
(tests/test_vision_fast.py checks this against `Trainer` on the CPU).

Learning rates and sigmas live in device tensors and the optimizer is written out, so nothing in
a step reads the host: on CUDA, `graph=True` captures the step once as a CUDA graph and replays
it (unmeasured, so off by default; see docs/vision.md, "Speed").
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from lrorder.vision.loader import ImageSet
from lrorder.vision.trainer import (
    EVAL_BATCH,
    Method,
    Optimisation,
    Precision,
    autocast,
    device_type,
    resolve_precision,
    restore_generators,
    seeded_generators,
    sync,
)
from lrorder.vision.wrn import WideResNet

GRAPH_WARMUP = 3  # eager steps before capture: cuDNN picks its kernels, autograd allocates its state


def _per_model(key: str) -> bool:
    """The step counter of BatchNorm is the same for every model, so it is stored once."""
    return not key.endswith("num_batches_tracked")


def stack_states(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The state dict of `WideResNet(models=M)` holding the M single-network `states`."""
    return {key: (torch.stack if key.startswith("fc.") else torch.cat)([s[key] for s in states])
            if _per_model(key) else states[0][key] for key in states[0]}


def unstack_state(state: Mapping[str, torch.Tensor], models: int) -> list[dict[str, torch.Tensor]]:
    """The inverse of `stack_states`: one single-network state dict per model."""
    members: list[dict[str, torch.Tensor]] = [{} for _ in range(models)]
    for key, value in state.items():
        parts = ((value.unbind(0) if key.startswith("fc.") else value.chunk(models))
                 if _per_model(key) else [value] * models)
        for member, part in zip(members, parts):
            member[key] = part
    return members


class StackedNoise:
    """Model m's noise is sigma[m] * n_m, n_m one (H, W) map from generator m per call; a model
    without generator has none and draws nothing, as a plain network with sigma 0."""

    def __init__(self, sigma: torch.Tensor, generators: Sequence[torch.Generator | None]):
        self.sigma, self.generators = sigma, list(generators)

    def sample(self, x: torch.Tensor) -> torch.Tensor | None:
        """(M * C, H, W) noise for stacked activations x (B, M * C, H, W), or None."""
        if not any(self.generators):
            return None
        shape = x.shape[-2:]
        maps = torch.stack([torch.zeros(shape, device=x.device, dtype=x.dtype) if g is None else
                            torch.randn(shape, device=x.device, dtype=x.dtype, generator=g)
                            for g in self.generators])
        noise = (self.sigma.view(-1, 1, 1) * maps).to(x.dtype)
        return noise.repeat_interleave(x.shape[1] // len(self.generators), dim=0)


class NesterovSGD:
    """torch.optim.SGD(momentum, nesterov=True, weight_decay) over stacked parameters, model m
    stepping with learning rate lr[m] (a device tensor). Every stacked parameter has the model
    axis first. The momentum buffers start at zero, so the first step's momentum * 0 + g is
    torch's buffer = g, without a branch that a CUDA graph could not hold."""

    def __init__(self, params: Sequence[torch.nn.Parameter], lr: torch.Tensor, momentum: float,
                 weight_decay: float):
        self.params, self.lr = list(params), lr
        self.momentum, self.weight_decay = momentum, weight_decay
        self.buffers = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        models = len(self.lr)
        for p, buffer in zip(self.params, self.buffers):
            grad = p.grad.add(p, alpha=self.weight_decay)
            buffer.mul_(self.momentum).add_(grad)
            grad.add_(buffer, alpha=self.momentum)
            lr = self.lr.view(models, *[1] * p.dim())
            p.unflatten(0, (models, -1)).sub_(lr * grad.unflatten(0, (models, -1)))

    def state_dict(self) -> dict[str, Any]:
        return {"buffers": self.buffers}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for buffer, saved in zip(self.buffers, state["buffers"]):
            buffer.copy_(saved)


class StackedTrainer:
    """`Trainer`'s maths for M >= 1 models with M methods on one training set, in one network.
    `run_epoch` returns one record per model, with the fields of `Trainer.run_epoch` (the seconds
    are the group's); state dicts resume exactly. `precision` as `Trainer`'s."""

    def __init__(self, models: Sequence[WideResNet], methods: Sequence[Method], optim: Optimisation,
                 train: ImageSet, evals: Mapping[str, ImageSet], seed: int, device: str,
                 graph: bool = False, precision: Precision | None = None):
        self.cuda = device.startswith("cuda")
        self.device = device
        self.precision, self.layout = resolve_precision(device, precision)
        self.methods, self.optim, self.train_set, self.evals = list(methods), optim, train, evals
        self.seed = seed
        self.generators = seeded_generators(seed, device)
        noise_state = self.generators.pop("noise").get_state()  # each noisy model gets a copy
        self.noise_generators = [torch.Generator(device).set_state(noise_state) if m.sigma0 > 0
                                 else None for m in methods]
        count = len(methods)
        self.noise = StackedNoise(torch.zeros(count, device=device), self.noise_generators)
        model = WideResNet(**models[0].arch, noise=self.noise, models=count)
        model.load_state_dict(stack_states([m.state_dict() for m in models]))
        self.model = model.to(device, memory_format=self.layout)
        self.optimizer = NesterovSGD(list(self.model.parameters()), torch.zeros(count, device=device),
                                     optim.momentum, optim.weight_decay)
        self.graph = torch.cuda.CUDAGraph() if graph and self.cuda else None
        self.eager_steps = 0
        self.static_batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self.epoch = 0  # epochs completed
        self.iteration = 0  # training steps completed

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One SGD step of every model; returns (2, M): summed loss and hits, left on the device."""
        with autocast(self.device, self.precision, cache=self.graph is None):
            logits = self.model(x.contiguous(memory_format=self.layout))
            losses = _cross_entropy(logits, y).mean(0)
        self.optimizer.zero_grad()
        losses.sum().backward()
        self.optimizer.step()
        hits = (logits.argmax(2) == y[:, None]).sum(0)
        return torch.stack([losses.detach() * len(y), hits.to(losses.dtype)])  # fp32 under autocast

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """`step`, replayed from a CUDA graph once captured; warm-up steps and batches of
        another size (the last, partial one) run eagerly."""
        if self.graph is None or len(y) != self.optim.batch_size:
            return self.step(x, y)
        if self.eager_steps < GRAPH_WARMUP:
            self.eager_steps += 1
            return self._side_stream_step(x, y)
        if self.static_batch is None:
            self._capture(x, y)
        self.static_batch[0].copy_(x)
        self.static_batch[1].copy_(y)
        self.graph.replay()
        return self.static_out.clone()

    def _side_stream_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """A real training step on a side stream, as CUDA graph warm-up must be."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = self.step(x, y)
        torch.cuda.current_stream().wait_stream(side)
        return out

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Record one step on static copies of the batch; the noise generators advance per replay."""
        self.static_batch = (x.clone(), y.clone())
        for generator in filter(None, self.noise_generators):
            self.graph.register_generator_state(generator)
        with torch.cuda.graph(self.graph):
            self.static_out = self.step(*self.static_batch)

    def train_epoch(self) -> list[dict[str, float]]:
        epoch, epochs = self.epoch + 1, self.optim.epochs
        steps = self.train_set.steps(self.optim.batch_size)
        lrs = [m.lr(epoch, epochs) for m in self.methods]
        sigmas = [[m.sigma(epoch, self.iteration + i, epochs) for m in self.methods] for i in range(steps)]
        device = self.optimizer.lr.device
        self.optimizer.lr.copy_(torch.tensor(lrs))
        sigma_table = torch.tensor(sigmas, device=device)  # one copy per epoch; per step a device copy
        self.model.train()
        totals = torch.zeros(2, len(self.methods), device=device)
        for i, (x, y) in enumerate(self.train_set.batches(self.optim.batch_size,
                                                          self.generators["data"], True)):
            self.noise.sigma.copy_(sigma_table[i])
            totals += self.train_step(x, y)
        self.iteration += steps
        losses, hits = totals.tolist()
        size = self.train_set.size
        return [{"lr": lr, "sigma": sigma, "train_loss": loss / size, "train_acc": 100.0 * hit / size}
                for lr, sigma, loss, hit in zip(lrs, sigmas[-1], losses, hits)]

    @torch.inference_mode()
    def evaluate(self) -> list[dict[str, float]]:
        """Every model's accuracy (%) and mean loss on every evaluation set, without noise."""
        self.model.eval()
        records: list[dict[str, float]] = [{} for _ in self.methods]
        for name, images in self.evals.items():
            totals = torch.zeros(2, len(self.methods), device=self.optimizer.lr.device)
            for x, y in images.batches(EVAL_BATCH[self.cuda], self.generators["eval"], shuffle=False):
                with autocast(self.device, self.precision):
                    logits = self.model(x.contiguous(memory_format=self.layout))
                hits = (logits.argmax(2) == y[:, None]).sum(0).float()
                totals += torch.stack([_cross_entropy(logits.float(), y).sum(0), hits])
            for record, loss, hit in zip(records, *totals.tolist()):
                record[f"{name}_loss"] = loss / images.size
                record[f"{name}_acc"] = 100.0 * hit / images.size
        return records

    def run_epoch(self) -> list[dict[str, Any]]:
        """Train one epoch and evaluate; a model's `diverged` is True when its loss is not finite."""
        start = time.perf_counter()
        records = self.train_epoch()
        sync(self.cuda)
        middle = time.perf_counter()
        self.epoch += 1
        diverged = [not math.isfinite(r["train_loss"]) for r in records]
        evaluations = [{}] * len(records) if all(diverged) else self.evaluate()
        sync(self.cuda)
        seconds = {"train_seconds": middle - start, "eval_seconds": time.perf_counter() - middle}
        return [{"epoch": self.epoch, **record, **({} if bad else evaluation), **seconds, "diverged": bad}
                for record, evaluation, bad in zip(records, evaluations, diverged)]

    def models(self) -> list[dict[str, torch.Tensor]]:
        """Each model's single-network state dict."""
        return unstack_state(self.model.state_dict(), len(self.methods))

    def state_dict(self) -> dict[str, Any]:
        generators = {n: g.get_state() for n, g in self.generators.items()}
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch, "iteration": self.iteration, "device": device_type(self.device),
                "generators": generators,
                "noise_generators": [g and g.get_state() for g in self.noise_generators]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from `state`, wherever its tensors are (a resume point is loaded on the CPU):
        the weights and momentum buffers are copied into this trainer's, on its device; the
        generators as `trainer.restore_generators` says (re-derived when `state` comes from
        another device type: every noisy model then gets the same re-derived noise stream, as
        every one gets a copy of the same stream at a fresh start). Load before the first step
        (a captured CUDA graph keeps the generators it registered, which are set in place)."""
        self.model.load_state_dict(state["model"])  # copies into the parameters, on their device
        self.optimizer.load_state_dict(state["optimizer"])  # copies into the buffers, likewise
        self.epoch, self.iteration = state["epoch"], state["iteration"]
        saved_on = state.get("device", self.device)
        restore_generators(self.generators, state["generators"], saved_on, self.device, self.seed,
                           self.epoch)
        noise = {f"noise {m}": g for m, g in enumerate(self.noise_generators)}
        restore_generators(noise, dict(zip(noise, state["noise_generators"])), saved_on, self.device,
                           self.seed, self.epoch)


def _cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example, per-model cross-entropy (B, M) of stacked logits (B, M, classes)."""
    return F.cross_entropy(logits.transpose(1, 2), y[:, None].expand(-1, logits.shape[1]),
                           reduction="none")
