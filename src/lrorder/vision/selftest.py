"""`lrorder selftest`: what to run after installing on a new machine, and first on any new GPU.

On the chosen device, at the paper's size (WRN-16-10, batch 128) or, with `quick`, a tiny one
(WRN-10-1 on 16 x 16 images, batch 16: seconds on a 2-core CPU), on random images (no data set
is needed), it checks:

1. the production trainer (`StackedTrainer`) computes what the plain `Trainer`, the oracle of
   the released code's maths, computes: the three methods of cifar-patch (each from its own
   initial weights, so any cross-talk shows) stacked in one network (CUDA's grouping), and each
   in a network of its own (the CPU's, and any arm run apart), against three plain trainers,
   over one step and over a short epoch (a few batches and a partial one, then the
   evaluations), in fp32 and in bf16: every model's losses, its weights and its BatchNorm
   statistics (tests/test_vision_fast.py compares the same on the CPU);
2. on CUDA only: a step captured as a CUDA graph and replayed computes what the eager step
   computes, and the replays draw new pre-activation noise every step;
3. a diverging arm (a NaN learning rate) leaves the other arms of its stack as they are without it;
4. a trainer's state (one model; three stacked), saved and loaded into a fresh trainer, goes on
   exactly as the original does;
5. one patch-experiment epoch (random images, patched as cifar-patch patches CIFAR-10, the
   methods grouped as a recipe groups them on the device) ends with a finite loss below `max_loss`;

then runs the train-step benchmark (`lrorder.vision.bench`). Every check is a row: pass, fail or
skipped, the measured figure and the bound it is held to. `run` prints them, writes
selftest.json and returns the exit status (1 if a check failed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lrorder.core.rundir import make_writable_dir, write_json
from lrorder.core.runner import provenance
from lrorder.vision import bench
from lrorder.vision.config import VisionConfig
from lrorder.vision.experiment import cudnn_autotune, divergence
from lrorder.vision.loader import ImageSet
from lrorder.vision.stacked import GRAPH_WARMUP, StackedTrainer
from lrorder.vision.trainer import DEFAULT_PRECISION, Optimisation, Precision, Trainer
from lrorder.vision.wrn import WideResNet

FILE = "selftest.json"
METHODS = bench.PATCH_METHODS  # large 0.1; small 0.004; small 0.004 + noise 0.4 (Table 2's)
MAX_LOSS = VisionConfig().max_loss  # a recipe counts a loss above it as a divergence

# The bound on stacked vs plain: the largest relative difference of a model's loss (the step's;
# an epoch's training loss and its three validation losses), of its weights (||a - b|| / ||b||)
# and of its BatchNorm running statistics. Measured on the 2-core AVX-512 BF16 CPU of this work
# (one thread) at WRN-10-1 (16 and 32 pixels, batch 16 and 32), WRN-16-4 (batch 16 and 64) and
# WRN-16-10 (batch 8), 3-4 steps an epoch:
#   one step: fp32 <= 1.6e-7, bf16 <= 1e-6 (both paths start from the same weights and round the
#       first forward alike): bounds 1e-4 (the tests' rtol) and 2e-3 (bf16 kernels on a GPU may
#       round the two paths' convolutions differently, ~4e-3 a value).
#   an epoch: fp32 <= 2e-3, bf16 <= 1.7e-2, both at WRN-16-10 with batch 8 (<= 3e-4 and 7e-3 at
#       batch 16 and more): from the second step the weights differ by rounding, a ReLU at its
#       kink flips, and at lr 0.1 on random labels the difference grows; in bf16 every value that
#       differs is rounded to 8 bits. Bounds 1e-2 and 5e-2.
# The gradient is not compared: one ReLU input within rounding of 0 moves a model's whole gradient
# by 1e-3 in fp32 (seen at WRN-16-4, batch 64), while its loss and weights stay within 1e-7.
# A fault worth catching is far above these: a weight off by 0.01, another model's learning rate
# or gradient, a missing noise map move the loss or the weights by 1e-2 to 1 (the tests' broken
# step is such a fault). On CUDA the fp32 comparison runs with TF32 off (true fp32 kernels); no GPU
# was available when these bounds were set, so a GPU's figures (selftest.json) are its first
# measurement.
TOLERANCE: dict[tuple[Precision, str], float] = {
    ("fp32", "step"): 1e-4, ("fp32", "epoch"): 1e-2, ("bf16", "step"): 2e-3, ("bf16", "epoch"): 5e-2}
# A CUDA graph replays the eager step's kernels: the bound is bf16's epoch bound (the default
# precision), which also covers a noise stream drawn in another order by the graph.
GRAPH_TOLERANCE = TOLERANCE[(DEFAULT_PRECISION, "epoch")]
# Consecutive replays of one batch at learning rate 0: the noisy model's loss must move by at
# least this much (sigma 0.4 moves it by ~1e-2 and more), the noiseless models' by no more than
# QUIET_CHANGE (the same kernels on the same inputs: 0 unless a kernel sums in a varying order).
NOISE_CHANGE, QUIET_CHANGE = 1e-4, 1e-6
GRAPH_CHECKS = ("CUDA graph = eager, two short epochs", "CUDA graph draws new noise every step")


@dataclasses.dataclass(frozen=True)
class Size:
    """The network, images and amounts of work of a selftest."""

    depth: int
    widen: int
    side: int  # pixels per side of the random images of checks 1-5
    batch: int
    batches: int  # full batches in the short epochs of checks 1, 3 and 4 (a partial one follows)
    patch_images: int  # training images of check 5's epoch (test: a fifth of it)
    patch_only: int  # patch-only validation images of check 5's epoch
    bench_batch: int
    bench_steps: int
    bench_rounds: int
    bench_warmup: int

    @property
    def name(self) -> str:
        return f"WRN-{self.depth}-{self.widen}"


QUICK = Size(10, 1, 16, 16, 3, 256, 100, 32, 2, 1, 1)
FULL = Size(16, 10, 32, 128, 3, 50_000, 1000, 128, 20, 5, 10)  # the paper's epoch, bench's defaults
# the paper's network on a CPU: an epoch of 50,000 images would take hours, so 10 batches
FULL_ON_CPU = dataclasses.replace(FULL, patch_images=1280, bench_steps=1, bench_rounds=1, bench_warmup=1)


@dataclasses.dataclass
class Row:
    """One check's outcome: `status` pass, fail or skipped; `figure` is held to `relation`
    `tolerance` (e.g. <= 1e-4)."""

    check: str
    status: str
    figure: float | None = None
    relation: str = "<="
    tolerance: float | None = None
    detail: str = ""
    seconds: float = 0.0

    def bound(self) -> str:
        return "" if self.tolerance is None else f"{self.relation} {_number(self.tolerance)}"


def judged(check: str, figure: float, relation: str, tolerance: float, detail: str,
           also: bool = True) -> Row:
    """A row that passes when `figure` meets the bound (a NaN never does) and `also` holds."""
    ok = {"<=": figure <= tolerance, ">=": figure >= tolerance, ">": figure > tolerance}[relation]
    return Row(check, "pass" if ok and also else "fail", figure, relation, tolerance, detail)


def _number(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


# --- what the checks share ---

def _models(size: Size, count: int) -> list[WideResNet]:
    """`count` networks, each from its own initial weights (seeds 0, 1, ...), without touching
    the caller's random state."""
    nets = []
    with torch.random.fork_rng(devices=[]):
        for m in range(count):
            torch.manual_seed(m)
            nets.append(WideResNet(size.depth, size.widen))
    return nets


