"""Sweeps: the cross product of a grid of config values x seeds, each a normal run directory.

    DIR/sweep.json        the grid, the seeds, the backend and every run's status (rewritten as runs finish)
    DIR/runs/ID/          one run directory per (point, seed); ID is a hash of its overrides
    DIR/logs/ID.log       what that run printed
    DIR/locks/ID.lock     held while the run executes, so no run ever executes twice at once

Re-running the same command finds the same IDs: complete runs are skipped, killed ones resume,
and more seeds add runs beside the existing ones. Runs execute in worker processes (`local`),
which die with the sweep process, or as Ray tasks (`ray`); both call `run_point`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from tqdm.auto import tqdm

from lrorder.core import config as cfg
from lrorder.core import rundir, workers
from lrorder.core.errors import UserError
from lrorder.core.recipe import get_recipe, profile_values

SWEEP = "sweep.json"
BACKENDS = ("local", "ray")


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
    """Every (point, seed) run, checked before anything starts: keys both set and swept, unknown
    keys, bad values, missing data."""
    recipe = get_recipe(recipe_name)
    base = cfg.split_assignments(sets)
    both = [key for key in grid if key in base]
    if both:
        raise UserError(f"{', '.join(both)} is both fixed with --set and swept with --grid: "
                        "drop one of them")
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    for point in points:
        missing = recipe.missing_data(
            cfg.resolve(recipe.Config, profile_values(recipe, profile), {**base, **point}))
        if missing:
            raise UserError(missing)
    runs = []
    for point in points:
        for seed in seeds:
            overrides = {"recipe": recipe_name, "profile": profile, "sets": base,
                         "point": point, "seed": seed}
            run_id = hashlib.sha1(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:10]
            runs.append({**overrides, "id": run_id, "sweep": str(out),
                         "sets": [f"{k}={v}" for k, v in {**base, **point}.items()]})
    return runs


def _process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks after boot, from /proc), so that a reused pid is
    not taken for the process that had it; None where that cannot be read."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _is_stale(path: Path) -> bool:
    """Whether the lock file names an owner on this host that no longer runs."""
    try:
        owner = json.loads(path.read_text())
        host, pid, start = owner["host"], int(owner["pid"]), owner["start"]
    except (OSError, ValueError, KeyError, TypeError):
        return False  # no readable owner: whoever holds the lock is taken to be running
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, someone else's
    return start is not None and _process_start(pid) not in (None, start)


def _lock(path: Path) -> IO[str] | None:
    """An open handle holding `path`'s exclusive lock, its owner written in; None if held."""
    handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.truncate()
    handle.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                             "start": _process_start(os.getpid())}))
    handle.flush()
    return handle


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock on `path` if nobody else does; yields whether we got it.

    The holder's lock ends with its process; a lock still held although the owner it names is
    gone (held through a descriptor some other process inherited) is stale and taken over by
    putting a fresh lock file in its place. Two takers cannot race: the run locks are only
    taken inside one sweep, which holds the sweep lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = _lock(path)
    if handle is None and _is_stale(path):
        fresh = path.with_name(f"{path.name}.{os.getpid()}")
        handle = _lock(fresh)
        if handle is not None:
            fresh.replace(path)
    if handle is None:
        yield False
        return
    with handle:
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
                    seeds=[run["seed"]], device=device, resume=(path / rundir.CONFIG).exists(),
                    command=f"lrorder run {run['recipe']} --profile {run['profile']} --seed "
                            f"{run['seed']} {' '.join('--set ' + s for s in run['sets'])} --out {path}")
            except Exception as exc:  # a failed point is recorded, the sweep goes on
                print(f"failed: {type(exc).__name__}: {exc}")
                return {"id": run["id"], "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    return {"id": run["id"], "status": summary["status"]}


def run_summary(sweep: Path, run: Mapping[str, Any]) -> dict[str, Any] | None:
    """The run's summary.json; None while it has none; ValueError when it is not a summary."""
    path = sweep / "runs" / run["id"] / rundir.SUMMARY
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    metrics = summary.get("metrics", {}) if isinstance(summary, dict) else None
    if not (isinstance(metrics, dict) and isinstance(summary.get("status"), str)
            and all(isinstance(stats, dict) and "mean" in stats for stats in metrics.values())):
        raise ValueError("not a run summary")
    return summary


def status_of(sweep: Path, run: Mapping[str, Any]) -> str:
    """The run's status; a run whose summary is corrupt is moved aside (kept, never deleted)
    and counts as pending, so its point runs again."""
    from lrorder.core.runner import timestamp

    try:
        summary = run_summary(sweep, run)
    except ValueError as exc:
        path = sweep / "runs" / run["id"]
        aside = path.with_name(f"{run['id']}.corrupt-{timestamp()}")
        path.rename(aside)
        print(f"{path / rundir.SUMMARY} is corrupt ({exc}): moved the run to {aside}; "
              "its point runs again", file=sys.stderr)
        return "pending"
    return summary["status"] if summary else "pending"


def _local(runs: list[dict], max_parallel: int, device: str) -> Iterator[dict[str, Any]]:
    import concurrent.futures

    with workers.pool(max_parallel, threads=max(1, (os.cpu_count() or 1) // max_parallel)) as pool:
        futures = [pool.submit(run_point, run, device) for run in runs]
        for future in concurrent.futures.as_completed(futures):
            yield future.result()


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("the ray backend needs Ray: pip install 'lrorder[ray]'") from None
    return ray


def _ray(runs: list[dict], max_parallel: int, device: str, address: str | None,
         gpus_per_run: float) -> Iterator[dict[str, Any]]:
    """One Ray task per run, at most `max_parallel` in flight (also on an existing cluster)."""
    ray = _import_ray()
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


def _seed_list(value: Any) -> list[int]:
    """A record's seeds: a list, or a count as sweeps recorded them before lists."""
    seeds = list(range(value)) if isinstance(value, int) else value
    if not (isinstance(seeds, list) and all(isinstance(s, int) and s >= 0 for s in seeds)):
        raise ValueError(f"seeds {value!r} are not a list of seeds")
    return seeds


def read_record(out: Path) -> dict[str, Any]:
    """sweep.json, checked; one line saying what to do when it is unreadable."""
    path = out / SWEEP
    try:
        record = json.loads(path.read_text())
        record["seeds"] = _seed_list(record["seeds"])
        if not (isinstance(record["recipe"], str) and isinstance(record["grid"], dict)
                and isinstance(record["sets"], list) and isinstance(record["runs"], list)
                and all(isinstance(r, dict) and {"id", "point", "seed"} <= r.keys()
                        for r in record["runs"])):
            raise ValueError("not a sweep record")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, KeyError) else f"no {exc}"
        raise UserError(f"{path} is unreadable ({reason}): move it aside and re-run the sweep's "
                        f"command, which rebuilds it and keeps the complete runs in {out / 'runs'}") from None
    return record


def _stored(out: Path) -> dict[str, Any] | None:
    """The record of the sweep already in `out`; None if `out` holds none yet (a sweep whose
    sweep.json was moved aside still has its runs/ and locks/); refuses any other files."""
    if (out / SWEEP).exists():
        return read_record(out)
    if rundir.is_busy(out) and not ((out / "runs").is_dir() and (out / "locks").is_dir()):
        raise UserError(f"{out} exists and is not a sweep directory: choose another --out")
    return None


def sweep(recipe_name: str, grid_items: Sequence[str], *, out: Path, sets: Sequence[str] = (),
          profile: str = "quick", seeds: Sequence[int] = (0,), backend: str = "local",
          address: str | None = None, max_parallel: int | None = None, gpus_per_run: float = 0.0,
          device: str = "auto", command: str = "") -> dict:
    """Run every (point, seed) of the grid that is not final yet; returns sweep.json's content.

    `seeds` are added to those the sweep in `out` already has, which keep their run
    directories. Everything that can be checked is checked before the first write. With
    `--address`, every Ray node must see `out` on a shared file system: runs write there.
    """
    from lrorder.core.runner import FINAL, check_seeds, resolve_device

    grid = parse_grid(grid_items)
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if max_parallel is not None and max_parallel < 1:
        raise UserError(f"--max-parallel must be >= 1 (got {max_parallel})")
    if gpus_per_run < 0:
        raise UserError(f"--gpus-per-run must be >= 0 (got {gpus_per_run})")
    seeds = check_seeds(seeds)
    if backend == "ray":
        _import_ray()
    if device != "auto" and get_recipe(recipe_name).uses_torch and not address:
        resolve_device(device)  # a cluster's nodes have devices this machine may lack
    out = Path(out).resolve()
    stored = _stored(out)
    seeds = sorted(set(seeds).union(stored["seeds"] if stored else ()))
    runs = plan(recipe_name, grid, sets, profile, seeds, out)
    max_parallel = max_parallel or os.cpu_count() or 1
    record = {"recipe": recipe_name, "command": command, "profile": profile, "grid": grid,
              "sets": list(sets), "seeds": seeds, "backend": backend, "runs": runs}
    if stored and any(stored.get(k) != record[k] for k in ("recipe", "profile", "grid", "sets")):
        raise UserError(f"{out} holds a different sweep ({stored['recipe']}, grid "
                        f"{stored['grid']}): re-run its own command, or choose another --out")
    rundir.make_writable_dir(out)
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
