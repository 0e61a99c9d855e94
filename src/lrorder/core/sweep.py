"""Sweeps: the cross product of a grid of config values x seeds, each a normal run directory.

    DIR/sweep.json        the grid, the backend and every run's status (rewritten as runs finish)
    DIR/runs/ID/          one run directory per (point, seed); ID is a hash of its overrides
    DIR/logs/ID.log       what that run printed
    DIR/locks/ID.lock     held while the run executes, so no run ever executes twice at once

Re-running the same command finds the same IDs: complete runs are skipped, killed ones resume.
Runs execute in worker processes (`local`) or as Ray tasks (`ray`); both call `run_point`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lrorder.core import config as cfg
from lrorder.core import rundir
from lrorder.core.errors import UserError
from lrorder.core.recipe import get_recipe, profile_values

SWEEP = "sweep.json"


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """`key=v1,v2`, `key=log:lo:hi:n` or `key=lin:lo:hi:n` -> {key: [value text, ...]}."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, values = next(iter(cfg.split_assignments([item]).items()))
        kind, _, spec = values.partition(":")
        if kind in ("log", "lin") and spec:
            try:
                low, high, count = spec.split(":")
                space = np.geomspace if kind == "log" else np.linspace
                texts = [f"{v:.6g}" for v in space(float(low), float(high), int(count))]
            except ValueError:
                raise UserError(f"--grid {item!r}: a range is {kind}:LOW:HIGH:COUNT, "
                                f"e.g. {key}=log:0.001:0.3:8") from None
        else:
            texts = [v.strip() for v in values.split(",") if v.strip()]
        if not texts:
            raise UserError(f"--grid {item!r} has no values: write e.g. --grid {key}=1,2,3")
        grid[key] = list(dict.fromkeys(grid.get(key, []) + texts))
    if not grid:
        raise UserError("a sweep needs at least one --grid key=v1,v2,...")
    return grid


def plan(recipe_name: str, grid: Mapping[str, list[str]], sets: Sequence[str], profile: str,
         seeds: Sequence[int], out: Path) -> list[dict[str, Any]]:
    """Every (point, seed) run, checked before anything starts: unknown keys, bad values."""
    recipe = get_recipe(recipe_name)
    base = cfg.split_assignments(sets)
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    for point in points:
        cfg.resolve(recipe.Config, profile_values(recipe, profile), {**base, **point})
    runs = []
    for point in points:
        for seed in seeds:
            overrides = {"recipe": recipe_name, "profile": profile, "sets": base,
                         "point": point, "seed": seed}
            run_id = hashlib.sha1(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:10]
            runs.append({**overrides, "id": run_id, "sweep": str(out),
                         "sets": [f"{k}={v}" for k, v in {**base, **point}.items()]})
    return runs


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock on `path` if nobody else does; yields whether we got it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def run_point(run: Mapping[str, Any], device: str = "auto") -> dict[str, Any]:
    """Execute one run of a sweep (in a worker process or a Ray task); never raises."""
    from lrorder.core.runner import run_recipe

    sweep = Path(run["sweep"])
    path = sweep / "runs" / run["id"]
    with _exclusive(sweep / "locks" / f"{run['id']}.lock") as mine:
        if not mine:
            return {"id": run["id"], "status": "running elsewhere"}
        log = sweep / "logs" / f"{run['id']}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            try:
                summary = run_recipe(
                    get_recipe(run["recipe"]), path, profile=run["profile"], sets=run["sets"],
                    seed=run["seed"], device=device, resume=(path / rundir.CONFIG).exists(),
                    command=f"lrorder run {run['recipe']} --profile {run['profile']} --seed "
                            f"{run['seed']} {' '.join('--set ' + s for s in run['sets'])} --out {path}")
            except Exception as exc:  # a failed point is recorded, the sweep goes on
                print(f"failed: {type(exc).__name__}: {exc}")
                return {"id": run["id"], "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    return {"id": run["id"], "status": summary["status"]}


def status_of(sweep: Path, run: Mapping[str, Any]) -> str:
    summary = sweep / "runs" / run["id"] / rundir.SUMMARY
    return json.loads(summary.read_text())["status"] if summary.exists() else "pending"


def _local(runs: list[dict], max_parallel: int, device: str) -> Iterator[dict[str, Any]]:
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # torch is not fork-safe
    with concurrent.futures.ProcessPoolExecutor(max_parallel, mp_context=context) as pool:
        futures = [pool.submit(run_point, run, device) for run in runs]
        for future in concurrent.futures.as_completed(futures):
            yield future.result()


def _ray(runs: list[dict], max_parallel: int, device: str, address: str | None,
         gpus_per_run: float) -> Iterator[dict[str, Any]]:
    """One Ray task per run, at most `max_parallel` in flight (also on an existing cluster)."""
    try:
        import ray
    except ImportError:
        raise UserError("the ray backend needs Ray: pip install 'lrorder[ray]'") from None
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=max_parallel, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1, num_gpus=gpus_per_run)(run_point)
        waiting, in_flight = list(runs), []
        while waiting or in_flight:
            while waiting and len(in_flight) < max_parallel:
                in_flight.append(task.remote(waiting.pop(0), device))
            done, in_flight = ray.wait(in_flight, num_returns=1)
            yield ray.get(done[0])
    finally:
        ray.shutdown()