def _sets(size: Size, device: str, batches: int) -> tuple[ImageSet, dict[str, ImageSet]]:
    """A short epoch's patched training set (`batches` full batches and half a batch) and small
    clean, mixed and patch-only validation sets."""
    return bench.patch_sets(batches * size.batch + size.batch // 2, device, test=2 * size.batch,
                            side=size.side, patch_only=2 * size.batch)


def _first_batch(size: Size, device: str, train: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `size.batch` training images, patched with draws of a fixed generator."""
    return train.batch(torch.arange(size.batch, device=device), torch.Generator(device).manual_seed(1))


def _cpu_states(states: Sequence[Mapping[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    return [{k: v.detach().cpu().clone() for k, v in state.items()} for state in states]


def _relative(a: float, b: float) -> float:
    """|a - b| / |b|; NaN when either is not finite."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.nan
    return abs(a - b) / max(abs(b), 1e-12)


def _norm_error(pairs: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """||a - b|| / ||b|| over every pair (a, b) taken together, in float64."""
    num = den = 0.0
    for a, b in pairs:
        a, b = a.double(), b.double()
        num += float((a - b).pow(2).sum())
        den += float(b.pow(2).sum())
    return math.sqrt(num / den) if den > 0 else (0.0 if num == 0 else math.inf)


def _weight_and_stats_errors(ours: Sequence[Mapping[str, torch.Tensor]],
                             reference: Sequence[Mapping[str, torch.Tensor]]) -> tuple[float, float]:
    """The worst model's ||ours - reference|| / ||reference|| over its weights and biases, and
    over its BatchNorm running statistics."""
    weights, stats = [], []
    for o, r in zip(ours, reference):
        weights.append(_norm_error((o[k], r[k]) for k in r if k.endswith(("weight", "bias"))))
        stats.append(_norm_error((o[k], r[k]) for k in r if k.endswith(("running_mean", "running_var"))))
    return _worst(weights), _worst(stats)


def _worst(values: Sequence[float]) -> float:
    """The largest value; NaN if any is NaN."""
    return math.nan if any(math.isnan(v) for v in values) else max(values)


def _difference(a: Any, b: Any) -> float:
    """The largest absolute difference between two nested states (dicts, lists, tensors, numbers);
    inf where they differ in structure, shape, or in a value that is not a float."""
    if isinstance(a, Mapping):
        if not isinstance(b, Mapping) or a.keys() != b.keys():
            return math.inf
        return max((_difference(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, (list, tuple)):
        if not isinstance(b, (list, tuple)) or len(a) != len(b):
            return math.inf
        return max((_difference(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
            return math.inf
        a, b = a.detach().cpu(), b.detach().cpu()
        if not a.is_floating_point():
            return 0.0 if torch.equal(a, b) else math.inf
        if torch.equal(a.isnan(), b.isnan()):
            a, b = a.nan_to_num(0.0), b.nan_to_num(0.0)
        return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
    if isinstance(a, float) and isinstance(b, float):
        return 0.0 if a == b or (math.isnan(a) and math.isnan(b)) else abs(a - b)
    return 0.0 if a == b else math.inf


@contextlib.contextmanager
def _kernels(deterministic: bool = False, tf32: bool = True):
    """cuDNN's deterministic kernels (and no autotuning), TF32 on or off, for one check; restored
    after it. The CPU ignores these settings."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32
    cudnn.deterministic, cudnn.benchmark = deterministic, False
    cudnn.allow_tf32, matmul.allow_tf32 = saved[2] and tf32, saved[3] and tf32
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = saved


def _saved_and_loaded(state: Mapping[str, Any]) -> dict[str, Any]:
    """`state` through a file, as a resume point is: torch.save, then a weights_only load."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# --- the checks ---

def check_stacked_vs_plain(size: Size, device: str, precision: Precision, epoch: bool,
                           stacked: bool = True) -> Row:
    """Check 1: the three methods stacked in one network (CUDA's grouping) or each in a network of
    its own (`stacked` false: the CPU's, and any arm run apart) against three plain trainers, one
    step or a short epoch."""
    what = "a short epoch" if epoch else "one step"
    check = f"{'stacked' if stacked else 'one model'} = plain trainer, {what}, {precision}"
    train, evals = _sets(size, device, size.batches)
    optim = Optimisation(1, size.batch)
    groups = [list(range(len(METHODS)))] if stacked else [[m] for m in range(len(METHODS))]
    with _kernels(tf32=precision != "fp32"):
        plain = [Trainer(net, method, optim, train, evals, 0, device, precision)
                 for net, method in zip(_models(size, len(METHODS)), METHODS)]
        nets = _models(size, len(METHODS))
        ours = [StackedTrainer([nets[m] for m in group], [METHODS[m] for m in group], optim, train, evals,
                               0, device, precision=precision) for group in groups]
        if epoch:
            results = [result for trainer in ours for result in trainer.run_epoch()]
            references = [trainer.run_epoch() for trainer in plain]
            keys = ["train_loss", *(f"{name}_loss" for name in evals)]
            pairs = [(o.get(k, math.nan), r.get(k, math.nan))
                     for o, r in zip(results, references) for k in keys]
            accuracy = _worst([abs(o.get(k, math.nan) - r.get(k, math.nan))
                               for o, r in zip(results, references)
                               for k in ("train_acc", *(f"{name}_acc" for name in evals))])
            extra = f"accuracies within {accuracy:.2g} points"
        else:
            for trainer in (*plain, *ours):
                trainer.model.train()
            x, y = _first_batch(size, device, train)
            sigmas = [m.sigma(1, 0, optim.epochs) for m in METHODS]
            for trainer, group in zip(ours, groups):
                trainer.optimizer.lr.copy_(torch.tensor([METHODS[m].lr(1, optim.epochs) for m in group]))
                trainer.noise.sigma.copy_(torch.tensor([sigmas[m] for m in group]))
            out = torch.cat([trainer.step(x, y).cpu() for trainer in ours], dim=1)  # [loss and hits, model]
            pairs, hits = [], 0
            for m, (trainer, sigma) in enumerate(zip(plain, sigmas)):
                trainer.model.noise.sigma = sigma
                loss, hit = trainer.step(x, y)
                pairs.append((float(out[0, m]), float(loss)))
                hits = max(hits, abs(int(out[1, m]) - int(hit)))
            extra = f"hits within {hits} of {size.batch}"
    loss = _worst([_relative(o, r) for o, r in pairs])
    weights, stats = _weight_and_stats_errors(
        _cpu_states([state for trainer in ours for state in trainer.models()]),
        _cpu_states([trainer.model.state_dict() for trainer in plain]))
    figure = _worst([loss, weights, stats])
    detail = f"loss {_number(loss)}, weights {_number(weights)}, BN stats {_number(stats)}, {extra}"
    return judged(check, figure, "<=", TOLERANCE[(precision, "epoch" if epoch else "step")], detail)


def check_cuda_graph(size: Size, device: str) -> list[Row]:
    """Check 2 (CUDA only): a CUDA-graph stacked trainer against the eager one over two short
    epochs (warm-up steps, the capture, replays, an eager partial batch), then replays of one
    batch at learning rate 0: the noisy model's loss must change from replay to replay (new
    noise), the noiseless models' must not."""
    names = GRAPH_CHECKS
    if not device.startswith("cuda"):
        return [Row(name, "skipped", detail="skipped: needs CUDA") for name in names]
    train, evals = _sets(size, device, GRAPH_WARMUP + 3)
    optim = Optimisation(2, size.batch)
    with _kernels():
        eager, graphed = (StackedTrainer(_models(size, len(METHODS)), METHODS, optim, train, evals, 0,
                                         device, graph=graph) for graph in (False, True))
        pairs = []
        for _ in range(optim.epochs):
            for o, r in zip(graphed.run_epoch(), eager.run_epoch()):
                pairs += [(o.get(k, math.nan), r.get(k, math.nan))
                          for k in ("train_loss", *(f"{name}_loss" for name in evals))]
        captured = graphed.static_batch is not None
        loss = _worst([_relative(o, r) for o, r in pairs])
        weights, stats = _weight_and_stats_errors(_cpu_states(graphed.models()), _cpu_states(eager.models()))
        figure = _worst([loss, weights, stats])
        rows = [judged(names[0], figure, "<=", GRAPH_TOLERANCE,
                       f"loss {_number(loss)}, weights {_number(weights)}, BN stats {_number(stats)}"
                       + ("" if captured else "; no graph was captured"), also=captured)]
        graphed.model.train()
        graphed.optimizer.lr.zero_()
        graphed.noise.sigma.copy_(torch.tensor([m.sigma0 for m in METHODS]))
        x, y = _first_batch(size, device, train)
        losses = torch.stack([graphed.train_step(x, y)[0] for _ in range(4)]).double().cpu()
    change = ((losses[1:] - losses[:-1]).abs() / losses[:-1].abs()).amin(0)  # per model, the smallest
    still = ((losses[1:] - losses[:-1]).abs() / losses[:-1].abs()).amax(0)  # per model, the largest
    noisy = [m for m, method in enumerate(METHODS) if method.sigma0 > 0]
    quiet = [m for m in range(len(METHODS)) if m not in noisy]
    figure = min(float(change[m]) for m in noisy)
    moved = max(float(still[m]) for m in quiet)
    rows.append(judged(names[1], figure, ">=", NOISE_CHANGE,
                       f"4 replays of one batch at lr 0: the noisy model's loss changes by >= "
                       f"{_number(figure)} each time, the noiseless models' by {_number(moved)} "
                       f"(<= {_number(QUIET_CHANGE)})", also=moved <= QUIET_CHANGE and captured))
    return rows


def check_divergence(size: Size, device: str) -> Row:
    """Check 3: the stack with the first method's learning rate NaN against the healthy stack."""
    check = "a diverging arm leaves the others untouched"
    cuda = device.startswith("cuda")
    train, evals = _sets(size, device, size.batches)
    optim = Optimisation(1, size.batch)
    broken_methods = [dataclasses.replace(METHODS[0], lr0=math.nan), *METHODS[1:]]
    with _kernels(deterministic=True):
        healthy, broken = (StackedTrainer(_models(size, len(METHODS)), methods, optim, train, evals, 0,
                                          device) for methods in (METHODS, broken_methods))
        good, bad = healthy.run_epoch(), broken.run_epoch()
    states = _cpu_states(broken.models())
    reference = _cpu_states(healthy.models())
    keys = ["train_loss", *(f"{name}_loss" for name in evals)]
    records = _worst([_relative(b.get(k, math.nan), g.get(k, math.nan))
                      for b, g in zip(bad[1:], good[1:]) for k in keys])
    weights = _worst([_norm_error((s[k], r[k]) for k in r if r[k].is_floating_point())
                      for s, r in zip(states[1:], reference[1:])])
    stopped = bad[0]["diverged"] and "clean_acc" not in bad[0]
    nan_is_its_own = not all(torch.isfinite(v).all() for v in states[0].values())
    others = not any(r["diverged"] for r in bad[1:]) and all(
        torch.isfinite(v).all() for state in states[1:] for v in state.values())
    tolerance = TOLERANCE[(DEFAULT_PRECISION, "epoch")] if cuda else 0.0  # the CPU is deterministic
    detail = (f"lr NaN for {METHODS[0].name}: diverged {'yes' if stopped else 'NO'}, its weights non-finite "
              f"{'yes' if nan_is_its_own else 'NO'}; the others finite {'yes' if others else 'NO'}, their "
              f"losses {_number(records)} and weights {_number(weights)} from the healthy stack's")
    return judged(check, _worst([records, weights]), "<=", tolerance, detail,
                  also=stopped and nan_is_its_own and others)


def check_resume(size: Size, device: str, models: int) -> Row:
    """Check 4: a trainer of the last `models` methods (1: the noisy one) after one short epoch,
    its state saved and loaded (weights_only) into a fresh trainer; the state must come back bit
    for bit, and the next epoch of both must be the same, bit for bit (cuDNN's deterministic
    kernels on CUDA)."""
    check = f"save / resume is exact ({'1 model' if models == 1 else f'{models} models stacked'})"
    train, evals = _sets(size, device, size.batches)
    optim = Optimisation(2, size.batch)

    def fresh():
        return StackedTrainer(_models(size, models), METHODS[-models:], optim, train, evals, 0, device)

    with _kernels(deterministic=True):
        original = fresh()
        original.run_epoch()
        resumed = fresh()
        resumed.load_state_dict(_saved_and_loaded(original.state_dict()))
        loaded = _difference(resumed.state_dict(), original.state_dict())
        tail = [resumed.run_epoch(), original.run_epoch()]
    strip = [{k: v for k, v in r.items() if not k.endswith("seconds")} for records in tail for r in records]
    half = len(strip) // 2
    going_on = max(_difference(strip[:half], strip[half:]),
                   _difference(resumed.state_dict(), original.state_dict()))
    detail = (f"loaded state differs by {_number(loaded)}; the next epoch's records and state by "
              f"{_number(going_on)}")
    return judged(check, max(loaded, going_on), "<=", 0.0, detail)


def check_patch_epoch(size: Size, device: str) -> Row:
    """Check 5: one epoch of the patch experiment's three methods on random images, grouped as
    the recipe groups them on this device (`fast=auto`: stacked with CUDA, one by one on the CPU)."""
    check = "one patch-experiment epoch, finite loss"
    cuda = device.startswith("cuda")
    train, evals = bench.patch_sets(size.patch_images, device, side=size.side, patch_only=size.patch_only)
    optim = Optimisation(1, size.batch)
    groups = [METHODS] if cuda else [[method] for method in METHODS]
    with cudnn_autotune(device):
        epochs = [StackedTrainer(_models(size, len(group)), group, optim, train, evals, 0, device).run_epoch()
                  for group in groups]
    records = [record for epoch in epochs for record in epoch]  # the seconds are each group's
    problems = [f"{m.name}: {p}" for m, r in zip(METHODS, records)
                if (p := divergence(r, tuple(evals), MAX_LOSS))]
    losses = [r["train_loss"] for r in records]
    seconds = sum(epoch[0]["train_seconds"] + epoch[0]["eval_seconds"] for epoch in epochs)
    detail = (f"{size.patch_images} images, {'stacked' if cuda else 'one method at a time'}: train loss "
              + ", ".join(f"{m.name} {loss:.3f}" for m, loss in zip(METHODS, losses))
              + f"; {seconds:.1f} s with the evaluations" + (f"; {'; '.join(problems)}" if problems else ""))
    figure = math.nan if any(not math.isfinite(loss) for loss in losses) else max(losses)
    return judged(check, figure, "<=", MAX_LOSS, detail, also=not problems)


def check_benchmark(size: Size, device: str, peak: float | None) -> tuple[Row, list[dict]]:
    """The train-step benchmark (`bench.run`); its row passes when every path ran at a finite,
    positive speed. The figure is the fastest path's TFLOP/s."""
    with cudnn_autotune(device):
        rows = bench.run(size.depth, size.widen, size.bench_batch, size.bench_steps, size.bench_warmup,
                         device, size.bench_rounds)
    best = max(rows, key=lambda r: r["tflops"])
    ok = all(math.isfinite(r["ms_per_step"]) and r["ms_per_step"] > 0 for r in rows)
    of_peak = "" if peak is None else f", {best['tflops'] / peak:.1%} of the device's {peak:.0f}"
    detail = f"fastest: {best['path']}, {best['images_per_s']:.0f} img/s{of_peak} (table below)"
    return judged("train-step benchmark", best["tflops"], ">", 0.0, detail, also=ok), rows


# --- the command ---

def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0] if names else platform.processor() or platform.machine()} (CPU)"


def _guarded(names: Sequence[str], check: Callable[[], Row | list[Row]]) -> list[Row]:
    """The check's rows, timed; an exception fails each of `names` with its message."""
    start = time.perf_counter()
    try:
        made = check()
        rows = made if isinstance(made, list) else [made]
    except Exception as exc:  # a check that cannot run has failed: report it and go on
        rows = [Row(name, "fail", detail=f"error: {type(exc).__name__}: {exc}") for name in names]
    for row in rows:
        row.seconds = (time.perf_counter() - start) / len(rows)
    return rows


def _line(row: Row) -> str:
    return (f"  {row.status:<7} {row.check:<50} {_number(row.figure):>9} {row.bound():>10} "
            f"{row.seconds:6.1f}  {row.detail}")


def run(device: str, quick: bool, out: Path, command: str) -> int:
    """Run every check on `device` ("cpu" or "cuda"), print the table and the benchmark, write
    `out`/selftest.json; 0 if no check failed, else 1."""
    start = time.perf_counter()
    make_writable_dir(out)  # before the checks: a long run must not end unable to write its record
    cuda = device.startswith("cuda")
    size = QUICK if quick else FULL if cuda else FULL_ON_CPU
    name = _device_name(device)
    peak = bench.device_peak(name) if cuda else None
    threads = torch.get_num_threads()
    where = name if cuda else f"{name}, {threads} thread{'s' if threads > 1 else ''}"
    print(f"lrorder selftest on {where}: {size.name}{' (--quick)' if quick else ''}, batch {size.batch}, "
          f"{size.side} x {size.side} random images; torch {torch.__version__}")
    if not quick and not cuda:
        print("  the paper's network on a CPU takes tens of minutes; --quick checks the same in seconds")
    print(f"  {'status':<7} {'check':<50} {'figure':>9} {'bound':>10} {'s':>6}  detail")
    checks: list[tuple[Sequence[str], Callable[[], Row | list[Row]]]] = []
    for stacked in (True, False):
        for precision in ("fp32", "bf16"):
            for epoch in (False, True):
                what = (f"{'stacked' if stacked else 'one model'} = plain trainer, "
                        f"{'a short epoch' if epoch else 'one step'}, {precision}")
                checks.append(((what,), lambda p=precision, e=epoch, s=stacked:
                               check_stacked_vs_plain(size, device, p, e, s)))
    checks += [
        (GRAPH_CHECKS, lambda: check_cuda_graph(size, device)),
        (("a diverging arm leaves the others untouched",), lambda: check_divergence(size, device)),
        (("save / resume is exact (1 model)",), lambda: check_resume(size, device, 1)),
        (("save / resume is exact (3 models stacked)",), lambda: check_resume(size, device, 3)),
        (("one patch-experiment epoch, finite loss",), lambda: check_patch_epoch(size, device)),
    ]
    rows: list[Row] = []
    for names, check in checks:
        for row in _guarded(names, check):
            rows.append(row)
            print(_line(row), flush=True)
    timings: list[dict] = []

    def benchmark() -> Row:
        row, made = check_benchmark(size, device, peak)
        timings.extend(made)
        return row

    rows += _guarded(("train-step benchmark",), benchmark)
    print(_line(rows[-1]))
    if timings:
        print(f"train step, {size.name}, batch {size.bench_batch} per model, median of {size.bench_rounds} "
              f"rounds of {size.bench_steps} steps:")
        print("\n".join(bench.table(timings, peak)))
        print("  'of peak': of the device's dense bf16 peak"
              + (f" ({peak:.0f} TFLOP/s)" if peak else " (not known for this device)")
              + "; the recipe columns: projected training wall time of the full recipes at this step's speed")
    failed = [row.check for row in rows if row.status == "fail"]
    seconds = time.perf_counter() - start
    path = out / FILE
    origin = provenance()
    write_json(path, {
        "command": command, "device": device, "device_name": name, "torch": torch.__version__,
        "git_commit": origin["git_commit"], "versions": origin["versions"], "platform": origin["platform"],
        "quick": quick, "size": dataclasses.asdict(size), "threads": threads,
        "passed": not failed, "seconds": seconds, "rows": [dataclasses.asdict(row) for row in rows],
        "benchmark": timings})
    counts = {status: sum(row.status == status for row in rows) for status in ("pass", "fail", "skipped")}
    print(f"{counts['pass']} passed, {counts['fail']} failed, {counts['skipped']} skipped in "
          f"{seconds:.0f} s; {path}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0
