"""Running a recipe: resolve its config, own the run directory, aggregate seeds, write the report.

Data flow of `lrorder run`: config resolved and checked -> run directory prepared ->
config.json -> recipe.run(ctx) logs to metrics.jsonl and returns per-seed metrics ->
summary.json -> report.md and figures (rendered from the stored files only).
"""

from __future__ import annotations

import datetime
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

import lrorder
from lrorder.core import config as cfg
from lrorder.core import report, rundir
from lrorder.core.errors import UserError
from lrorder.core.recipe import Recipe, profile_values


class RunContext:
    """What a recipe's `run` sees: its config and seeds, a logger, and resume helpers."""

    def __init__(self, recipe: Recipe, config: Any, seeds: list[int], device: str, path: Path):
        self.recipe, self.config, self.seeds, self.device, self.path = (
            recipe, config, seeds, device, path)
        self.metrics = rundir.MetricsLog(path / rundir.METRICS)
        self.problems: list[str] = []

    def log(self, **values: Any) -> None:
        """Append one point to metrics.jsonl: include `seed` and `step` or `epoch`."""
        self.metrics.append(values)

    def save_arrays(self, name: str, **arrays: np.ndarray) -> None:
        """Store arrays a figure needs (too many values for metrics.jsonl) as arrays/NAME.npz."""
        rundir.write_atomic(self.path / "arrays" / f"{name}.npz",
                            lambda f: np.savez_compressed(f, **arrays), mode="wb")

    def save_state(self, state: Any) -> None:
        """Record a resume point: `state` plus how much of metrics.jsonl it accounts for."""
        import torch

        bundle = {"metrics_lines": self.metrics.lines, "state": state}
        rundir.write_atomic(self.path / rundir.STATE, lambda f: torch.save(bundle, f), mode="wb")

    def load_state(self) -> Any:
        """The last resume point's state (None for a fresh run); cuts metrics.jsonl back to it."""
        import torch

        path = self.path / rundir.STATE
        if not path.exists():
            self.metrics.truncate(0)
            return None
        bundle = torch.load(path, map_location="cpu", weights_only=False)
        self.metrics.truncate(bundle["metrics_lines"])
        return bundle["state"]

    def progress(self, total: int, desc: str, unit: str = "step") -> tqdm:
        return tqdm(total=total, desc=f"{self.recipe.name}: {desc}", unit=unit,
                    dynamic_ncols=True, leave=False, disable=None)

    def diverged(self, where: str) -> None:
        """Mark the run as diverged (non-finite loss) at `where`; metrics it cannot give are NaN."""
        self.problems.append(where)

    def for_each_seed(self, run_seed: Callable[[int], Mapping[str, float]]) -> dict[str, list[float]]:
        """Run `run_seed(seed)` for every seed, resuming after the last finished one."""
        done: dict[int, Mapping[str, float]] = self.load_state() or {}
        with self.progress(len(self.seeds), "seeds", unit="seed") as bar:
            bar.update(len(done))
            for seed in self.seeds:
                if seed not in done:
                    done[seed] = dict(run_seed(seed))
                    self.save_state(done)
                    bar.update()
        return {name: [done[s][name] for s in self.seeds] for name in done[self.seeds[0]]}


def resolve_device(requested: str) -> str:
    if requested == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise UserError("--device cuda was asked for but no CUDA device is visible: use --device cpu")
    return "cpu"


def provenance() -> dict[str, Any]:
    """Versions and the project's git commit, so a run can be traced to the code that made it."""
    versions = {"python": platform.python_version(), "lrorder": lrorder.__version__}
    for package in ("numpy", "torch", "matplotlib"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"versions": versions, "git_commit": _git_commit(), "platform": platform.platform()}


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