def _check_out(out: Path, record: Mapping[str, Any]) -> None:
    """`out` must be new, empty, or hold this very sweep: never another run's or sweep's files."""
    if (out / SWEEP).exists():
        stored = json.loads((out / SWEEP).read_text())
        same = ("recipe", "profile", "grid", "sets", "seeds")
        if any(stored.get(k) != record[k] for k in same):
            raise UserError(f"{out} holds a different sweep ({stored['recipe']}, grid "
                            f"{stored['grid']}): re-run its own command, or choose another --out")
    elif rundir.is_busy(out):
        raise UserError(f"{out} exists and is not a sweep directory: choose another --out")
    rundir.make_writable_dir(out)


def sweep(recipe_name: str, grid_items: Sequence[str], *, out: Path, sets: Sequence[str] = (),
          profile: str = "quick", seeds: int = 1, backend: str = "local", address: str | None = None,
          max_parallel: int | None = None, gpus_per_run: float = 0.0, device: str = "auto",
          command: str = "") -> dict:
    """Run every (point, seed) of the grid that is not final yet; returns sweep.json's content.

    With `--address`, every Ray node must see `out` on a shared file system: runs write there.
    """
    from lrorder.core.runner import FINAL, seeds_from

    grid = parse_grid(grid_items)
    if max_parallel is not None and max_parallel < 1:
        raise UserError(f"--max-parallel must be >= 1 (got {max_parallel})")
    if gpus_per_run < 0:
        raise UserError(f"--gpus-per-run must be >= 0 (got {gpus_per_run})")
    out = Path(out).resolve()
    runs = plan(recipe_name, grid, sets, profile, seeds_from(None, seeds, 1), out)
    max_parallel = max_parallel or os.cpu_count() or 1
    record = {"recipe": recipe_name, "command": command, "profile": profile, "grid": grid,
              "sets": list(sets), "seeds": seeds, "backend": backend, "runs": runs}
    _check_out(out, record)
    with _exclusive(out / "locks" / "sweep.lock") as mine:
        if not mine:
            raise UserError(f"another sweep is running in {out}: wait for it, or choose another --out")
        status = {run["id"]: {"status": status_of(out, run)} for run in runs}
        todo = [run for run in runs if status[run["id"]]["status"] not in FINAL]
        _write(out, record, status)
        bar = tqdm(total=len(runs), initial=len(runs) - len(todo), desc=f"sweep {recipe_name}",
                   unit="run", dynamic_ncols=True, disable=None, file=sys.stderr)
        results = (_local(todo, max_parallel, device) if backend == "local"
                   else _ray(todo, max_parallel, device, address, gpus_per_run))
        failed = finished = 0
        for result in results:
            status[result["id"]] = {k: v for k, v in result.items() if k != "id"}
            finished += 1
            failed += result["status"] not in FINAL
            bar.update()
            bar.set_postfix(running=min(max_parallel, len(todo) - finished), failed=failed)
            _write(out, record, status)
        bar.close()
    return {**record, "status": status}


def _write(out: Path, record: Mapping[str, Any], status: Mapping[str, Any]) -> None:
    runs = [{k: v for k, v in {**run, **status[run["id"]]}.items() if k != "sweep"}
            for run in record["runs"]]  # where the sweep lives is the reader's business
    rundir.write_json(out / SWEEP, {**record, "runs": runs})


def is_sweep(path: Path) -> bool:
    return (path / SWEEP).exists()
