"""A CIFAR recipe run arm by arm, or seed by seed, and combined (`lrorder report --combine`) is the
recipe run with every arm and seed at once, metric for metric; parts that do not make one run are
refused."""

import json
import shutil

import pytest

from lrorder.cli import main
from lrorder.core.errors import UserError
from lrorder.core.recipe import get_recipe
from lrorder.vision import experiment
from lrorder.vision.stacked import StackedTrainer

ARMS = ("large", "small", "small_noise")
# the paper's settings on a tiny network and data set, two seeds; with fast off every arm trains
# alone from its seed's data and initial weights, in a run of one arm or of all three
TINY_ONE = ["--profile", "full", "--set", "depth=10", "--set", "widen=1", "--set", "train_size=200",
            "--set", "test_size=100", "--set", "epochs=2", "--device", "cpu", "--set", "fast=off"]
TINY = [*TINY_ONE, "--seeds", "2"]


def run(*argv):
    return main([str(a) for a in argv])


def read(out):
    summary = json.loads((out / "summary.json").read_text())
    config = json.loads((out / "config.json").read_text())
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return summary, config, lines


def without_seconds(lines):
    """The records of a run, timings left out, in (seed, arm, epoch) order."""
    kept = [{k: v for k, v in p.items() if not k.endswith("seconds")} for p in lines]
    return sorted(kept, key=lambda p: (p["seed"], ARMS.index(p["method"]), p["epoch"]))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fake_cifar):
    """cifar-patch with all arms and seeds 0 and 1, once per arm (the parts) and once per seed (seed
    1 added later to seed 0's run with `--from`)."""
    root = tmp_path_factory.mktemp("combine")
    fake_cifar(root / "data")
    data = ["--set", f"data_dir={root / 'data'}"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(experiment, "PATCH_ONLY_SIZE", 100)
        for name, methods in (("whole", ",".join(ARMS)), *((arm, arm) for arm in ARMS)):
            assert run("run", "cifar-patch", "--out", root / name, *data, "--set", f"methods={methods}",
                       *TINY) == 0
        assert run("run", "cifar-patch", "--out", root / "seed0", *data, "--seed", 0, *TINY_ONE) == 0
        assert run("run", "--from", root / "seed0", "--seeds", "1:2", "--out", root / "seed1") == 0
    return root


def test_the_arms_run_apart_and_combined_are_the_run_of_all_arms(runs):
    out = runs / "combined"
    # the parts in any order: the combined run has the recipe's
    assert run("report", "--combine", out, runs / "small_noise", runs / "large", runs / "small") == 0
    whole, whole_config, whole_lines = read(runs / "whole")
    combined, config, lines = read(out)
    # each arm trained alone is bit for bit the arm trained beside the others
    assert without_seconds(lines) == without_seconds(whole_lines)
    assert combined["metrics"] == whole["metrics"]
    for key in ("status", "problems", "seeds", "paper", "paper_claims"):
        assert combined[key] == whole[key]
    assert {"clean_order_holds", "matched_loss", "clean_acc_large_best", "clean_acc_small_last5",
            "patch_acc_small_before_anneal", "mixed_acc_at_matched_loss_small_noise"} <= set(
        combined["metrics"])
    assert config["config"] == whole_config["config"]
    assert config["config"]["methods"] == list(ARMS)
    assert [part["methods"] for part in config["parts"]] == [[arm] for arm in ARMS]
    assert all(part["devices"] == ["cpu"] and "git_commit" in part for part in config["parts"])
    assert combined["devices"] == ["cpu"] * 3
    report = (out / "report.md").read_text()
    assert "Combined from" in report and "Patch-only accuracy in the epoch before the anneal" in report
    assert (out / "figures" / "figure3_patch.png").exists()
    assert (out / "figures" / "test_vs_train_loss.png").exists()


def test_the_seeds_run_apart_and_combined_are_the_run_of_all_seeds(runs):
    """More seeds run later (`--seeds 1:2`) pool with the first ones: a seed's numbers do not
    depend on the other seeds of its run, and the metrics over seeds (the matched train loss
    every method reaches in every seed) are computed again over all of them."""
    out = runs / "combined-seeds"
    assert run("report", "--combine", out, runs / "seed1", runs / "seed0") == 0
    whole, whole_config, whole_lines = read(runs / "whole")
    combined, config, lines = read(out)
    assert without_seconds(lines) == without_seconds(whole_lines)
    assert combined["metrics"] == whole["metrics"]
    assert combined["seeds"] == config["seeds"] == [0, 1]
    assert config["config"] == whole_config["config"]
    assert [part["seeds"] for part in config["parts"]] == [[0], [1]]
    assert "seeds 0; " in (out / "report.md").read_text()


def test_a_combined_run_combines_again_and_keeps_the_parts_that_trained(runs):
    """A combine of combines lists the runs that trained (their commits and devices), not the
    intermediate combine; parts split by seed and by method overlap in one line."""
    assert run("report", "--combine", runs / "small-both", runs / "small", runs / "small_noise") == 0
    out = runs / "combined-again"
    assert run("report", "--combine", out, runs / "small-both", runs / "large") == 0
    combined, config, _ = read(out)
    assert combined["metrics"] == read(runs / "whole")[0]["metrics"]
    assert [(part["dir"], part["methods"], part["seeds"]) for part in config["parts"]] == [
        (str(runs / arm), [arm], [0, 1]) for arm in ARMS]


def test_parts_split_by_seed_and_by_method_that_overlap_are_refused(runs, tmp_path, capsys):
    assert run("report", "--combine", tmp_path / "out", runs / "seed0", runs / "large") == 2
    error = capsys.readouterr().err
    assert "seed 0 of method large is in both" in error and len(error.strip().splitlines()) == 1


def test_an_arm_stopped_by_a_time_limit_goes_on_with_its_command_and_resume(runs, tmp_path, monkeypatch):
    """docs/vision.md's jobs: the arm's command, interrupted (`timeout -s INT`), then the same
    command with --resume until complete; the arm is the one run straight, and combines."""
    calls, original = {"n": 0}, StackedTrainer.run_epoch

    def interrupted(self):
        calls["n"] += 1
        if calls["n"] == 3:  # seed 1's first epoch: seed 0 is done, seed 1 starts again
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(StackedTrainer, "run_epoch", interrupted)
    monkeypatch.setattr(experiment, "PATCH_ONLY_SIZE", 100)
    command = ["run", "cifar-patch", "--out", tmp_path / "large", "--set", f"data_dir={runs / 'data'}",
               "--set", "methods=large", *TINY]
    assert run(*command) == 130
    assert run(*command, "--resume") == 0
    assert without_seconds(read(tmp_path / "large")[2]) == without_seconds(read(runs / "large")[2])
    out = tmp_path / "combined"
    assert run("report", "--combine", out, tmp_path / "large", runs / "small", runs / "small_noise") == 0
    assert read(out)[0]["metrics"] == read(runs / "whole")[0]["metrics"]


def damaged(runs, tmp_path, name, change):
    """A copy of the part `name` with `change(config, summary_path)` applied to it."""
    copy = tmp_path / f"{name}-changed"
    shutil.copytree(runs / name, copy)
    config = json.loads((copy / "config.json").read_text())
    change(config, copy / "summary.json")
    (copy / "config.json").write_text(json.dumps(config))
    return copy


@pytest.mark.parametrize("change, message", [
    (lambda config, _: config["config"].update(lr_small=0.02), "differ in lr_small"),
    (lambda config, _: config.update(seeds=[5]), "no part holds seed 5 of method large"),
    (lambda config, _: config.update(profile="quick"), "differ in profile"),
    (lambda config, summary: summary.unlink(), "is unfinished"),
    (lambda config, _: None, "seed 0 of method small is in both"),
])
def test_parts_that_do_not_make_one_run_are_refused_in_one_line_and_nothing_is_written(
        runs, tmp_path, capsys, change, message):
    part = damaged(runs, tmp_path, "small", change)
    out = tmp_path / "combined"
    assert run("report", "--combine", out, runs / "large", runs / "small", part) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
    assert not out.exists()


def test_a_combined_run_is_written_into_a_new_directory_only(runs, tmp_path, capsys):
    assert run("report", "--combine", runs / "large", runs / "small", runs / "small_noise") == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert run("report", "--combine", tmp_path / "out", runs / "large", "--out", tmp_path / "t.md") == 2
    assert "drop --out" in capsys.readouterr().err


def test_a_recipe_whose_metrics_are_not_all_in_its_records_cannot_be_combined():
    recipe = get_recipe("theory-order")
    with pytest.raises(UserError, match="cannot be combined"):
        recipe.metrics_from_records(recipe.Config(), [0], [])
