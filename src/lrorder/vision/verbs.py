"""The commands the vision setting adds to `lrorder`: `data`, `bench train-step` and `selftest`.

Declared as data (`VERBS`, see `lrorder.core.recipe.Verb`); the handlers below import torch
and the data loaders only when they run, so `lrorder --help` stays light.
"""

from __future__ import annotations

from typing import Any

from lrorder.core.recipe import Verb
from lrorder.vision.data import DATASETS, DEFAULT_DIR, ENV

VERBS = (
    Verb("data", help="where the data sets are; download or check one",
         example="lrorder data where\nlrorder data cifar10 --data-dir /scratch/data",
         handler="lrorder.vision.verbs:data",
         options=(
             (("what",), {"choices": ("where", *DATASETS), "nargs": "?", "default": "where",
                          "help": "where: show the data directory and what is in it; cifar10: "
                                  "download the python release (resumable, md5-checked); "
                                  "fashion-mnist: check it"}),
             (("--data-dir",), {"help": f"data directory (default ${ENV}, else {DEFAULT_DIR})"}),
         )),
    Verb("bench", help="speed benchmarks", example="lrorder bench train-step"),
    Verb("bench train-step", help="WideResNet training step: released code, plain Trainer, stacked trainer",
         example="lrorder bench train-step\nlrorder bench train-step --batch 512 --epoch-images 0",
         handler="lrorder.vision.verbs:train_step",
         options=(
             (("--depth",), {"type": int, "help": "default 16 with CUDA, else 10"}),
             (("--widen",), {"type": int, "help": "default 10 with CUDA, else 1"}),
             (("--batch",), {"type": int, "default": 128}),
             (("--steps",), {"type": int, "help": "timed steps per path in each of --rounds "
                                                  "alternating rounds (default 20 with CUDA, else 4)"}),
             (("--rounds",), {"type": int, "help": "default 5 with CUDA, else 3"}),
             (("--warmup",), {"type": int, "help": "untimed steps first (default 10 with CUDA, else 2)"}),
             (("--device",), {"choices": ("cpu", "cuda"), "help": "default cuda when available"}),
             (("--epoch-images",), {"type": int,
                                    "help": "also time one whole patch-experiment epoch on this many "
                                            "training images (0: skip; default 50,000 with CUDA)"}),
         )),
    Verb("selftest", help="check this machine, first thing on a new GPU: stacked trainer = plain trainer, "
                          "CUDA graph, divergence, exact resume, an epoch; then the benchmark",
         example="lrorder selftest --quick --device cpu\nlrorder selftest --device cuda --out runs/selftest",
         handler="lrorder.vision.verbs:selftest",
         options=(
             (("--device",), {"choices": ("auto", "cpu", "cuda"), "default": "auto",
                              "help": "where to check (default auto: cuda when available)"}),
             (("--quick",), {"action": "store_true",
                             "help": "a tiny network on tiny random images (seconds on a CPU) instead "
                                     "of WRN-16-10 on 32 x 32 images and the paper's epoch"}),
             (("--out",), {"default": ".", "metavar": "DIR",
                           "help": "where selftest.json goes (default: the current directory)"}),
         )),
)

# `bench train-step` defaults with CUDA and without it (WRN-10-1: the CPU run takes seconds)
_BENCH_DEFAULTS = {"depth": (16, 10), "widen": (10, 1), "steps": (20, 4), "rounds": (5, 3),
                   "warmup": (10, 2), "device": ("cuda", "cpu"), "epoch_images": (50_000, 0)}


def data(args: Any) -> None:
    """`lrorder data [where|cifar10|fashion-mnist] [--data-dir DIR]`: get or locate the data.

    Prints which copy of each data set a run would use; raises UserError (one line) when the
    asked-for data set cannot be had.
    """
    from lrorder.core.errors import UserError
    from lrorder.vision import data as images

    root = images.data_dir(args.data_dir)
    if args.what == "cifar10":
        print(f"cifar10: {images.fetch_cifar10(args.data_dir)}")
    elif args.what == "fashion-mnist" and images.fashion_source(root) is None:
        raise UserError(images.missing("fashion-mnist", args.data_dir))
    print(f"data directory: {root}")
    for name in images.DATASETS:
        print(f"  {name}: {images.where(name, args.data_dir)}")


def train_step(args: Any) -> None:
    """Print every path's speed, its ratio to the released code's step per image, and the
    projected training time of the full recipes."""
    import torch

    from lrorder.vision.bench import (
        PEAK_TFLOPS,
        RECIPES,
        RELEASED_EPOCH_S,
        TRAIN_IMAGES,
        epoch_seconds,
        minutes,
        run,
        table,
    )

    cuda = torch.cuda.is_available()
    for name, (with_cuda, without) in _BENCH_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, with_cuda if cuda else without)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    rows = run(args.depth, args.widen, args.batch, args.steps, args.warmup, args.device, args.rounds)
    name = (torch.cuda.get_device_name() if args.device == "cuda"
            else f"CPU, {torch.get_num_threads()} threads (not a GPU: the bf16 peak is no bound here)")
    print(f"WRN-{args.depth}-{args.widen}, batch {args.batch} per model, median of {args.rounds} rounds "
          f"of {args.steps} steps on {name}")
    print("\n".join(table(rows, PEAK_TFLOPS)))
    sizes = ", ".join(f"{recipe}: {m} x {e} epochs" for recipe, (m, e) in RECIPES.items())
    print(f"  img/s and TFLOP/s count every model of a stacked step; 'of peak' is of {PEAK_TFLOPS:.0f} "
          "TFLOP/s (H100 dense bf16); ratio is img/s over the released code's; the recipe columns are "
          f"projected training wall times of the full recipes' steps ({sizes} of {TRAIN_IMAGES} "
          f"images) for the WRN-{args.depth}-{args.widen} above, evaluation excluded")
    if args.epoch_images > 0:
        for fast in (False, True):
            train_s, eval_s = epoch_seconds(args.depth, args.widen, args.batch, args.epoch_images,
                                            args.device, fast)
            what = "fast on, 3 methods stacked" if fast else "fast off, 1 method"
            print(f"one patch-experiment epoch ({what}, {args.epoch_images} training images, the three "
                  f"evaluations): train {train_s:.2f} s + eval {eval_s:.2f} s = {train_s + eval_s:.2f} s")
            if args.epoch_images == TRAIN_IMAGES and (args.depth, args.widen) == (16, 10):
                per_method = (train_s + eval_s) / (3 if fast else 1)
                print(f"  {RELEASED_EPOCH_S / per_method:.2f}x faster per method than the released "
                      f"code's {RELEASED_EPOCH_S} s on an H100 (reference file); projected with "
                      "evaluation: " + ", ".join(f"{recipe} {minutes(m * e * per_method)}"
                                                 for recipe, (m, e) in RECIPES.items()))


def selftest(args: Any) -> int:
    """Run the checks of `lrorder.vision.selftest`; exit status 1 if one failed."""
    from pathlib import Path

    from lrorder.core.runner import resolve_device
    from lrorder.vision.selftest import run

    device = resolve_device(args.device)
    return run(device, args.quick, Path(args.out), getattr(args, "command", "lrorder selftest"))