def seeds_from(seed: int | None, count: int | None, default_count: int) -> list[int]:
    """`--seed S` is one seed; `--seeds N` is seeds 0..N-1; neither is the recipe's default."""
    if count is not None and count < 1:
        raise UserError(f"--seeds must be >= 1 (got {count})")
    if seed is not None and seed < 0:
        raise UserError(f"--seed must be >= 0 (got {seed})")
    if seed is not None:
        return [seed]
    return list(range(count if count is not None else default_count))


FINAL = ("complete", "diverged")  # a run in one of these states is not run again


def timestamp() -> str:
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def default_out(recipe: Recipe, profile: str) -> Path:
    return Path("runs") / f"{recipe.name}-{profile}-{timestamp()}"


def _resumed(recipe: Recipe, out: Path, sets: Sequence[str], asked: Mapping[str, Any]) -> tuple:
    """The stored config, seeds, device and profile of the run in `out`, which asked must match."""
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
               seed: int | None = None, seeds: int | None = None, device: str | None = None,
               resume: bool = False, command: str = "") -> dict[str, Any]:
    """Run `recipe` into the run directory `out` and return its summary (see module docstring).

    `profile`, `seeds` and `device` default to quick, the recipe's seeds and auto; a resumed
    run keeps what it started with.
    """
    out = Path(out)
    if resume and (out / rundir.CONFIG).exists():
        asked = {"profile": profile,
                 "seeds": None if seed is None and seeds is None else seeds_from(seed, seeds, 1),
                 "device": resolve_device(device) if device and recipe.uses_torch else None}
        config, chosen_seeds, device, profile = _resumed(recipe, out, sets, asked)
    else:
        profile = profile or "quick"
        config = cfg.resolve(recipe.Config, profile_values(recipe, profile),
                             cfg.split_assignments(sets))
        chosen_seeds = seeds_from(seed, seeds, recipe.default_seeds)
        device = resolve_device(device or "auto") if recipe.uses_torch else "cpu"
    missing = recipe.missing_data(config)
    if missing:
        raise UserError(missing)
    rundir.prepare(out, resume)
    finished = rundir.Records(out).summary if (out / rundir.SUMMARY).exists() else None
    if finished and finished["status"] in FINAL:
        report.render(out)
        return finished
    if not (out / rundir.CONFIG).exists():
        rundir.write_json(out / rundir.CONFIG, {
            "recipe": recipe.name, "profile": profile, "seeds": chosen_seeds, "device": device,
            "config": cfg.as_dict(config), "command": command,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **provenance()})
    ctx = RunContext(recipe, config, chosen_seeds, device, out)
    start = time.perf_counter()
    metrics = recipe.run(ctx)
    summary = summarize(recipe, config, chosen_seeds, metrics, ctx.problems,
                        time.perf_counter() - start)
    rundir.write_json(out / rundir.SUMMARY, summary)
    (out / rundir.STATE).unlink(missing_ok=True)
    report.render(out)
    return summary


def summarize(recipe: Recipe, config: Any, seeds: list[int], metrics: Mapping[str, Sequence[float]],
              problems: list[str], elapsed: float) -> dict[str, Any]:
    paper = recipe.paper(config)
    return {
        "recipe": recipe.name,
        "status": "diverged" if problems else "complete",
        "problems": problems,
        "seeds": seeds,
        "metrics": {name: aggregate(values) for name, values in metrics.items()},
        "paper": {name: claim.value for name, claim in paper.items()},
        "paper_claims": {name: claim.as_dict() for name, claim in paper.items()},
        "elapsed_s": round(elapsed, 3),
    }


def aggregate(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample std (0 for one seed) and the per-seed values; NaN seeds make NaN stats."""
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "per_seed": array.tolist()}


def print_summary(summary: Mapping[str, Any], out: Path, stream=sys.stdout) -> None:
    print(report.summary_table(summary), file=stream)
    print(f"\n{summary['recipe']}: {summary['status']} in {summary['elapsed_s']:.1f} s; "
          f"report: {out / rundir.REPORT}", file=stream)
