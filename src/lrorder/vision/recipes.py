"""Li, Wei & Ma (2019) on CIFAR-10: Table 1 (noise mends a small learning rate), Table 2 and
Figure 3 (the patch experiment: learning order decides what generalizes), and its control.

Every recipe trains WideResNet-16-10 per method from the same data, patches and initial
weights (`lrorder.vision.experiment`). The quick profile is a miniature for a 2-core CPU
(WRN-10-1, a few thousand images, a dozen epochs, the anneals at the same fractions of the
run); the full profile is the paper's size and wants a GPU.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from lrorder.core.config import at_least, between, describe, greater, param
from lrorder.core.recipe import PaperValue, Recipe, register
from lrorder.core.rundir import Records
from lrorder.vision import data, plots
from lrorder.vision.experiment import LAST, Arm, VisionConfig, check_methods, run_arms
from lrorder.vision.schedules import SCHEDULE_HELP, milestones
from lrorder.vision.trainer import Method

PAPER = "Li, Wei & Ma (2019), Towards explaining the regularization effect of initial large learning rate"
QUICK = {"depth": 10, "widen": 1, "train_size": 4000, "test_size": 1000}
# The miniature takes ~100x fewer steps than the paper: the small LR is raised to learn at all,
# the large LR stays 25x larger (its anneal lands on the small LR), and the patch is made easier
# (beta 0.6), the paper's own knob "so that [both LRs] don't both ignore the patch".
QUICK_PATCH = {**QUICK, "epochs": 14, "lr_large": 0.5, "lr_small": 0.02}
TOLERANCE = 2.5  # accuracy points: one seed, and the JPEG copy of CIFAR-10 costs a little


def at_paper_settings(config) -> bool:
    """Whether every field the paper fixes has the paper's value (and the data is all of it)."""
    return (config.train_size is None and config.test_size is None
            and all(getattr(config, f.name) == f.paper for f in describe(type(config))
                    if f.paper is not None))


def _claims(config, values: dict[str, float], source: str) -> dict[str, PaperValue]:
    """The paper's accuracy for the final epoch and for the mean of the last epochs; only for a
    run at the paper's settings (a miniature is not judged against the full-size numbers)."""
    if not at_paper_settings(config):
        return {}
    claims = {}
    for name, value in values.items():
        for suffix in ("", f"_last{LAST}"):
            claims[name + suffix] = PaperValue(value, source, "≈", TOLERANCE)
    return claims


def _order(metrics: dict[str, list[float]], name: str, ranked: tuple[str, ...], key: str) -> None:
    """Add `name`: per seed, 1 if the last-5 accuracies `key` follow `ranked` (best first)."""
    series = [metrics.get(f"{key}_{arm}_last{LAST}") for arm in ranked]
    if all(series):
        metrics[name] = [float(all(a > b for a, b in zip(values, values[1:])))
                         for values in zip(*series)]


class VisionRecipe(Recipe):
    default_seeds = 1

    def missing_data(self, config: VisionConfig) -> str | None:
        return data.missing(config.dataset, config.data_dir)


@dataclasses.dataclass(frozen=True)
class Table1Config(VisionConfig):
    epochs: int = param(200, "training epochs; `default` anneals at 30%, 60%, 75% of them",
                        check=at_least(1), paper=200)
    lr_schedule: str = param("default", f"learning-rate schedule: {SCHEDULE_HELP}", paper="default")
    lr_large: float = param(0.1, "initial LR of the large-LR method", check=greater(0), paper=0.1)
    lr_small: float = param(0.01, "initial LR of both small-LR methods", check=greater(0), paper=0.01)
    sigma0: float = param(0.2, "initial pre-activation noise of small LR + noise",
                          check=at_least(0), paper=0.2)
    sigma_decay: float = param(0.995, "factor on sigma per decay step (see noise_decay); the quick "
                               "profile's 0.92 is meant per epoch",
                               check=between(0, 1), paper=0.995)
    noise_decay: Literal["epoch", "iteration"] = param(
        "epoch", "decay sigma every 'epoch' (the released code) or every 'iteration' (the paper's "
        "text; the noise is then gone within a few epochs)")
    methods: tuple[str, ...] = param(("large", "small_noise", "small"), "methods to train")

    def problems(self) -> list[str]:
        return check_methods(self) + _schedule_problems(self)


def _schedule_problems(config) -> list[str]:
    try:
        milestones(config.lr_schedule, config.epochs)
    except ValueError as exc:
        return [str(exc)]
    return []


