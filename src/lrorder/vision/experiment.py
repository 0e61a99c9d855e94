"""What the three CIFAR recipes share: the config fields, building the data of one seed, and
training every method ("arm") from the same data, patches and initial weights, resumably.

Per seed: the data subset, the patch patterns and both patchable masks are drawn from one
CPU generator seeded by the seed, and the initial weights from `torch.manual_seed(seed)`, so
every arm of a seed sees the same data and starts from the same network on any device.
A resume point (ctx.save_state) is written every `checkpoint_every` epochs and after each arm
(or group of arms trained together).

Arms that share a training set train together on the fast path (`lrorder.vision.stacked`, one
network for the group; `fast`, on by default with CUDA only) or one by one with the plain
`Trainer`, the reference. Both log the same fields per arm and epoch; the fast path's lines come
epoch by epoch, every arm of the group in turn.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch

from lrorder.core.config import at_least, between, param
from lrorder.vision import data
from lrorder.vision.loader import ImageSet
from lrorder.vision.patch import PatchRule, patchable_mask
from lrorder.vision.stacked import StackedTrainer
from lrorder.vision.trainer import Method, Optimisation, Trainer
from lrorder.vision.wrn import WideResNet

LAST = 5  # final accuracies are also reported as the mean of the last 5 epochs (one epoch is noisy)
PATCH_ONLY_SIZE = 1000  # the released code's patch-only validation set


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """Fields every CIFAR recipe has; each recipe adds its methods' learning rates and noise."""

    dataset: Literal["cifar10", "fashion-mnist"] = param(
        "cifar10", "image data set; cifar10 uses the python release if present, else the JPEG copy "
        "(`lrorder data where` shows which); fashion-mnist is a lossless CPU-sized stand-in",
        paper="cifar10")
    data_dir: str | None = param(None, f"data directory (None: ${data.ENV}, else {data.DEFAULT_DIR})")
    train_size: int | None = param(None, "training images, a random subset per seed (None: all 50,000)",
                                   check=at_least(100))
    test_size: int | None = param(None, "test images for the clean and mixed validation sets "
                                  "(None: all 10,000)", check=at_least(100))
    depth: int = param(16, "WideResNet depth (6n + 4)", check=at_least(10), paper=16)
    widen: int = param(10, "WideResNet widen factor k (WRN-16-10: 17.1 M parameters)",
                       check=at_least(1), paper=10)
    epochs: int = param(60, "training epochs; the named schedules' anneals scale with it",
                        check=at_least(1))
    batch_size: int = param(128, "SGD batch size (last partial batch kept)", check=at_least(1), paper=128)
    momentum: float = param(0.9, "Nesterov momentum", check=between(0, 0.999), paper=0.9)
    weight_decay: float = param(5e-4, "L2 weight decay", check=at_least(0), paper=5e-4)
    checkpoint_every: int = param(5, "epochs between resume points (also one after every method)",
                                  check=at_least(1))
    fast: Literal["auto", "on", "off"] = param(
        "auto", "train the methods that share a training set at once, stacked in one network "
        "(same math as one by one, tested on CPU); auto: on with CUDA, off on the CPU (the reference)")
    cuda_graph: bool = param(False, "with fast on CUDA: capture the training step once as a CUDA "
                             "graph and replay it (off until measured on a GPU; docs/vision.md)")

    def fast_on(self, device: str) -> bool:
        return self.fast == "on" or (self.fast == "auto" and device.startswith("cuda"))

    def optimisation(self) -> Optimisation:
        return Optimisation(self.epochs, self.batch_size, self.momentum, self.weight_decay)

    def patch_scales(self) -> dict[str, float]:
        """Keyword arguments of `PatchRule.draw` (recipes with a patch override this)."""
        return {}


def check_methods(config) -> list[str]:
    """`config.methods` must be a non-empty subset of its default (every method of the recipe)."""
    known = next(f.default for f in dataclasses.fields(config) if f.name == "methods")
    chosen = config.methods
    if not chosen or any(m not in known for m in chosen):
        return [f"methods must be a comma-separated subset of {','.join(known)} (got {','.join(chosen)})"]
    return []


@dataclasses.dataclass(frozen=True)
class Arm:
    """One training run of a seed: a method on one of the seed's training sets."""

    name: str
    method: Method
    train: str = "train"


@dataclasses.dataclass(frozen=True)
class Setting:
    """The data of one seed: training sets by name and validation sets by name."""

    trains: Mapping[str, ImageSet]
    evals: Mapping[str, ImageSet]
    channels: int
    source: str


def build_setting(config: VisionConfig, seed: int, device: str, patched: bool) -> Setting:
    """Subsets, patches and patchable masks of `seed` (drawn in a fixed order, so the
    never-patched images of the control recipe are exactly those of `cifar-patch`)."""
    images = data.load(config.dataset, config.data_dir)
    generator = torch.Generator().manual_seed(seed)
    train_index = _subset(len(images.train_x), config.train_size, generator)
    test_index = _subset(len(images.test_x), config.test_size, generator)
    channels = images.train_x.shape[1]
    rule = PatchRule.draw(channels, 10, generator, **config.patch_scales())
    train_patchable = patchable_mask(len(train_index), generator)
    test_patchable = patchable_mask(len(test_index), generator)
    layout = {"channels_last": device.startswith("cuda")}
    train = ImageSet.from_arrays("train", images.train_x[train_index], images.train_y[train_index],
                                 images.mean, images.std, device, **layout)
    clean = ImageSet.from_arrays("clean", images.test_x[test_index], images.test_y[test_index],
                                 images.mean, images.std, device, **layout)
    if not patched:
        return Setting({"full": train, "subset": train.subset(torch.nonzero(~train_patchable)[:, 0])},
                       {"val": clean}, channels, images.source)
    mixed = clean.with_patch("mixed", rule, test_patchable)
    return Setting({"train": train.with_patch("train", rule, train_patchable)},
                   {"clean": clean, "mixed": mixed,
                    "patch": ImageSet.blank("patch", mixed, PATCH_ONLY_SIZE)},
                   channels, images.source)


