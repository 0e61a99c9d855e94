"""Sweeps: grid parsing, the local and Ray backends agree, a killed sweep leaves no process and
resumes without loss, corrupt records, more seeds later, nothing written before an error."""

import contextlib
import csv
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lrorder.cli import main
from lrorder.core import sweep

GRID = ["--grid", "steps=1,4", "--grid", "n=3,5", "--seeds", "2", "--set", "draws=2000"]
COMPARED = ["p_both_seen", "gf_test_loss_over_eps", "annealed_test_loss_over_eps", "test_loss_ratio"]


def read_table(out: Path) -> dict[tuple[str, str], dict[str, str]]:
    with (out / "table.csv").open() as handle:
        return {(row["steps"], row["n"]): row for row in csv.DictReader(handle)}


def test_parse_grid_lists_and_ranges():
    grid = sweep.parse_grid(["lr=log:0.001:0.1:3", "n=3,5", "n=5,7"])
    assert grid == {"lr": ["0.001", "0.01", "0.1"], "n": ["3", "5", "7"]}


@pytest.mark.parametrize("argv, message", [
    (["--grid", "stepz=1,2"], "did you mean 'steps'?"),
    (["--grid", "steps="], "has no values"),
    (["--grid", "steps=1,x"], "steps='x' is not valid: expected an integer"),
    (["--grid", "eps=lin:1:2"], "a range is lin:LOW:HIGH:COUNT"),
    (["--grid", "n=3,4", "--set", "n=5"], "n is both fixed with --set and swept with --grid: drop one"),
])
def test_bad_grids_fail_before_anything_starts(tmp_path, capsys, argv, message):
    assert main(["sweep", "convex-claim1", *argv, "--out", str(tmp_path / "s")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_local_sweep_aggregates_exactly_the_run_summaries(tmp_path, capsys):
    out = tmp_path / "local"
    assert main(["sweep", "convex-claim1", *GRID, "--max-parallel", "2", "--out", str(out)]) == 0
    record = json.loads((out / "sweep.json").read_text())
    assert len(record["runs"]) == 8 and len(list((out / "runs").iterdir())) == 8
    assert all(run["status"] == "complete" for run in record["runs"])
    table = read_table(out)
    for (steps, n), row in table.items():
        runs = [r for r in record["runs"] if r["point"] == {"steps": steps, "n": n}]
        for name in COMPARED:
            values = [json.loads((out / "runs" / r["id"] / "summary.json").read_text())
                      ["metrics"][name]["mean"] for r in runs]
            assert float(row[f"{name}_mean"]) == pytest.approx(np.mean(values), rel=1e-12)
            assert float(row[f"{name}_std"]) == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    assert float(table[("4", "3")]["test_loss_ratio_mean"]) == pytest.approx(2.0, abs=1e-3)
    assert {p.name for p in (out / "figures").iterdir()} >= {"test_loss_ratio.png"}
    # the same command finds the same directories and has nothing left to do
    before = {p.name: (p / "summary.json").stat().st_mtime_ns for p in (out / "runs").iterdir()}
    assert main(["sweep", "convex-claim1", *GRID, "--out", str(out)]) == 0
    assert before == {p.name: (p / "summary.json").stat().st_mtime_ns for p in (out / "runs").iterdir()}


def test_ray_backend_gives_the_same_numbers_as_local(tmp_path, capsys):
    pytest.importorskip("ray")
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert main(["sweep", "convex-claim1", *GRID, "--max-parallel", "2", "--out", str(local)]) == 0
    assert main(["sweep", "convex-claim1", *GRID, "--backend", "ray", "--max-parallel", "2",
                 "--out", str(remote)]) == 0
    ours, theirs = read_table(local), read_table(remote)
    assert ours.keys() == theirs.keys()
    for point in ours:
        for name in COMPARED:
            assert ours[point][f"{name}_mean"] == theirs[point][f"{name}_mean"]


def test_a_run_is_never_executed_twice_at_once(tmp_path):
    runs = sweep.plan("convex-claim1", {"steps": ["1"]}, [], "quick", [0], tmp_path)
    with sweep._exclusive(tmp_path / "locks" / f"{runs[0]['id']}.lock") as mine:
        assert mine
        assert sweep.run_point({**runs[0], "sweep": str(tmp_path)})["status"] == "running elsewhere"
    assert not (tmp_path / "runs" / runs[0]["id"]).exists()


def test_two_sweeps_never_share_a_directory_at_once(tmp_path, capsys):
    argv = ["sweep", "convex-claim1", "--grid", "steps=1", "--set", "draws=500", "--max-parallel", "1",
            "--out", str(tmp_path / "s")]
    assert main(argv) == 0
    with sweep._exclusive(tmp_path / "s" / "locks" / "sweep.lock"):
        assert main(argv) == 2
    assert "another sweep is running" in capsys.readouterr().err


def alive_in_session(session: int) -> list[str]:
    """The processes (not zombies) of a session, as "pid state command", read from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # ended meanwhile
            continue
        name, fields = text[text.index("(") + 1: text.rindex(")")], text[text.rindex(")") + 2:].split()
        if int(fields[3]) == session and fields[0] != "Z":
            found.append(f"{stat.parent.name} {fields[0]} {name}")
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killed_sweep_leaves_no_process_and_resumes_without_loss(tmp_path):
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "lrorder", "sweep", "convex-lemma2", "--grid", "steps=0,1,2,4,8,16",
            "--set", "instances=20000", "--max-parallel", "2", "--out", str(out)]
    process = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("runs/*/summary.json"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)  # the sweep process only, as `kill -9 PID` does
        process.wait()
        deadline = time.monotonic() + 10
        while alive_in_session(process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert alive_in_session(process.pid) == []  # workers and the resource tracker ended too
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("runs/*/summary.json")}
    assert 2 <= len(finished) < 6
    rerun = subprocess.run(argv, check=True, capture_output=True, text=True)
    assert "6 complete;" in rerun.stdout
    record = json.loads((out / "sweep.json").read_text())
    assert [run["status"] for run in record["runs"]] == ["complete"] * 6
    for run_id, mtime in finished.items():
        assert (out / "runs" / run_id / "summary.json").stat().st_mtime_ns == mtime
    for run in record["runs"]:
        lines = (out / "runs" / run["id"] / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == len({json.dumps(json.loads(line), sort_keys=True) for line in lines})
        assert len(lines) == 8  # one point per K in sweep_steps (steps is among them)


@pytest.mark.parametrize("owner", ["ended", "pid reused"])
def test_a_lock_whose_owner_is_gone_is_taken_over(tmp_path, owner):
    run = {**sweep.plan("convex-claim1", {"steps": ["1"]}, ["draws=500"], "quick", [0], tmp_path)[0],
           "sweep": str(tmp_path)}
    if owner == "ended":
        pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                 capture_output=True, text=True, check=True).stdout)
    else:  # a live process with the owner's pid but another start time
        pid = os.getpid()
    lock = tmp_path / "locks" / f"{run['id']}.lock"
    lock.parent.mkdir()
    with lock.open("w") as inherited:  # still held, as by a descriptor its owner passed on
        fcntl.flock(inherited, fcntl.LOCK_EX | fcntl.LOCK_NB)
        inherited.write(json.dumps({"host": socket.gethostname(), "pid": pid, "start": "-1"}))
        inherited.flush()
        assert sweep.run_point(run) == {"id": run["id"], "status": "complete"}
        assert json.loads(lock.read_text())["pid"] == os.getpid()


SMALL = ["sweep", "convex-claim1", "--grid", "steps=1,4", "--set", "draws=500", "--max-parallel", "1"]


def test_a_corrupt_sweep_record_is_one_line_and_moving_it_aside_recovers(tmp_path, capsys):
    out = tmp_path / "s"
    argv = [*SMALL, "--out", str(out)]
    assert main(argv) == 0
    runs = {p.name: (p / "summary.json").stat().st_mtime_ns for p in (out / "runs").iterdir()}
    (out / "sweep.json").write_text('{"recipe": "convex-claim1", "grid": {"st')
    capsys.readouterr()
    for command in (argv, ["report", str(out)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"{out / 'sweep.json'} is unreadable (JSONDecodeError: " in err
        assert "move it aside and re-run the sweep's command" in err and err.count("\n") == 1
    (out / "sweep.json").rename(out / "sweep.json.bad")
    assert main(argv) == 0
    assert [r["status"] for r in json.loads((out / "sweep.json").read_text())["runs"]] == ["complete"] * 2
    assert runs == {p.name: (p / "summary.json").stat().st_mtime_ns for p in (out / "runs").iterdir()}


@pytest.mark.parametrize("content", ['{"status": "compl', "[1, 2]", '{"status": "complete", "metrics": 3}'])
def test_a_corrupt_run_summary_is_moved_aside_and_its_point_runs_again(tmp_path, capsys, content):
    out = tmp_path / "s"
    argv = [*SMALL, "--out", str(out)]
    assert main(argv) == 0
    broken, kept = json.loads((out / "sweep.json").read_text())["runs"]
    kept_mtime = (out / "runs" / kept["id"] / "summary.json").stat().st_mtime_ns
    (out / "runs" / broken["id"] / "summary.json").write_text(content)
    capsys.readouterr()
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'runs' / broken['id'] / 'summary.json'} is corrupt (" in err and err.count("\n") == 1
    assert main(argv) == 0
    aside = list((out / "runs").glob(f"{broken['id']}.corrupt-*"))
    assert len(aside) == 1 and (aside[0] / "summary.json").read_text() == content
    assert json.loads((out / "runs" / broken["id"] / "summary.json").read_text())["status"] == "complete"
    assert (out / "runs" / kept["id"] / "summary.json").stat().st_mtime_ns == kept_mtime
    assert [r["status"] for r in json.loads((out / "sweep.json").read_text())["runs"]] == ["complete"] * 2
    assert {row["runs"] for row in csv.DictReader((out / "table.csv").open())} == {"1/1"}


def test_more_seeds_later_add_runs_and_keep_the_first(tmp_path, capsys):
    out = tmp_path / "s"
    assert main([*SMALL, "--seeds", "2", "--out", str(out)]) == 0
    first = {p.name: (p / "summary.json").stat().st_mtime_ns for p in (out / "runs").iterdir()}
    assert len(first) == 4
    assert main([*SMALL, "--seeds", "2:4", "--out", str(out)]) == 0
    record = json.loads((out / "sweep.json").read_text())
    assert record["seeds"] == [0, 1, 2, 3]
    for steps in ("1", "4"):
        runs = [r for r in record["runs"] if r["point"] == {"steps": steps}]
        assert sorted(r["seed"] for r in runs) == [0, 1, 2, 3]
        assert {r["status"] for r in runs} == {"complete"}
    assert len(list((out / "runs").iterdir())) == 8
    assert first == {name: (out / "runs" / name / "summary.json").stat().st_mtime_ns for name in first}
    assert {row["runs"] for row in csv.DictReader((out / "table.csv").open())} == {"4/4"}


def test_nothing_is_written_before_an_error_is_known(tmp_path, capsys, monkeypatch):
    import torch

    from lrorder.vision import data

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as without Ray
    assert main([*SMALL, "--backend", "ray", "--out", str(tmp_path / "ray")]) == 2
    assert "the ray backend needs Ray" in capsys.readouterr().err
    monkeypatch.setattr(data, "SHARED_JPEG", tmp_path / "absent.npz")
    with socket.socket() as closed:  # were the data fetched, it would fail at once
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv(data.URL_ENV, f"http://127.0.0.1:{closed.getsockname()[1]}/x.tar.gz")
    assert main(["sweep", "cifar-table1", "--grid", "epochs=1,2", "--data-dir", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "data")]) == 2
    assert "cifar10 data not found" in capsys.readouterr().err
    written = [tmp_path / "ray", tmp_path / "data"]
    if not torch.cuda.is_available():
        assert main(["sweep", "theory-order", "--grid", "d=50,100", "--device", "cuda",
                     "--out", str(tmp_path / "cuda")]) == 2
        assert "no CUDA device is visible" in capsys.readouterr().err
        written.append(tmp_path / "cuda")
    assert [path for path in written if path.exists()] == []


def test_a_failed_point_is_recorded_and_the_report_still_renders(tmp_path, capsys, monkeypatch):
    out = tmp_path / "partial"
    argv = ["sweep", "convex-claim1", "--grid", "steps=1,4", "--seeds", "2", "--set", "draws=500",
            "--max-parallel", "1", "--out", str(out)]
    assert main(argv) == 0
    record = json.loads((out / "sweep.json").read_text())
    broken = record["runs"][1]  # steps=1, seed 1
    (out / "runs" / broken["id"] / "summary.json").unlink()

    def explode(recipe, path, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr("lrorder.core.runner.run_recipe", explode)
    result = sweep.run_point({**broken, "sweep": str(out)})
    assert result == {"id": broken["id"], "status": "failed", "error": "RuntimeError: out of memory"}
    assert "out of memory" in (out / "logs" / f"{broken['id']}.log").read_text()
    assert main(["report", str(out)]) == 0
    rows = {row["steps"]: row for row in csv.DictReader((out / "table.csv").open())}
    assert rows["1"]["runs"] == "1/2" and rows["1"]["test_loss_ratio_mean"] == "nan"
    assert float(rows["4"]["test_loss_ratio_mean"]) == pytest.approx(2.0, abs=1e-3)
    assert (out / "figures" / "test_loss_ratio.png").exists()
    assert main(["report", str(out), "--metric", "solve_seconds"]) == 0
    assert (out / "figures" / "solve_seconds.png").exists()
    assert main(["report", str(out), "--metric", "nope"]) == 2
    assert "no metric nope in this sweep" in capsys.readouterr().err
    shutil.rmtree(out / "runs")  # as committed: tables and figures kept, runs not
    table = (out / "table.csv").read_text()
    assert main(["report", str(out)]) == 2
    assert "keeps no runs/" in capsys.readouterr().err and (out / "table.csv").read_text() == table


def test_a_sweep_never_writes_over_other_files(tmp_path, capsys):
    run_dir = tmp_path / "a-run"
    assert main(["run", "convex-claim1", "--set", "draws=500", "--out", str(run_dir)]) == 0
    assert main(["sweep", "convex-claim1", "--grid", "steps=1,2", "--out", str(run_dir)]) == 2
    assert "is not a sweep directory" in capsys.readouterr().err
    assert not (run_dir / "sweep.json").exists()
    out = tmp_path / "s"
    assert main(["sweep", "convex-claim1", "--grid", "steps=1", "--set", "draws=500",
                 "--max-parallel", "1", "--out", str(out)]) == 0
    assert main(["sweep", "convex-claim1", "--grid", "steps=2", "--set", "draws=500",
                 "--out", str(out)]) == 2
    assert "holds a different sweep" in capsys.readouterr().err
    assert json.loads((out / "sweep.json").read_text())["grid"] == {"steps": ["1"]}
