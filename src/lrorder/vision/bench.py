"""Speed of one WideResNet training step, every path measured in the same process: the released
code's plain fp32 eager step, the plain `Trainer`'s step (the tests' oracle; bf16 autocast +
channels_last on CUDA), and the production trainer (`lrorder.vision.stacked`) as a recipe groups
its arms: one model (`fast` off) and the methods of a recipe stacked in one network (`fast` on),
eager and, on CUDA, captured as a CUDA graph.

FLOPs are counted by torch's FlopCounterMode on one forward and backward pass, so TFLOP/s is
measured work over measured time; a stacked step of M models does M models' work and counts M
times the images. The projected wall time of a full recipe is its training steps times the
measured time per model-step (evaluation excluded; `--epoch-images` measures a whole epoch).
Run it as `lrorder bench train-step` (declared in `lrorder.vision.verbs`) or
benchmarks/bench_train_step.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from lrorder.vision.loader import ImageSet
from lrorder.vision.patch import PatchRule, patchable_mask
from lrorder.vision.stacked import StackedTrainer
from lrorder.vision.trainer import Method, Optimisation, Trainer
from lrorder.vision.wrn import WideResNet

PEAK_TFLOPS = 989.0  # H100 SXM dense bf16 tensor-core peak (datasheet)
# dense bf16 tensor-core peaks (datasheets) by a part of torch.cuda.get_device_name(), first match
# wins (so "H100 NVL" before "H100"); a device not named here has no known peak
DEVICE_PEAKS = (("H200 NVL", 835.0), ("H200", 989.0), ("H100 NVL", 835.0), ("H100 PCIe", 756.0),
                ("H100", 989.0), ("A100", 312.0))
# cifar-patch's three methods (Table 2), the ones `fast` on stacks
PATCH_METHODS = (Method("large", 0.1), Method("small", 0.004), Method("small_noise", 0.004, sigma0=0.4))
RECIPES = {"cifar-patch": (3, 60), "cifar-table1": (3, 200)}  # methods x epochs, --profile full
TRAIN_IMAGES = 50_000


def step_flops(depth: int, widen: int, batch: int) -> int:
    """FLOPs of one forward and backward pass at `batch` (counted, on the meta device)."""
    with torch.device("meta"):
        model = WideResNet(depth, widen)
        x = torch.zeros(batch, 3, 32, 32)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), torch.zeros(batch, dtype=torch.long, device="meta")).backward()
    return counter.get_total_flops()


def _time(steps_of: list[Callable[[], object]], steps: int, warmup: int, rounds: int,
          device: str) -> list[float]:
    """Median seconds per call of each step function, timed in alternating rounds so that a
    busy shared machine slows every path alike; `warmup` calls first absorb one-time costs."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for step in steps_of:
        for _ in range(warmup):
            step()
    times: list[list[float]] = [[] for _ in steps_of]
    for _ in range(rounds):
        for step, record in zip(steps_of, times):
            sync()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            sync()
            record.append((time.perf_counter() - start) / steps)
    return [float(np.median(record)) for record in times]


Step = tuple[Callable[[], object], int]  # a training step and how many models it trains


def plain_step(depth: int, widen: int, batch: int, device: str) -> Step:
    """The released code's step: fp32, default memory layout, eager, torch SGD."""
    torch.manual_seed(0)
    model = WideResNet(depth, widen).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step, 1


def _random_images(n: int, device: str, side: int = 32) -> ImageSet:
    """n random uint8 images of CIFAR's shape (`side` x `side` pixels), on the device as the
    trainer keeps them."""
    rng = np.random.default_rng(n)
    return ImageSet.from_arrays("random", rng.integers(0, 256, (n, 3, side, side), dtype=np.uint8),
                                rng.integers(0, 10, n), (0.5,) * 3, (0.25,) * 3, device,
                                channels_last=device == "cuda")


def trainer_step(depth: int, widen: int, batch: int, device: str) -> Step:
    """`Trainer.step` (the tests' oracle) on a batch made by the trainer's own on-device image set."""
    torch.manual_seed(0)
    images = _random_images(batch, device)
    trainer = Trainer(WideResNet(depth, widen), Method("large", 0.1), Optimisation(1, batch),
                      images, {}, 0, device)
    trainer.model.train()
    x, y = images.batch(torch.arange(batch, device=device), trainer.generators["data"])
    return (lambda: trainer.step(x, y)), 1


def fast_step(models: int, graph: bool) -> Callable[[int, int, int, str], Step]:
    """The production step of the first `models` methods of cifar-patch stacked, as `run_arms`
    trains a group of them."""

    def make(depth: int, widen: int, batch: int, device: str) -> Step:
        torch.manual_seed(0)
        images = _random_images(batch, device)
        methods = PATCH_METHODS[:models]
        trainer = StackedTrainer([WideResNet(depth, widen) for _ in methods], methods,
                                 Optimisation(1, batch), images, {}, 0, device, graph=graph)
        trainer.model.train()
        trainer.optimizer.lr.copy_(torch.tensor([m.lr0 for m in methods]))
        trainer.noise.sigma.copy_(torch.tensor([m.sigma0 for m in methods]))
        x, y = images.batch(torch.arange(batch, device=device), trainer.generators["data"])
        return (lambda: trainer.train_step(x, y)), models

    return make