@register
class CifarTable1(VisionRecipe):
    name = "cifar-table1"
    description = "CIFAR-10 without augmentation: large LR vs small LR vs small LR + activation noise"
    reference = f"{PAPER}, Table 1, Figure 1, Section H.1"
    Config = Table1Config
    # quick: the LRs scaled as in QUICK_PATCH (ratio 10 as in the paper), sigma's total decay
    # over the run kept near the paper's (0.92^11 = 0.4 vs 0.995^199 = 0.37)
    profiles = {"quick": {**QUICK, "epochs": 12, "lr_large": 0.5, "lr_small": 0.05, "sigma_decay": 0.92},
                "full": {}}
    cost = {"quick": "~3 min CPU", "full": "~40 min GPU (est.)"}

    def paper(self, config: Table1Config) -> dict[str, PaperValue]:
        claims = _claims(config, {"val_acc_large": 90.41, "val_acc_small_noise": 89.65,
                          "val_acc_small": 84.93}, "Table 1")
        return {**claims, "val_order_holds": PaperValue(1.0, "Table 1: large > small+noise > small")}

    def run(self, ctx) -> dict[str, list[float]]:
        c: Table1Config = ctx.config
        methods = {
            "large": Method("large", c.lr_large, c.lr_schedule),
            "small_noise": Method("small_noise", c.lr_small, c.lr_schedule, c.sigma0,
                                  sigma_decay=c.sigma_decay, sigma_per=c.noise_decay),
            "small": Method("small", c.lr_small, c.lr_schedule),
        }
        arms = [Arm(m, methods[m], "full") for m in c.methods]
        metrics = run_arms(ctx, c, arms, patched=False)
        _order(metrics, "val_order_holds", ("large", "small_noise", "small"), "val_acc")
        return metrics

    def draw(self, records: Records, figure_dir: Path) -> None:
        plots.figure1(records, figure_dir / "figure1_accuracy.png")

    def discuss(self, records: Records) -> list[str]:
        config = records.config["config"]
        return [f"Noise decayed per {config['noise_decay']} (sigma0 {config['sigma0']}, x"
                f"{config['sigma_decay']}). " + _ranking(records, "val_acc")]


@dataclasses.dataclass(frozen=True)
class ControlConfig(VisionConfig):
    epochs: int = param(60, "training epochs; the anneal is at half of them", check=at_least(2), paper=60)
    lr_large: float = param(0.1, "initial LR of large LR + anneal", check=greater(0), paper=0.1)
    lr_small: float = param(0.004, "fixed LR of the small-LR methods (= the annealed large LR)",
                            check=greater(0), paper=0.004)
    lr_schedule: str = param("decay_early", f"large-LR schedule: {SCHEDULE_HELP}", paper="decay_early")
    methods: tuple[str, ...] = param(
        ("subset_small", "subset_large", "full_small", "full_large"),
        "runs: the never-patched 20% ('subset') or all clean images ('full'), small or large LR")

    def problems(self) -> list[str]:
        return check_methods(self) + _schedule_problems(self)


@dataclasses.dataclass(frozen=True)
class PatchConfig(ControlConfig):
    sigma0: float = param(0.4, "pre-activation noise of small LR + noise before the anneal",
                          check=at_least(0), paper=0.4)
    noise_anneal: float = param(1e-5, "factor on sigma at the anneal (0.4 -> 4e-6)",
                                check=between(0, 1), paper=1e-5)
    methods: tuple[str, ...] = param(("large", "small", "small_noise"), "methods to train")
    z_scale: float = param(1.25, "sigma_z: z = sigma_z N(0, I), the patch shared by all classes",
                           check=greater(0), paper=1.25)
    patch_sep: float = param(0.1, "beta: zeta_c ~ U[-beta, beta], the class part of the patch "
                             "(larger is easier to memorize)", check=greater(0), paper=0.1)
    patch_only_scale: float = param(1.75, "alpha: patch-only centre is z + s alpha a zeta_c",
                                    check=greater(0), paper=1.75)

    def patch_scales(self) -> dict[str, float]:
        return {"z_scale": self.z_scale, "patch_sep": self.patch_sep,
                "patch_only_scale": self.patch_only_scale}


def anneal_epoch(config) -> int:
    """The first epoch of the annealed phase (30 of 60 in the paper)."""
    return milestones("decay_early", config["epochs"] if isinstance(config, dict) else config.epochs)[0][0]


