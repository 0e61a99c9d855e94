"""Speed of one WideResNet training step: the released code's plain fp32 eager step vs the
trainer's step (bf16 autocast + channels_last on CUDA), measured in the same process.

FLOPs are counted by torch's FlopCounterMode on one forward and backward pass, so TFLOP/s is
measured work over measured time. Entry points: `add_arguments` and `command` (for a
`lrorder bench train-step` verb) and benchmarks/bench_train_step.py (`cli_main`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from lrorder.vision.loader import ImageSet
from lrorder.vision.patch import PatchRule, patchable_mask
from lrorder.vision.trainer import Method, Optimisation, Trainer
from lrorder.vision.wrn import WideResNet


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


def plain_step(depth: int, widen: int, batch: int, device: str) -> Callable[[], object]:
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

    return step


def _random_images(n: int, device: str) -> ImageSet:
    """n random uint8 images of CIFAR's shape, on the device as the trainer keeps them."""
    rng = np.random.default_rng(n)
    return ImageSet.from_arrays("random", rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
                                rng.integers(0, 10, n), (0.5,) * 3, (0.25,) * 3, device,
                                channels_last=device == "cuda")


def trainer_step(depth: int, widen: int, batch: int, device: str) -> Callable[[], object]:
    """`Trainer.step` on a batch made by the trainer's own on-device image set."""
    torch.manual_seed(0)
    images = _random_images(batch, device)
    trainer = Trainer(WideResNet(depth, widen), Method("large", 0.1), Optimisation(1, batch),
                      images, {}, 0, device)
    trainer.model.train()
    x, y = images.batch(torch.arange(batch, device=device), trainer.generators["data"])
    return lambda: trainer.step(x, y)


RELEASED_EPOCH_S = 13.6  # the released code's full patch-experiment epoch on an H100 (reference file)


def epoch_seconds(depth: int, widen: int, batch: int, images: int, device: str) -> tuple[float, float]:
    """Training and evaluation seconds of one patch-experiment epoch by the trainer: `images`
    random CIFAR-shaped training images, images / 5 clean and mixed test images, 1,000 patch-only
    ones, small LR + noise; measured after one warm-up epoch."""
    generator = torch.Generator().manual_seed(0)
    rule = PatchRule.draw(3, 10, generator)
    train = _random_images(images, device).with_patch("train", rule, patchable_mask(images, generator))
    clean = _random_images(images // 5, device)
    mixed = clean.with_patch("mixed", rule, patchable_mask(clean.size, generator))
    evals = {"clean": clean, "mixed": mixed, "patch": ImageSet.blank("patch", mixed, 1000)}
    torch.manual_seed(0)
    trainer = Trainer(WideResNet(depth, widen), Method("small_noise", 0.004, sigma0=0.4),
                      Optimisation(2, batch), train, evals, 0, device)
    trainer.run_epoch()
    record = trainer.run_epoch()
    return record["train_seconds"], record["eval_seconds"]


def run(depth: int, widen: int, batch: int, steps: int, warmup: int, device: str,
        rounds: int = 3) -> list[dict]:
    flops = step_flops(depth, widen, batch)
    paths = {"plain fp32 eager (released code)": plain_step, "lrorder trainer": trainer_step}
    seconds = _time([make(depth, widen, batch, device) for make in paths.values()], steps, warmup,
                    rounds, device)
    return [{"path": name, "ms_per_step": 1e3 * s, "images_per_s": batch / s, "tflops": flops / s / 1e12}
            for name, s in zip(paths, seconds)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `lrorder bench train-step`; without CUDA the defaults shrink to WRN-10-1
    so that the CPU run takes seconds."""
    cuda = torch.cuda.is_available()
    parser.add_argument("--depth", type=int, default=16 if cuda else 10)
    parser.add_argument("--widen", type=int, default=10 if cuda else 1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20 if cuda else 4,
                        help="timed steps per path in each of --rounds alternating rounds")
    parser.add_argument("--rounds", type=int, default=5 if cuda else 3)
    parser.add_argument("--warmup", type=int, default=10 if cuda else 2, help="untimed steps first")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if cuda else "cpu")
    parser.add_argument("--epoch-images", type=int, default=50_000 if cuda else 0,
                        help="also time one whole patch-experiment epoch on this many training "
                             "images (0: skip; default 50,000 with CUDA)")


def command(args: argparse.Namespace) -> None:
    """Print ms/step, images/s and TFLOP/s of both paths, and the trainer's speed-up."""
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    rows = run(args.depth, args.widen, args.batch, args.steps, args.warmup, args.device, args.rounds)
    name = (torch.cuda.get_device_name() if args.device == "cuda"
            else f"CPU, {torch.get_num_threads()} threads")
    print(f"WRN-{args.depth}-{args.widen}, batch {args.batch}, median of {args.rounds} rounds of "
          f"{args.steps} steps on {name}")
    for row in rows:
        print(f"  {row['path']:<34} {row['ms_per_step']:9.2f} ms/step {row['images_per_s']:10.0f} img/s "
              f"{row['tflops']:8.3f} TFLOP/s")
    print(f"  speed-up of the trainer: {rows[0]['ms_per_step'] / rows[1]['ms_per_step']:.2f}x")
    if args.epoch_images > 0:
        train_s, eval_s = epoch_seconds(args.depth, args.widen, args.batch, args.epoch_images, args.device)
        print(f"one patch-experiment epoch ({args.epoch_images} training images, the three "
              f"evaluations): train {train_s:.2f} s + eval {eval_s:.2f} s = {train_s + eval_s:.2f} s")
        if args.epoch_images == 50_000 and (args.depth, args.widen) == (16, 10):
            print(f"  {RELEASED_EPOCH_S / (train_s + eval_s):.2f}x faster than the released code's "
                  f"{RELEASED_EPOCH_S} s on an H100 (reference file)")


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_train_step", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    command(parser.parse_args(argv))
    return 0