def _subset(n: int, size: int | None, generator: torch.Generator) -> np.ndarray:
    """A random subset (the splits are sorted by class, so never the first `size`), sorted."""
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(torch.randperm(n, generator=generator)[:size].numpy())


def run_arms(ctx, config: VisionConfig, arms: list[Arm], patched: bool) -> dict[str, list[float]]:
    """Train every arm for every seed; returns {metric: [value per seed]} (see `arm_metrics`)."""
    state: dict[str, Any] = ctx.load_state() or {"done": {}}
    for seed in ctx.seeds:
        if seed in state["done"]:
            continue
        if state.get("seed") != seed:
            state.update(seed=seed, arms={}, current=None)
        setting = build_setting(config, seed, ctx.device, patched)
        torch.manual_seed(seed)
        initial = WideResNet(config.depth, config.widen, channels=setting.channels).state_dict()
        for group in _groups(arms, config.fast_on(ctx.device)):
            todo = [arm for arm in group if arm.name not in state["arms"]]
            if todo:
                state["arms"].update(_train_group(ctx, config, todo, setting, initial, seed, state))
                state["current"] = None
                ctx.save_state(state)
        state["done"][seed] = {k: v for m in state["arms"].values() for k, v in m.items()}
        state.update(seed=None, arms={}, current=None)
        ctx.save_state(state)
    return {name: [state["done"][s][name] for s in ctx.seeds] for name in state["done"][ctx.seeds[0]]}


def _groups(arms: list[Arm], fast: bool) -> list[list[Arm]]:
    """Arms trained together: on the fast path those sharing a training set, else one by one."""
    if not fast:
        return [[arm] for arm in arms]
    trains = dict.fromkeys(arm.train for arm in arms)
    return [[arm for arm in arms if arm.train == train] for train in trains]


def _trainer(config: VisionConfig, arms: list[Arm], setting: Setting, initial: Mapping[str, Any],
             seed: int, device: str):
    """The trainer of a group and a function running one epoch of it: one record per arm."""
    models = []
    for _ in arms:
        models.append(WideResNet(config.depth, config.widen, channels=setting.channels))
        models[-1].load_state_dict(initial)
    train = setting.trains[arms[0].train]
    if config.fast_on(device):
        trainer = StackedTrainer(models, [arm.method for arm in arms], config.optimisation(), train,
                                 setting.evals, seed, device, graph=config.cuda_graph)
        return trainer, trainer.run_epoch
    plain = Trainer(models[0], arms[0].method, config.optimisation(), train, setting.evals, seed, device)
    return plain, lambda: [plain.run_epoch()]


def _train_group(ctx, config: VisionConfig, arms: list[Arm], setting: Setting,
                 initial: Mapping[str, Any], seed: int, state: dict[str, Any]
                 ) -> dict[str, dict[str, float]]:
    """Train the arms of one group to the end (or to divergence); returns each arm's metrics."""
    trainer, run_epoch = _trainer(config, arms, setting, initial, seed, ctx.device)
    key = "+".join(arm.name for arm in arms)
    current = state.get("current")
    history: dict[str, list[dict[str, Any]]] = {arm.name: [] for arm in arms}
    if current and current["arm"] == key:
        trainer.load_state_dict(current["trainer"])
        history = current["history"]
    live = [arm.name for arm in arms if len(history[arm.name]) == trainer.epoch]  # not diverged
    bar = ctx.progress(config.epochs, f"seed {seed} {key}")
    bar.update(trainer.epoch)
    while trainer.epoch < config.epochs and live:
        for arm, record in zip(arms, run_epoch()):
            if arm.name not in live:
                continue
            ctx.log(seed=seed, method=arm.name, data=setting.source, **record)
            if record["diverged"]:
                ctx.diverged(f"seed {seed} {arm.name}: non-finite training loss in epoch {record['epoch']}")
                live.remove(arm.name)
                continue
            history[arm.name].append(record)
            bar.set_postfix({k: f"{v:.1f}" for k, v in record.items() if k.endswith("_acc")})
        bar.update()
        if live and trainer.epoch % config.checkpoint_every == 0 and trainer.epoch < config.epochs:
            state["current"] = {"arm": key, "trainer": trainer.state_dict(), "history": history}
            ctx.save_state(state)
    bar.close()
    return {arm.name: arm_metrics(arm.name, history[arm.name], setting.evals, config.epochs)
            for arm in arms}


def arm_metrics(arm: str, history: list[dict[str, Any]], evals: Mapping[str, Any],
                epochs: int) -> dict[str, float]:
    """`{set}_acc_{arm}` (final epoch) and `{set}_acc_{arm}_last5` per validation set; NaN for
    an arm that diverged before its last epoch."""
    metrics = {}
    for name in evals:
        accs = [r[f"{name}_acc"] for r in history]
        complete = len(accs) == epochs
        metrics[f"{name}_acc_{arm}"] = accs[-1] if complete else float("nan")
        metrics[f"{name}_acc_{arm}_last{LAST}"] = (float(np.mean(accs[-LAST:])) if complete
                                                  else float("nan"))
    return metrics