@register
class CifarPatch(VisionRecipe):
    name = "cifar-patch"
    description = "patch-augmented CIFAR-10: the small LR memorizes the patch first and generalizes worse"
    reference = f"{PAPER}, Table 2, Figure 3, Section H.2"
    Config = PatchConfig
    profiles = {"quick": {**QUICK_PATCH, "patch_sep": 0.6}, "full": {}}
    cost = {"quick": "~3 min CPU", "full": "~12 min GPU (est.)"}

    def paper(self, config: PatchConfig) -> dict[str, PaperValue]:
        claims = _claims(config, {"mixed_acc_large": 95.35, "clean_acc_large": 87.61,
                          "mixed_acc_small": 92.83, "clean_acc_small": 69.89,
                          "mixed_acc_small_noise": 94.43, "clean_acc_small_noise": 81.36}, "Table 2")
        return {**claims,
                "clean_order_holds": PaperValue(1.0, "Table 2: large > small+noise > small"),
                "patch_acc_small_before_anneal": PaperValue(90.0, "Figure 3", ">="),
                "patch_acc_large_before_anneal": PaperValue(10.0, "Figure 3 (chance)", "≈", 5.0)}

    def run(self, ctx) -> dict[str, list[float]]:
        c: PatchConfig = ctx.config
        noise = f"{anneal_epoch(c)}:{c.noise_anneal}"
        methods = {"large": Method("large", c.lr_large, c.lr_schedule),
                   "small": Method("small", c.lr_small),
                   "small_noise": Method("small_noise", c.lr_small, sigma0=c.sigma0,
                                         sigma_schedule=noise)}
        metrics = run_arms(ctx, c, [Arm(m, methods[m]) for m in c.methods], patched=True)
        _order(metrics, "clean_order_holds", ("large", "small_noise", "small"), "clean_acc")
        for method in c.methods:
            _, values = plots.per_epoch(Records(ctx.path), method, "patch_acc")
            metrics[f"patch_acc_{method}_before_anneal"] = values[:, anneal_epoch(c) - 2].tolist()
        return metrics

    def draw(self, records: Records, figure_dir: Path) -> None:
        plots.figure3(records, figure_dir / "figure3_patch.png", anneal_epoch(records.config["config"]))

    def discuss(self, records: Records) -> list[str]:
        metrics = records.summary["metrics"]
        before = {m: metrics[f"patch_acc_{m}_before_anneal"]["mean"] for m in plots.LABELS
                  if f"patch_acc_{m}_before_anneal" in metrics}
        first = max(before, key=lambda m: before[m] if before[m] is not None else float("-inf"))
        return [_ranking(records, "clean_acc"),
                f"Patch-only accuracy in the epoch before the anneal (epoch "
                f"{anneal_epoch(records.config['config']) - 1}): "
                + ", ".join(f"{plots.LABELS[m]} {_mean(records, f'patch_acc_{m}_before_anneal')}"
                            for m in before)
                + f" (chance is 10%): {plots.LABELS[first]} learns the memorizable patch first "
                f"(paper, Figure 3: the small LR)."]


@register
class CifarPatchControl(VisionRecipe):
    name = "cifar-patch-control"
    description = "control for the patch experiment: clean training on the 10,000 never-patched images or all"
    reference = f"{PAPER}, Section H.2 (control experiment)"
    Config = ControlConfig
    profiles = {"quick": QUICK_PATCH, "full": {}}
    cost = {"quick": "~3 min CPU", "full": "~10 min GPU (est.)"}

    def paper(self, config: ControlConfig) -> dict[str, PaperValue]:
        return _claims(config, {"val_acc_subset_small": 65.0, "val_acc_subset_large": 76.0,
                        "val_acc_full_small": 83.0, "val_acc_full_large": 90.0}, "Section H.2")

    def run(self, ctx) -> dict[str, list[float]]:
        c: ControlConfig = ctx.config
        lrs = {"small": Method("small", c.lr_small), "large": Method("large", c.lr_large, c.lr_schedule)}
        arms = [Arm(m, lrs[m.split("_")[1]], m.split("_")[0]) for m in c.methods]
        return run_arms(ctx, c, arms, patched=False)

    def discuss(self, records: Records) -> list[str]:
        measured = ", ".join(f"{name.removeprefix('val_acc_').removesuffix(f'_last{LAST}')} "
                             f"{_mean(records, name)}" for name in records.summary["metrics"]
                             if name.endswith(f"_last{LAST}"))
        return [f"Mean validation accuracy over the last {LAST} epochs: {measured} (paper: 65 / 76 "
                "on the never-patched 10,000, 83 / 90 on all, small / large LR). The paper's reading: "
                "small LR on the patch set (69.89%) is close to small LR on the 10,000 never-patched "
                "images (65%), so it learns the clean images mostly from those."]


def _mean(records: Records, name: str) -> str:
    stats = records.summary["metrics"].get(name)
    return "n/a" if stats is None or stats["mean"] is None else f"{stats['mean']:.1f}%"


def _ranking(records: Records, key: str) -> str:
    """One sentence: the methods by their last-5-epoch accuracy on `key`."""
    present = [m for m in plots.LABELS if f"{key}_{m}_last{LAST}" in records.summary["metrics"]]
    ranked = sorted(present, key=lambda m: -(records.summary["metrics"][f"{key}_{m}_last{LAST}"]["mean"]
                                             or float("-inf")))
    return (f"Mean {key.replace('_', ' ')} over the last {LAST} epochs: "
            + " > ".join(f"{plots.LABELS[m]} {_mean(records, f'{key}_{m}_last{LAST}')}" for m in ranked)
            + " (paper: large LR + anneal > small LR + noise > small LR).")
