"""Running a recipe: resolve its config, own the run directory, aggregate seeds, write the report.

Data flow of `lrorder run`: config resolved and checked -> run directory prepared ->
config.json -> recipe.run(ctx) logs to metrics.jsonl and returns per-seed metrics ->
summary.json -> report.md and figures (rendered from the stored files only).
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm.auto import tqdm

import lrorder
from lrorder.core import config as cfg
from lrorder.core import report, rundir
from lrorder.core.errors import UserError
from lrorder.core.metrics import Metric, aggregate
from lrorder.core.progress import ResumePoint
from lrorder.core.recipe import Recipe, profile_values

T = TypeVar("T")


class RunContext:
    """What a recipe's `run` sees: its config and seeds, a logger, and the resume protocol.

    Work is done in named units (`each`), so a killed run resumes after its last finished unit,
    or inside the unit at its last `checkpoint` (see `lrorder.core.progress`). `device` is where
    this part of the run computes; `started_on` is the device the run started on (config.json's),
    which differs when a resumed run goes on elsewhere: a recipe whose units depend on the device
    (the vision recipes' groups of arms) chooses them by `started_on`, so a resumed run finds its
    units.
    """

    def __init__(self, recipe: Recipe, config: Any, seeds: list[int], device: str, path: Path,
                 point: ResumePoint, metrics: rundir.MetricsLog, started_on: str | None = None):
        self.recipe, self.config, self.seeds, self.device, self.path = (
            recipe, config, seeds, device, path)
        self.started_on = started_on or device
        self.metrics, self._point, self._unit = metrics, point, None

    @property
    def devices(self) -> list[str]:
        """Where each part of the run computed: the start device, then that of every resumed part
        that saved a resume point (the summary's `devices`)."""
        return [self.started_on, *self._point.resumed_on]

    @property
    def problems(self) -> list[str]:
        return self._point.problems

    def log(self, **values: Any) -> None:
        """Append one point to metrics.jsonl: its identity fields (`seed`, `method`, `kappa`,
        `step` or `epoch`) and named values."""
        self.metrics.append(values)

    def save_arrays(self, name: str, **arrays: np.ndarray) -> None:
        """Store arrays a figure needs (too many values for metrics.jsonl) as arrays/NAME.npz."""
        rundir.write_atomic(self.path / "arrays" / f"{name}.npz",
                            lambda f: np.savez_compressed(f, **arrays), mode="wb")

    def each(self, units: Mapping[str, T], work: Callable[[T, Any], Any]) -> dict[str, Any]:
        """Call `work(unit, partial)` for every unit not finished yet, in order, and record its
        result; `partial` is what the unit last passed to `checkpoint` (None for a fresh start).
        Returns every unit's result by name. Results must be plain data (see core.progress)."""
        for name, unit in units.items():
            if name in self._point.finished:
                continue
            partial = self._point.partial if self._point.current == name else None
            self._unit = name
            self._point.finished[name] = work(unit, partial)
            self._point.current = self._point.partial = self._unit = None
            self._save()
        return {name: self._point.finished[name] for name in units}

    def pending(self, names: Iterable[str]) -> bool:
        """Whether any of the units `names` is not finished yet."""
        return any(name not in self._point.finished for name in names)

    def checkpoint(self, partial: Any) -> None:
        """A resume point inside the unit being worked on: `partial` is handed back to it."""
        self._point.current, self._point.partial = self._unit, partial
        self._save()

    def _save(self) -> None:
        self._point.metrics_bytes = self.metrics.size()
        self._point.save(self.path / rundir.STATE)

    def progress(self, total: int, desc: str, unit: str = "step") -> tqdm:
        return tqdm(total=total, desc=f"{self.recipe.name}: {desc}", unit=unit,
                    dynamic_ncols=True, leave=False, disable=None)

    def diverged(self, where: str) -> None:
        """Mark the run as diverged at `where` (say the method or arm, the seed and when); the
        metrics it cannot give are NaN. Kept in the resume point."""
        self._point.problems.append(where)


def resolve_device(requested: str, asked_by: str = "--device cuda was asked for") -> str:
    """`requested` (auto, cpu, cuda) made concrete; cuda without a visible CUDA device is refused
    in one line, which begins with `asked_by`."""
    if requested == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise UserError(f"{asked_by} but no CUDA device is visible: use --device cpu")
    return "cpu"


def provenance() -> dict[str, Any]:
    """Versions and the project's git commit, so a run can be traced to the code that made it."""
    versions = {"python": platform.python_version(), "lrorder": lrorder.__version__}
    for package in ("numpy", "torch", "matplotlib"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"versions": versions, "git_commit": _git_commit(), "platform": platform.platform(),
            "threads": _threads()}


def _threads() -> dict[str, Any]:
    """The CPU threads the run may use: bf16 results on the CPU depend on them (the order of a
    reduction changes the rounding, and training amplifies it), so they are part of a run's record."""
    threads: dict[str, Any] = {"cpus": os.cpu_count(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
    if "torch" in sys.modules:
        threads["torch"] = sys.modules["torch"].get_num_threads()
    return threads


def _git_commit() -> str | None:
    source = Path(lrorder.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=source,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def check_seeds(seeds: Sequence[int]) -> list[int]:
    """An explicit seed list: non-empty, non-negative, distinct."""
    seeds = list(seeds)
    if not seeds:
        raise UserError("no seeds chosen: pass --seeds N, --seeds A:B or --seeds S1,S2")
    if any(s < 0 for s in seeds):
        raise UserError(f"seeds must be >= 0 (got {','.join(map(str, seeds))})")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"seeds must be distinct (got {','.join(map(str, seeds))})")
    return seeds


FINAL = ("complete", "diverged")  # a run in one of these states is not run again


def timestamp() -> str:
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def default_out(recipe: Recipe, profile: str) -> Path:
    return Path("runs") / f"{recipe.name}-{profile}-{timestamp()}"


def _resumed(recipe: Recipe, out: Path, sets: Sequence[str], asked: Mapping[str, Any]) -> tuple:
    """The stored config, seeds, start device and profile of the run in `out`; what is `asked`
    (profile, seeds) must match them."""
    stored = rundir.Records(out).config
    if stored["recipe"] != recipe.name:
        raise UserError(f"{out} holds a {stored['recipe']} run, not {recipe.name}: "
                        "resume it with its own recipe, or choose another --out")
    config = cfg.resolve(recipe.Config, stored["config"], cfg.split_assignments(sets))
    differs = [f"--set {k}" for k, v in cfg.as_dict(config).items() if v != stored["config"][k]]
    differs += [f"--{k}" for k, v in asked.items() if v is not None and v != stored[k]]
    if differs:
        raise UserError(f"--resume of {out} with a different {', '.join(differs)}: drop it "
                        "(a run resumes as it started), or choose another --out")
    return config, stored["seeds"], stored["device"], stored["profile"]


def run_recipe(recipe: Recipe, out: Path, *, profile: str | None = None, sets: Sequence[str] = (),
               seeds: Sequence[int] | None = None, device: str | None = None, resume: bool = False,
               command: str = "", values: Mapping[str, Any] | None = None,
               tensorboard: bool = False) -> dict[str, Any]:
    """Run `recipe` into the run directory `out` and return its summary (see module docstring).

    `profile`, `seeds` and `device` default to quick, the recipe's seeds and auto; `values` (a
    stored run's resolved config) replaces the profile's values; a resumed run keeps what it
    started with, except the device: it goes on on `device`, or where it started when none is
    asked (config.json keeps the start device; summary.json's `devices` lists every part's).
    Everything that can be checked (config, data, device) is checked before the first write.
    """
    out = Path(out)
    resumed = resume and (out / rundir.CONFIG).exists()
    if resumed:
        asked = {"profile": profile, "seeds": None if seeds is None else check_seeds(seeds)}
        config, chosen_seeds, started_on, profile = _resumed(recipe, out, sets, asked)
        if not recipe.uses_torch:
            device = "cpu"
        elif device:
            device = resolve_device(device)
        elif _finished(out):  # nothing left to compute: the report is only rendered again
            device = started_on
        else:  # where it started; a stored cuda run on a machine without CUDA is refused here
            device = resolve_device(started_on, f"{out} resumes on {started_on}, where it started "
                                                "(no --device was given),")
    else:
        profile = profile or "quick"
        base = profile_values(recipe, profile) if values is None else values
        config = cfg.resolve(recipe.Config, base, cfg.split_assignments(sets))
        chosen_seeds = check_seeds(range(recipe.default_seeds) if seeds is None else seeds)
        device = started_on = resolve_device(device or "auto") if recipe.uses_torch else "cpu"
    missing = recipe.missing_data(config)
    if missing:
        raise UserError(missing)
    if tensorboard:
        from lrorder.core.tensorboard import LiveWriter, require

        require()  # the optional package, checked before anything is written
    rundir.prepare(out, resume)
    finished = _finished(out)
    if finished:
        report.render(out)
        return finished
    if not (out / rundir.CONFIG).exists():
        rundir.write_json(out / rundir.CONFIG, {
            "recipe": recipe.name, "profile": profile, "seeds": chosen_seeds, "device": device,
            "config": cfg.as_dict(config), "command": command,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **provenance()})
    metrics = rundir.MetricsLog(out / rundir.METRICS, LiveWriter(out) if tensorboard else None)
    point = _resume_point(out, metrics)
    if resumed:
        point.resumed_on.append(device)  # kept once this part saves a resume point
    ctx = RunContext(recipe, config, chosen_seeds, device, out, point, metrics, started_on)
    start = time.perf_counter()
    try:
        results = recipe.run(ctx)
    finally:
        if metrics.listener is not None:
            metrics.listener.close()
    summary = summarize(recipe, config, chosen_seeds, results, ctx.problems,
                        time.perf_counter() - start, ctx.devices)
    rundir.write_json(out / rundir.SUMMARY, summary)
    (out / rundir.STATE).unlink(missing_ok=True)
    report.render(out)
    return summary


def _finished(out: Path) -> dict[str, Any] | None:
    """The summary of the run in `out` if it is finished (complete or diverged), else None."""
    summary = rundir.Records(out).summary if (out / rundir.SUMMARY).exists() else None
    return summary if summary and summary["status"] in FINAL else None


def _resume_point(out: Path, metrics: rundir.MetricsLog) -> ResumePoint:
    """The run's resume point, with metrics.jsonl cut back to it. Records logged without a
    resume point (state.pt deleted) are set aside, never overwritten, and the run restarts."""
    state = out / rundir.STATE
    if state.exists():
        point = ResumePoint.load(state)
        metrics.truncate(point.metrics_bytes)
        return point
    if metrics.size():
        kept = out / f"metrics-before-restart-{timestamp()}.jsonl"
        metrics.path.rename(kept)
        print(f"lrorder: no resume point in {out} ({rundir.STATE} is missing): restarting from the "
              f"beginning; the records logged before are kept in {kept}", file=sys.stderr)
    return ResumePoint()


def summarize(recipe: Recipe, config: Any, seeds: list[int], metrics: Mapping[Metric, Sequence[float]],
              problems: list[str], elapsed: float, devices: Sequence[str] = ()) -> dict[str, Any]:
    """summary.json's content; `devices` says where each part of the run computed (the start
    device first, then each resumed part's)."""
    paper = recipe.paper(config)
    return {
        "recipe": recipe.name,
        "status": "diverged" if problems else "complete",
        "problems": problems,
        "seeds": seeds,
        "metrics": {metric.name: aggregate(metric, values) for metric, values in metrics.items()},
        "paper": {name: claim.value for name, claim in paper.items()},
        "paper_claims": {name: claim.as_dict() for name, claim in paper.items()},
        "elapsed_s": round(elapsed, 3),
        "devices": list(devices),
    }


def print_summary(summary: Mapping[str, Any], out: Path, stream=None) -> None:
    stream = stream or sys.stdout  # looked up when called: a replaced stdout is honoured
    print(report.summary_table(summary), file=stream)
    print(f"\n{summary['recipe']}: {summary['status']} in {summary['elapsed_s']:.1f} s; "
          f"report: {out / rundir.REPORT}", file=stream)
