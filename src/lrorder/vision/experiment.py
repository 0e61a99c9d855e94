"""What the three CIFAR recipes share: building the data of one seed, and training every method
("arm") from the same data, patches and initial weights, resumably.

Per seed: the data subset, the patch patterns and both patchable masks are drawn from one
CPU generator seeded by the seed, and the initial weights from `torch.manual_seed(seed)`, so
every arm of a seed sees the same data and starts from the same network on any device.
The units of work of a run are a seed's groups of arms (one arm, or the arms trained together);
inside a unit a resume point (`ctx.checkpoint`) is written every `checkpoint_every` epochs.

Every group trains with a `StackedTrainer` of M >= 1 models (`lrorder.vision.stacked`), so CI
on the CPU tests the code a GPU runs. `fast` only decides the grouping: on (the default with
CUDA), the arms that share a training set are one group, one network; off (the default on the
CPU), every arm is its own group, M = 1, an ordinary network. The plain `Trainer` is not a
production path: it is the oracle of the released code's maths that the tests, `lrorder
selftest` and `lrorder bench` compare the stacked trainer with.

One contract for every grouping: an arm diverges when a loss is non-finite or its training
loss is above `max_loss`, and is logged no more while the others go on (a group whose arms all
diverged stops); Ctrl-C or SIGTERM exits with status 130 and keeps the last resume point. The
log comes unit by unit: with M = 1 one arm after another, each epoch by epoch; stacked, epoch
by epoch, every arm of the group in turn.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from lrorder.core import matched
from lrorder.core.metrics import Metric
from lrorder.vision import data
from lrorder.vision.config import EVALS, LAST, VisionConfig
from lrorder.vision.loader import ImageSet
from lrorder.vision.patch import PatchRule, patchable_mask
from lrorder.vision.stacked import StackedTrainer
from lrorder.vision.trainer import Method
from lrorder.vision.wrn import WideResNet

History = list[dict[str, Any]]  # an arm's epoch records, in order
PATCH_ONLY_SIZE = 1000  # the released code's patch-only validation set


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
                       dict(zip(EVALS[False], [clean])), channels, images.source)
    mixed = clean.with_patch("mixed", rule, test_patchable)
    return Setting({"train": train.with_patch("train", rule, train_patchable)},
                   dict(zip(EVALS[True], (clean, mixed, ImageSet.blank("patch", mixed, PATCH_ONLY_SIZE)))),
                   channels, images.source)


def _subset(n: int, size: int | None, generator: torch.Generator) -> np.ndarray:
    """A random subset (the splits are sorted by class, so never the first `size`), sorted."""
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(torch.randperm(n, generator=generator)[:size].numpy())


def run_arms(ctx, config: VisionConfig, arms: list[Arm], patched: bool) -> list[dict[str, History]]:
    """Train every arm of every seed, one unit of work per seed and group of arms; returns, per
    seed of `ctx.seeds`, each arm's history (shorter than `epochs` for an arm that diverged).

    Whether arms train stacked follows the device the run started on (`ctx.started_on`), not the
    one a resumed part runs on: the units and their resume points stay those the run began with
    (a run started with CUDA and resumed on the CPU goes on stacked, one started on the CPU goes
    on one arm at a time on CUDA)."""
    fast = config.fast_on(ctx.started_on)
    units = {f"seed {seed} {'+'.join(arm.name for arm in group)}": (seed, group)
             for seed in ctx.seeds for group in _groups(arms, fast)}
    built: dict[str, Any] = {}

    def train(unit: tuple[int, list[Arm]], partial: dict[str, Any] | None) -> dict[str, History]:
        seed, group = unit
        if built.get("seed") != seed:  # a seed's data and initial weights, built once for its groups
            setting = build_setting(config, seed, ctx.device, patched)
            torch.manual_seed(seed)
            initial = WideResNet(config.depth, config.widen, channels=setting.channels).state_dict()
            built.update(seed=seed, setting=setting, initial=initial)
        return _train_group(ctx, config, group, built["setting"], built["initial"], seed, partial)

    with cudnn_autotune(ctx.device):
        results = ctx.each(units, train)
    histories: list[dict[str, History]] = [{} for _ in ctx.seeds]
    for (seed, _), result in zip(units.values(), results.values()):
        histories[ctx.seeds.index(seed)].update(result)
    return histories


@contextlib.contextmanager
def cudnn_autotune(device: str):
    """Let cuDNN pick its fastest kernels for a run's fixed shapes, for the run only (the
    setting is process-wide: a constructor must not leave it changed)."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = device.startswith("cuda")
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def _groups(arms: list[Arm], fast: bool) -> list[list[Arm]]:
    """Arms trained together: with `fast` those sharing a training set, else one by one."""
    if not fast:
        return [[arm] for arm in arms]
    trains = dict.fromkeys(arm.train for arm in arms)
    return [[arm for arm in arms if arm.train == train] for train in trains]


