"""The one resume protocol (core.progress) through the CLI: what a killed run leaves on disk is
enough to finish it, damage to those files is refused or read around, and nothing intact is lost."""

import json

import pytest
import torch

from lrorder.cli import main
from lrorder.convex import experiment
from lrorder.core import rundir
from lrorder.core.progress import STATE_VERSION

FAST = ["--set", "draws=2000"]


def run(*argv):
    return main([str(a) for a in argv])


@pytest.fixture
def killed(tmp_path, monkeypatch):
    """A convex-claim1 run of seeds 0-2 killed while it works on seed 2 (seeds 0 and 1 are done)."""
    original = experiment.claim1_seed

    def dies_on_seed_2(ctx, seed):
        if seed == 2:
            raise KeyboardInterrupt
        return original(ctx, seed)

    out = tmp_path / "killed"
    monkeypatch.setattr(experiment, "claim1_seed", dies_on_seed_2)
    assert run("run", "convex-claim1", "--seeds", 3, "--out", out, *FAST) == 130
    monkeypatch.setattr(experiment, "claim1_seed", original)
    return out


def lines(out):
    return (out / rundir.METRICS).read_text().splitlines()


def test_the_resume_point_is_plain_data_with_its_documented_schema(killed):
    point = torch.load(killed / rundir.STATE, weights_only=True)  # no pickled code to run
    assert set(point) == {"version", "metrics_bytes", "finished", "current", "partial", "problems",
                          "resumed_on"}
    assert point["resumed_on"] == []  # the first part's device is config.json's
    assert point["version"] == STATE_VERSION and list(point["finished"]) == ["seed 0", "seed 1"]
    assert point["metrics_bytes"] == (killed / rundir.METRICS).stat().st_size
    assert point["finished"]["seed 1"]["test_loss_ratio"] == pytest.approx(2.0, abs=0.1)


def test_a_resumed_run_equals_an_uninterrupted_one(killed, tmp_path):
    whole = tmp_path / "whole"
    assert run("run", "convex-claim1", "--out", killed, "--resume") == 0
    assert run("run", "convex-claim1", "--seeds", 3, "--out", whole, *FAST) == 0
    resumed, reference = (json.loads((d / rundir.SUMMARY).read_text()) for d in (killed, whole))
    assert resumed["metrics"]["test_loss_ratio"] == reference["metrics"]["test_loss_ratio"]
    assert resumed["devices"] == ["cpu", "cpu"] and reference["devices"] == ["cpu"]  # numpy: the CPU
    def timeless(out):
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines(out)]

    assert timeless(killed) == timeless(whole)


def test_a_garbage_resume_point_is_one_line_and_loses_nothing(killed, capsys):
    (killed / rundir.STATE).write_bytes(b"not a checkpoint at all")
    before = lines(killed)
    assert run("run", "convex-claim1", "--out", killed, "--resume") == 2
    err = capsys.readouterr().err
    assert "is not a readable resume point" in err and "move it aside" in err and err.count("\n") == 1
    assert lines(killed) == before


def test_a_deleted_resume_point_restarts_and_keeps_the_records_aside(killed, capsys):
    before = (killed / rundir.METRICS).read_text()
    (killed / rundir.STATE).unlink()
    assert run("run", "convex-claim1", "--out", killed, "--resume") == 0
    assert "no resume point" in capsys.readouterr().err
    (kept,) = killed.glob("metrics-before-restart-*.jsonl")
    assert kept.read_text() == before
    assert json.loads((killed / rundir.SUMMARY).read_text())["status"] == "complete"


def test_a_damaged_line_before_the_resume_point_is_kept_skipped_and_reported(killed, capsys):
    text = lines(killed)
    damaged = text[:3] + [text[3][:-5] + "#####"] + text[4:]  # damage in place: the size is the same
    (killed / rundir.METRICS).write_text("\n".join(damaged) + "\n")
    assert run("run", "convex-claim1", "--out", killed, "--resume") == 0
    after = lines(killed)
    assert after[:len(damaged)] == damaged  # every intact record, and the damaged line, where they were
    assert len(after) > len(damaged)  # seed 2 was logged after them
    assert "skipped damaged line(s) 4" in capsys.readouterr().err
    assert "line(s) 4 of metrics.jsonl are damaged" in (killed / rundir.REPORT).read_text()