def paths(device: str) -> dict[str, Callable[[int, int, int, str], Step]]:
    """Every path worth timing on `device`; CUDA graphs exist on CUDA only."""
    found = {"plain fp32 eager (released code)": plain_step,
             "plain Trainer (the tests' oracle)": trainer_step,
             "fast off: 1 model, eager": fast_step(1, False),
             "fast on: 3 methods stacked, eager": fast_step(3, False)}
    if device == "cuda":
        found.update({"fast off: 1 model, CUDA graph": fast_step(1, True),
                      "fast on: 3 methods stacked, CUDA graph": fast_step(3, True)})
    return found


RELEASED_EPOCH_S = 13.6  # the released code's full patch-experiment epoch on an H100 (reference file)


def patch_sets(images: int, device: str, test: int | None = None, side: int = 32,
               patch_only: int = 1000) -> tuple[ImageSet, dict[str, ImageSet]]:
    """The patch experiment's sets on random CIFAR-shaped images (`side` x `side` pixels): a
    patched training set of `images`, `test` (default images / 5) clean and mixed test images and
    `patch_only` patch-only ones, as `experiment.build_setting` makes them from CIFAR-10."""
    generator = torch.Generator().manual_seed(0)
    rule = PatchRule.draw(3, 10, generator)
    test = images // 5 if test is None else test
    train = _random_images(images, device, side).with_patch("train", rule, patchable_mask(images, generator))
    clean = _random_images(test, device, side)
    mixed = clean.with_patch("mixed", rule, patchable_mask(clean.size, generator))
    return train, {"clean": clean, "mixed": mixed, "patch": ImageSet.blank("patch", mixed, patch_only)}


def epoch_seconds(depth: int, widen: int, batch: int, images: int, device: str,
                  fast: bool = False) -> tuple[float, float]:
    """Training and evaluation seconds of one patch-experiment epoch (`patch_sets(images)`) of
    small LR + noise alone, or (`fast`) of all three methods stacked; on CUDA with the CUDA
    graph; measured after one warm-up epoch."""
    train, evals = patch_sets(images, device)
    torch.manual_seed(0)
    methods = PATCH_METHODS if fast else PATCH_METHODS[-1:]
    trainer = StackedTrainer([WideResNet(depth, widen) for _ in methods], methods, Optimisation(2, batch),
                             train, evals, 0, device, graph=device == "cuda")
    trainer.run_epoch()
    record = trainer.run_epoch()[0]
    return record["train_seconds"], record["eval_seconds"]


def run(depth: int, widen: int, batch: int, steps: int, warmup: int, device: str,
        rounds: int = 3) -> list[dict]:
    """One row per path: ms per step, images/s, TFLOP/s, fraction of the bf16 peak, and the
    projected training wall time of each full recipe."""
    flops = step_flops(depth, widen, batch)
    made = [make(depth, widen, batch, device) for make in paths(device).values()]
    seconds = _time([step for step, _ in made], steps, warmup, rounds, device)
    rows = []
    for name, (_, models), s in zip(paths(device), made, seconds):
        per_model_step = s / models
        steps_per_epoch = -(-TRAIN_IMAGES // batch)
        rows.append({"path": name, "models": models, "ms_per_step": 1e3 * s,
                     "images_per_s": batch / per_model_step, "tflops": flops / per_model_step / 1e12,
                     "projected_s": {recipe: methods * epochs * steps_per_epoch * per_model_step
                                     for recipe, (methods, epochs) in RECIPES.items()}})
    return rows


def device_peak(name: str) -> float | None:
    """The dense bf16 peak TFLOP/s of the CUDA device named `name` (torch.cuda.get_device_name),
    or None where it is not known (a CPU, a GPU not in `DEVICE_PEAKS`)."""
    return next((peak for part, peak in DEVICE_PEAKS if part in name), None)


def table(rows: list[dict], peak: float | None) -> list[str]:
    """`run`'s rows as a table's lines: ms/step, img/s, TFLOP/s, the fraction of `peak` (n/a
    without one), the ratio of img/s to the first row's, the projected recipe times."""
    base = rows[0]["images_per_s"]
    lines = [f"  {'path':<46} {'ms/step':>9} {'img/s':>9} {'TFLOP/s':>9} {'of peak':>8} {'ratio':>6}"
             + "".join(f" {recipe:>13}" for recipe in RECIPES)]
    for row in rows:
        of_peak = "n/a" if peak is None else f"{row['tflops'] / peak:.2%}"
        lines.append(f"  {row['path']:<46} {row['ms_per_step']:9.2f} {row['images_per_s']:9.0f} "
                     f"{row['tflops']:9.3f} {of_peak:>8} {row['images_per_s'] / base:5.2f}x"
                     + "".join(f" {minutes(row['projected_s'][recipe]):>13}" for recipe in RECIPES))
    return lines


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"