def _trainer(config: VisionConfig, arms: list[Arm], setting: Setting, initial: Mapping[str, Any],
             seed: int, device: str) -> StackedTrainer:
    """The trainer of a group: its arms' networks, each from `initial`, stacked (M = 1: one
    ordinary network)."""
    models = []
    for _ in arms:
        models.append(WideResNet(config.depth, config.widen, channels=setting.channels))
        models[-1].load_state_dict(initial)
    return StackedTrainer(models, [arm.method for arm in arms], config.optimisation(),
                          setting.trains[arms[0].train], setting.evals, seed, device,
                          graph=config.cuda_graph, precision=config.precision)


def _train_group(ctx, config: VisionConfig, arms: list[Arm], setting: Setting, initial: Mapping[str, Any],
                 seed: int, partial: dict[str, Any] | None) -> dict[str, History]:
    """Train the arms of one group to the end (an arm that diverges stops, the others go on);
    returns each arm's history. `partial` may come from another device (see
    `trainer.restore_generators`)."""
    trainer = _trainer(config, arms, setting, initial, seed, ctx.device)
    history: dict[str, History] = {arm.name: [] for arm in arms}
    if partial is not None:
        trainer.load_state_dict(partial["trainer"])
        history = partial["history"]
    live = [arm.name for arm in arms if len(history[arm.name]) == trainer.epoch]  # not diverged
    key = "+".join(arm.name for arm in arms)
    bar = ctx.progress(config.epochs, f"seed {seed} {key}")
    bar.update(trainer.epoch)
    while trainer.epoch < config.epochs and live:
        for arm, record in zip(arms, trainer.run_epoch()):
            if arm.name not in live:
                continue
            problem = divergence(record, tuple(setting.evals), config.max_loss)
            record["diverged"] = problem is not None
            ctx.log(seed=seed, method=arm.name, data=setting.source, **record)
            if problem:
                ctx.diverged(f"{arm.name} seed {seed}: {problem} in epoch {record['epoch']}")
                live.remove(arm.name)
                continue
            history[arm.name].append(record)
            bar.set_postfix({name: f"{record[f'{name}_acc']:.1f}" for name in setting.evals})
        bar.update()
        if live and trainer.epoch % config.checkpoint_every == 0 and trainer.epoch < config.epochs:
            ctx.checkpoint({"trainer": trainer.state_dict(), "history": history})
    bar.close()
    return history


def divergence(record: Mapping[str, Any], evals: tuple[str, ...], max_loss: float) -> str | None:
    """What makes an epoch's record a divergence, or None: a non-finite loss, in training or on a
    validation set, or a training loss above `max_loss`. A finite validation loss is not bounded:
    under a large LR it can spike for an epoch (measured: 54 in epoch 2 of the quick control's
    large-LR arm on 1,000 images, 4 before and after) while training goes on normally."""
    for name in ("train", *evals):
        loss = record.get(f"{name}_loss")  # no validation losses after a non-finite training loss
        if loss is not None and not math.isfinite(loss):
            return f"non-finite {name} loss"
    loss = record.get("train_loss")
    if loss is not None and loss > max_loss:
        return f"train loss {loss:.3g} above max_loss {max_loss:g}"
    return None


