"""Configs of the CIFAR-10 recipes: the fields every recipe has, and each recipe's methods.

Every knob is typed, documented with the paper's value and checked, and every problem of a
config is reported at once, before anything runs.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from lrorder.core.config import at_least, between, greater, param
from lrorder.vision import data
from lrorder.vision.schedules import SCHEDULE_HELP, milestones

LABELS = {"large": "large LR + anneal", "small": "small LR", "small_noise": "small LR + noise"}
CONTROL_ARMS = {"subset_small": ("subset", "small"), "subset_large": ("subset", "large"),
                "full_small": ("full", "small"), "full_large": ("full", "large")}  # (training set, LR)
EVALS = {False: ("val",), True: ("clean", "mixed", "patch")}  # validation sets, unpatched / patched
LAST = 5  # final accuracies are also reported as the mean of the last 5 epochs (one epoch is noisy)


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
    max_loss: float = param(50.0, "a training loss above this counts as diverged (chance is ln 10 = "
                            "2.3; a non-finite training or validation loss always does; a validation "
                            "loss may spike for an epoch under a large LR, as BatchNorm statistics "
                            "catch up, and is not bounded)", check=greater(0))
    checkpoint_every: int = param(5, "epochs between resume points (also one after every method)",
                                  check=at_least(1))
    fast: Literal["auto", "on", "off"] = param(
        "auto", "on: train the methods that share a training set at once, stacked in one network; "
        "off: one method at a time (same math, same trainer); auto: on with CUDA, off on the CPU")
    precision: Literal["bf16", "fp32"] = param(
        "bf16", "bf16: autocast to bfloat16 with channels_last, on CUDA and on the CPU (about 2x faster "
        "than fp32 on a CPU with AVX-512 BF16); fp32: the released code's precision, to check a run "
        "against")
    cuda_graph: bool = param(False, "on CUDA: capture the training step once as a CUDA "
                             "graph and replay it (off until measured on a GPU; docs/vision.md)")

    def fast_on(self, device: str) -> bool:
        return self.fast == "on" or (self.fast == "auto" and device.startswith("cuda"))

    def optimisation(self):
        """The SGD settings every arm shares (a `vision.trainer.Optimisation`)."""
        from lrorder.vision.trainer import Optimisation

        return Optimisation(self.epochs, self.batch_size, self.momentum, self.weight_decay)

    def patch_scales(self) -> dict[str, float]:
        """Keyword arguments of `PatchRule.draw` (recipes with a patch override this)."""
        return {}


def check_methods(config) -> list[str]:
    """`config.methods` must be a non-empty subset of its default (every method of the recipe),
    each method once."""
    known = next(f.default for f in dataclasses.fields(config) if f.name == "methods")
    chosen = config.methods
    if not chosen or any(m not in known for m in chosen) or len(set(chosen)) != len(chosen):
        return [f"methods must be a comma-separated subset of {','.join(known)}, each once "
                f"(got {','.join(chosen) or 'none'})"]
    return []


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
                               "and laptop profiles' 0.92 and 0.966 are per epoch",
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


@dataclasses.dataclass(frozen=True)
class ControlConfig(VisionConfig):
    epochs: int = param(60, "training epochs; the anneal is at half of them", check=at_least(2), paper=60)
    lr_large: float = param(0.1, "initial LR of large LR + anneal", check=greater(0), paper=0.1)
    lr_small: float = param(0.004, "fixed LR of the small-LR methods (= the annealed large LR)",
                            check=greater(0), paper=0.004)
    lr_schedule: str = param("decay_early", f"large-LR schedule: {SCHEDULE_HELP}", paper="decay_early")
    methods: tuple[str, ...] = param(
        tuple(CONTROL_ARMS),
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

    def problems(self) -> list[str]:
        found = super().problems()
        if not found and not milestones(self.lr_schedule, self.epochs):
            found.append(f"lr_schedule={self.lr_schedule} has no anneal: the patch experiment reads "
                         "what is learned before the large LR's first anneal (e.g. decay_early)")
        return found

    def anneal_epoch(self) -> int:
        """The first epoch of the large LR's annealed phase (30 of 60 in the paper): the noise
        of small LR + noise is annealed there too, and the patch is read just before it."""
        return milestones(self.lr_schedule, self.epochs)[0][0]

    def patch_scales(self) -> dict[str, float]:
        return {"z_scale": self.z_scale, "patch_sep": self.patch_sep,
                "patch_only_scale": self.patch_only_scale}