def accuracy_metrics(histories: list[dict[str, History]], arms: list[str], evals: tuple[str, ...],
                     epochs: int) -> dict[Metric, list[float]]:
    """Per arm and validation set, per seed: the final epoch's accuracy (`{set}_acc_{arm}`), the
    mean of the last epochs (`..._last5`), the best epoch's accuracy (`..._best`, what the
    released code keeps) and that epoch, 1-based, the first if several tie
    (`{set}_best_epoch_{arm}`); NaN for an arm that diverged before its end."""
    metrics: dict[Metric, list[float]] = {}
    for arm in arms:
        for name in evals:
            key = f"{name}_acc"
            finished = [per_seed[arm] if len(per_seed[arm]) == epochs else None for per_seed in histories]
            accs = [[r[key] for r in history] if history else None for history in finished]
            best = [history[int(np.argmax(a))] if a else None for history, a in zip(finished, accs)]
            metrics[Metric(key, arm)] = [a[-1] if a else math.nan for a in accs]
            metrics[Metric(key, arm, f"last{LAST}")] = [float(np.mean(a[-LAST:])) if a else math.nan
                                                        for a in accs]
            metrics[Metric(key, arm, "best")] = [r[key] if r else math.nan for r in best]
            metrics[Metric(f"{name}_best_epoch", arm)] = [r["epoch"] if r else math.nan for r in best]
    return metrics


def matched_loss_metrics(histories: list[dict[str, History]], arms: list[str], evals: tuple[str, ...],
                         epochs: int) -> dict[Metric, list[float]]:
    """The arms compared at the same train loss, not after the same number of epochs (the papers'
    yardstick): `matched_loss`, the lowest train loss every arm reaches in every seed (one value,
    repeated per seed); per arm, the 1-based epoch at which it first reached it
    (`epoch_at_matched_loss_{arm}`) and, per validation set, its accuracy in that epoch
    (`{set}_acc_at_matched_loss_{arm}`). An arm that diverged in a seed gives NaN there, and
    `matched_loss` is taken over the (seed, arm) runs that finished (NaN if none did)."""
    finished = [(s, arm) for s, per_seed in enumerate(histories) for arm in arms
                if len(per_seed[arm]) == epochs]

    def series(key: str) -> np.ndarray:  # [epochs, finished runs]
        return np.array([[r[key] for r in histories[s][arm]] for s, arm in finished], dtype=float).T

    loss = series("train_loss")
    level = matched.matched_loss(loss) if finished else math.nan
    readings = {"epoch": series("epoch"), **{f"{name}_acc": series(f"{name}_acc") for name in evals}}
    at_level = {key: dict(zip(finished, matched.first_at_or_below(loss, values, level).tolist()))
                for key, values in readings.items()} if finished else {key: {} for key in readings}
    metrics: dict[Metric, list[float]] = {Metric("matched_loss"): [level] * len(histories)}
    for arm in arms:
        for key, values in at_level.items():
            metrics[Metric(f"{key}_at_matched_loss", arm)] = [values.get((s, arm), math.nan)
                                                              for s in range(len(histories))]
    return metrics


def at_epoch(histories: list[dict[str, History]], arm: str, key: str, epoch: int) -> list[float]:
    """Per seed, `key` of `arm` in 1-based `epoch` (NaN where the arm stopped before it)."""
    return [per_seed[arm][epoch - 1][key] if len(per_seed[arm]) >= epoch else math.nan
            for per_seed in histories]


def histories(records: list[dict[str, Any]], seeds: list[int], arms: list[str]) -> list[dict[str, History]]:
    """What `run_arms` returns, rebuilt from a run's metrics.jsonl `records`: per seed of `seeds`,
    each arm's epoch records up to its divergence (the record of a diverged epoch is logged, not
    kept in the history)."""
    per_seed: list[dict[str, History]] = [{arm: [] for arm in arms} for _ in seeds]
    for record in records:
        if record["method"] in arms and not record.get("diverged"):
            per_seed[seeds.index(record["seed"])][record["method"]].append(record)
    return per_seed
