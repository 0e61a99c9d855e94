"""The CIFAR recipes end to end through the CLI, on a tiny fake CIFAR-10 in the real format."""

import hashlib
import json
import math
import time

import pytest
import torch

from lrorder.cli import main
from lrorder.core.config import resolve
from lrorder.core.recipe import get_recipe, profile_values
from lrorder.vision import data, experiment
from lrorder.vision.config import ControlConfig, PatchConfig
from lrorder.vision.recipes import RANKED, control_schedule
from lrorder.vision.stacked import StackedTrainer
from lrorder.vision.trainer import Method

# the paper's settings (full profile) on a tiny network, data set and run
TINY = ["--profile", "full", "--set", "depth=10", "--set", "widen=1", "--set", "train_size=200",
        "--set", "test_size=100", "--set", "epochs=4"]
# a test about a CPU run (its grouping of arms, exact resume, a patched trainer) pins the device:
# `fast=auto` stacks the arms on a machine with CUDA
CPU = ["--device", "cpu"]
PATCH_ARMS = ("large", "small", "small_noise")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, fake_cifar):
    root = tmp_path_factory.mktemp("data")
    fake_cifar(root)
    return root


@pytest.fixture(autouse=True)
def small_patch_only_set(monkeypatch):
    monkeypatch.setattr(experiment, "PATCH_ONLY_SIZE", 100)


def paper_at_full_profile(name):
    """The paper's numbers a recipe claims at its full (paper-sized) profile."""
    recipe = get_recipe(name)
    return recipe.paper(resolve(recipe.Config, profile_values(recipe, "full")))


def run(*argv):
    return main([str(a) for a in argv])


def logged(arms, epochs, stacked):
    """The (method, epoch) order of the log lines of `arms` sharing a training set: stacked, epoch
    by epoch, every arm in turn; else one arm after another."""
    if stacked:
        return [(m, e) for e in range(1, epochs + 1) for m in arms]
    return [(m, e) for m in arms for e in range(1, epochs + 1)]


def records(out):
    summary = json.loads((out / "summary.json").read_text())
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return summary, lines


@pytest.fixture(scope="module")
def patch_run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("runs") / "patch"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(experiment, "PATCH_ONLY_SIZE", 100)
        assert run("run", "cifar-patch", "--out", out, "--set", f"data_dir={data_dir}", *TINY, *CPU) == 0
    return out


def test_cifar_patch_writes_table2_metrics_and_figure3(patch_run, fast_forced):
    summary, lines = records(patch_run)
    assert summary["status"] == "complete"
    for method in ("large", "small", "small_noise"):
        for kind in ("clean", "mixed", "patch"):
            assert f"{kind}_acc_{method}" in summary["metrics"]
            assert f"{kind}_acc_{method}_last5" in summary["metrics"]
        assert f"patch_acc_{method}_before_anneal" in summary["metrics"]
    assert "clean_acc_small" not in summary["paper"]  # a miniature is not judged on Table 2's numbers
    assert summary["paper"]["clean_order_holds"] == 1.0
    # at the paper's settings every number of Table 2 and Figure 3 is claimed for a metric the run writes
    assert len(paper_at_full_profile("cifar-patch")) == 15
    assert set(paper_at_full_profile("cifar-patch")) <= set(summary["metrics"])
    assert [(p["method"], p["epoch"]) for p in lines] == logged(PATCH_ARMS, 4, fast_forced)
    # the anneal is at half of the run: lr 0.1 -> 0.004, sigma 0.4 -> 4e-6
    large = [p for p in lines if p["method"] == "large"]
    noisy = [p for p in lines if p["method"] == "small_noise"]
    assert [p["lr"] for p in large] == pytest.approx([0.1, 0.004, 0.004, 0.004])
    assert [p["sigma"] for p in noisy] == pytest.approx([0.4, 4e-6, 4e-6, 4e-6])
    assert (patch_run / "figures" / "figure3_patch.png").stat().st_size > 10_000
    assert "Patch-only accuracy in the epoch before the anneal" in (patch_run / "report.md").read_text()
    # every arm read at the lowest train loss all of them reach, in the epoch it first got there
    matched = summary["metrics"]["matched_loss"]["mean"]
    assert matched == max(min(p["train_loss"] for p in lines if p["method"] == m) for m in RANKED)
    for method in RANKED:
        epoch = summary["metrics"][f"epoch_at_matched_loss_{method}"]["mean"]
        first = next(p for p in lines if p["method"] == method and p["train_loss"] <= matched)
        assert epoch == first["epoch"]
        for kind in ("clean", "mixed", "patch"):
            assert summary["metrics"][f"{kind}_acc_at_matched_loss_{method}"]["mean"] == first[f"{kind}_acc"]
    assert (patch_run / "figures" / "test_vs_train_loss.png").stat().st_size > 10_000
    assert "At the matched train loss" in (patch_run / "report.md").read_text()


def without_seconds(lines):
    return [{k: v for k, v in p.items() if not k.endswith("seconds")} for p in lines]


def killed_and_resumed(out, data_dir, monkeypatch, call, *sets):
    """Run cifar-patch, interrupted in the trainers' `call`-th epoch, then resume it."""
    calls = {"n": 0}
    original = StackedTrainer.run_epoch

    def dies(self):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(StackedTrainer, "run_epoch", dies)
    argv = ["run", "cifar-patch", "--out", out, "--set", f"data_dir={data_dir}", *TINY, *CPU,
            "--set", "checkpoint_every=1", *sets]
    assert run(*argv) == 130
    assert run("run", "cifar-patch", "--out", out, "--resume") == 0
    return records(out)


def test_killed_run_resumes_to_the_same_numbers(tmp_path, data_dir, patch_run, monkeypatch, fast_forced):
    """Killed in its third epoch: stacked, of the one group; one arm at a time, of the second arm."""
    resumed, lines = killed_and_resumed(tmp_path / "patch", data_dir, monkeypatch, 3 if fast_forced else 7)
    reference, reference_lines = records(patch_run)
    assert resumed["metrics"] == reference["metrics"]
    assert without_seconds(lines) == without_seconds(reference_lines)


def test_stacked_run_resumes_exactly_and_logs_what_one_arm_at_a_time_logs(tmp_path, data_dir, patch_run,
                                                                          monkeypatch):
    fast = ("--set", "fast=on")
    straight = tmp_path / "straight"
    assert run("run", "cifar-patch", "--out", straight, "--set", f"data_dir={data_dir}", *TINY, *CPU,
               *fast) == 0
    resumed, lines = killed_and_resumed(tmp_path / "resumed", data_dir, monkeypatch, 3, *fast)
    reference, reference_lines = records(straight)
    assert resumed["metrics"] == reference["metrics"]
    assert without_seconds(lines) == without_seconds(reference_lines)
    # every arm's epochs, trained together, carry the fields and (to float rounding) the losses of
    # the run's default grouping (one arm at a time, unless LRORDER_TEST_FAST=on)
    default = {(p["method"], p["epoch"]): p for p in records(patch_run)[1]}
    assert [(p["method"], p["epoch"]) for p in lines] == logged(PATCH_ARMS, 4, True)
    for point in lines:
        twin = default[point["method"], point["epoch"]]
        assert list(point) == list(twin)
        assert point["train_loss"] == pytest.approx(twin["train_loss"], rel=1e-3)


def test_table1_subset_of_methods_and_figure1(tmp_path, data_dir):
    out = tmp_path / "table1"
    assert run("run", "cifar-table1", "--out", out, "--set", f"data_dir={data_dir}", *TINY,
               "--set", "methods=large,small", "--set", "noise_decay=iteration") == 0
    summary, lines = records(out)
    assert {"val_acc_large", "val_acc_small", "val_acc_large_last5"} <= set(summary["metrics"])
    assert "val_acc_small_noise" not in summary["metrics"] and "val_order_holds" not in summary["metrics"]
    assert "val_acc_large" not in summary["paper"] and "val_order_holds" in summary["paper"]
    full = paper_at_full_profile("cifar-table1")  # Table 1's numbers name metrics the arms write
    assert {name for name in full if "large" in name or "small" in name} == {
        "val_acc_large", "val_acc_large_last5", "val_acc_small", "val_acc_small_last5",
        "val_acc_small_noise", "val_acc_small_noise_last5"}
    assert {"val_acc_large", "val_acc_small_last5"} <= set(summary["metrics"])
    for method in ("large", "small"):  # the best epoch, as the released code keeps it
        accs = [p["val_acc"] for p in lines if p["method"] == method]
        assert summary["metrics"][f"val_acc_{method}_best"]["per_seed"] == [max(accs)]
        assert summary["metrics"][f"val_best_epoch_{method}"]["per_seed"] == [accs.index(max(accs)) + 1]
    # at 4 epochs the default anneals (30%, 60%, 75%) fall on epochs 2, 2 and 3
    assert [p["lr"] for p in lines if p["method"] == "large"] == pytest.approx([0.1, 0.004, 0.0008, 0.0008])
    assert (out / "figures" / "figure1_accuracy.png").exists()
    assert {"matched_loss", "epoch_at_matched_loss_large", "val_acc_at_matched_loss_large",
            "val_acc_at_matched_loss_small"} <= set(summary["metrics"])
    assert "val_acc_at_matched_loss_small_noise" not in summary["metrics"]
    assert (out / "figures" / "test_vs_train_loss.png").exists()


def test_diverged_method_is_a_status_not_a_traceback(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.setattr(Method, "lr", lambda self, epoch, epochs: float("nan"))
    out = tmp_path / "nan"
    assert run("run", "cifar-patch-control", "--out", out, "--set", f"data_dir={data_dir}", *TINY, *CPU,
               "--set", "methods=full_large") == 0
    summary, lines = records(out)
    assert summary["status"] == "diverged" and "epoch 1" in summary["problems"][0]
    assert summary["metrics"]["val_acc_full_large"]["mean"] is None and len(lines) == 1
    assert summary["metrics"]["val_acc_at_matched_loss_full_large"]["mean"] is None
    assert (out / "figures" / "test_vs_train_loss.png").exists()  # empty, saying it diverged


@pytest.mark.parametrize("fast", ["on", "off"])
def test_a_diverged_arm_stops_while_the_others_go_on(tmp_path, data_dir, monkeypatch, fast):
    """Stacked or one arm at a time, the log is the same here: the diverged arm's one line first."""
    original = Method.lr
    monkeypatch.setattr(Method, "lr", lambda self, epoch, epochs: float("nan") if self.lr0 == 0.1
                        else original(self, epoch, epochs))
    out = tmp_path / "nan"
    assert run("run", "cifar-patch-control", "--out", out, "--set", f"data_dir={data_dir}", *TINY,
               *CPU, "--set", "methods=full_large,full_small", "--set", f"fast={fast}") == 0
    summary, lines = records(out)
    assert summary["status"] == "diverged" and "full_large" in summary["problems"][0]
    assert summary["metrics"]["val_acc_full_large"]["mean"] is None
    assert summary["metrics"]["val_acc_full_small"]["mean"] is not None
    assert [(p["method"], p["epoch"]) for p in lines] == [
        ("full_large", 1), ("full_small", 1), ("full_small", 2), ("full_small", 3), ("full_small", 4)]
    # the matched loss is the finished arm's own lowest; the diverged arm has no reading there
    assert summary["metrics"]["matched_loss"]["mean"] == min(p["train_loss"] for p in lines[1:])
    assert summary["metrics"]["val_acc_at_matched_loss_full_large"]["mean"] is None
    assert summary["metrics"]["val_acc_at_matched_loss_full_small"]["mean"] is not None
    assert (out / "figures" / "test_vs_train_loss.png").exists()


@pytest.mark.parametrize("sets, message", [
    (["methods=large,huge"], "methods must be a comma-separated subset of large,small,small_noise"),
    (["lr_schedule=often"], "schedule 'often' is not default"),
    (["dataset=mnist"], "dataset='mnist' is not valid"),
    (["methods=large,large"], "subset of large,small,small_noise, each once (got large,large)"),
    (["lr_schedule=fixed"], "lr_schedule=fixed has no anneal"),
    (["lr_schedule=bogus", "epochs=abc", "sigma0=-1"],  # every problem of a command, at once
     "epochs='abc' is not valid: expected an integer; sigma0 must be >= 0 (got -1.0); "
     "schedule 'bogus' is not"),
])
def test_bad_settings_are_one_line(tmp_path, capsys, sets, message):
    argv = ["run", "cifar-patch", "--out", tmp_path / "x"] + [a for s in sets for a in ("--set", s)]
    assert run(*argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_missing_data_says_what_to_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(data, "SHARED_JPEG", tmp_path / "absent.npz")
    assert run("run", "cifar-patch", "--out", tmp_path / "x", "--set", f"data_dir={tmp_path}") == 2
    assert "lrorder data cifar10" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cifar_patch_anneals_where_its_lr_schedule_says(tmp_path, data_dir):
    """The noise switch and the 'before the anneal' reading follow lr_schedule (here epoch 3),
    not decay_early's milestone (epoch 2 of 4)."""
    out = tmp_path / "patch"
    assert run("run", "cifar-patch", "--out", out, "--set", f"data_dir={data_dir}", *TINY,
               "--set", "lr_schedule=3:0.04", "--set", "methods=small,small_noise") == 0
    summary, lines = records(out)
    sigma = {p["epoch"]: p["sigma"] for p in lines if p["method"] == "small_noise"}
    assert sigma[2] == pytest.approx(0.4) and sigma[3] == pytest.approx(0.4e-5)
    patch_epoch2 = next(p["patch_acc"] for p in lines if p["method"] == "small" and p["epoch"] == 2)
    assert summary["metrics"]["patch_acc_small_before_anneal"]["per_seed"] == [patch_epoch2]


@pytest.mark.parametrize("fast", ["on", "off"])
def test_a_divergence_before_a_kill_is_still_reported_after_the_resume(tmp_path, data_dir, monkeypatch, fast):
    """The problems list is part of the resume point: the first arm diverges in its first epoch,
    the run is killed in the third epoch trained (stacked: the group's third; one arm at a time:
    the second arm's second), and the resumed run still ends `diverged`, naming the arm and the
    seed."""
    original_lr, original_epoch = Method.lr, StackedTrainer.run_epoch
    monkeypatch.setattr(Method, "lr", lambda self, epoch, epochs: float("nan") if self.lr0 == 0.1
                        else original_lr(self, epoch, epochs))
    calls = {"n": 0}

    def dies(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original_epoch(self)

    monkeypatch.setattr(StackedTrainer, "run_epoch", dies)
    out = tmp_path / "nan"
    argv = ["run", "cifar-patch-control", "--out", out, "--set", f"data_dir={data_dir}", *TINY, *CPU,
            "--set", "methods=full_large,full_small", "--set", "checkpoint_every=1", "--set", f"fast={fast}"]
    assert run(*argv) == 130
    assert run("run", "cifar-patch-control", "--out", out, "--resume") == 0
    summary, _ = records(out)
    assert summary["status"] == "diverged"
    assert summary["problems"] == ["full_large seed 0: non-finite train loss in epoch 1"]
    assert summary["metrics"]["val_acc_full_small"]["mean"] is not None


@pytest.mark.parametrize("sets, evaluated, problem", [
    (["max_loss=0.5"], None, "full_large seed 0: train loss 2.3"),  # chance-level loss above the bound
    ([], {"val_loss": float("inf"), "val_acc": 10.0}, "full_large seed 0: non-finite val loss in epoch 1"),
])
def test_an_exploding_or_non_finite_loss_is_a_divergence(tmp_path, data_dir, monkeypatch, sets, evaluated,
                                                         problem):
    if evaluated is not None:
        monkeypatch.setattr(StackedTrainer, "evaluate", lambda self: [dict(evaluated)])
    out = tmp_path / "exploding"
    assert run("run", "cifar-patch-control", "--out", out, "--set", f"data_dir={data_dir}", *TINY, *CPU,
               "--set", "methods=full_large", *[a for s in sets for a in ("--set", s)]) == 0
    summary, lines = records(out)
    assert summary["status"] == "diverged" and summary["problems"][0].startswith(problem)
    assert len(lines) == 1 and lines[0]["diverged"] is True


def test_a_finite_validation_loss_spike_is_not_a_divergence(tmp_path, data_dir, monkeypatch):
    """Under a large LR the validation loss can jump for an epoch (54 measured on the quick
    control) while training goes on: only the training loss is bounded by max_loss."""
    monkeypatch.setattr(StackedTrainer, "evaluate", lambda self: [{"val_loss": 60.0, "val_acc": 10.0}])
    out = tmp_path / "spike"
    assert run("run", "cifar-patch-control", "--out", out, "--set", f"data_dir={data_dir}", *TINY, *CPU,
               "--set", "methods=full_large") == 0
    summary, lines = records(out)
    assert summary["status"] == "complete" and not summary["problems"]
    assert [line["diverged"] for line in lines] == [False] * len(lines)


def test_a_run_without_its_data_downloads_it_first(tmp_path, archive_server, cifar_from, no_shared_copies):
    cifar_from(archive_server.url, hashlib.md5(archive_server.payload).hexdigest())
    empty, out = tmp_path / "data", tmp_path / "run"
    assert run("run", "cifar-table1", "--out", out, "--data-dir", empty, *TINY, "--set", "methods=large") == 0
    assert (empty / data.CIFAR_ARCHIVE).read_bytes() == archive_server.payload
    assert records(out)[0]["status"] == "complete"


def test_offline_a_run_fails_in_seconds_and_reproduce_skips_only_that_recipe(tmp_path, capsys, monkeypatch,
                                                                               no_shared_copies):
    """The conftest points the download at a closed local port: no network."""
    empty, out = tmp_path / "data", tmp_path / "run"
    start = time.perf_counter()
    assert run("run", "cifar-table1", "--out", out, "--data-dir", empty) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "downloading it failed" in err and "lrorder data cifar10" in err
    assert not out.exists() and time.perf_counter() - start < 10
    recipes = {name: get_recipe(name) for name in ("cifar-table1", "convex-claim1")}
    monkeypatch.setattr("lrorder.cli.reproduce.all_recipes", lambda: recipes)
    assert run("reproduce", "--out", tmp_path / "all", "--data-dir", empty) == 0
    index = (tmp_path / "all" / "index.md").read_text()
    assert "## cifar-table1: skipped" in index
    assert "[convex-claim1](convex-claim1/report.md): complete" in index
    printed = capsys.readouterr().out
    assert "wall time per recipe:" in printed and "(skipped)" in printed.split("cifar-table1")[-1]


def test_precision_is_recorded_and_fp32_checks_a_bf16_run(tmp_path, data_dir):
    losses = {}
    for precision in ("bf16", "fp32"):
        out = tmp_path / precision
        assert run("run", "cifar-table1", "--out", out, "--set", f"data_dir={data_dir}", *TINY,
                   "--set", "methods=large", "--set", "epochs=1", "--set", f"precision={precision}") == 0
        assert json.loads((out / "config.json").read_text())["config"]["precision"] == precision
        losses[precision] = records(out)[1][0]["train_loss"]
    assert losses["bf16"] != losses["fp32"] and losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)


def test_reproduce_on_a_machine_without_data_downloads_it_and_runs(tmp_path, monkeypatch, archive_server,
                                                                   cifar_from, no_shared_copies):
    """The README's first command on a fresh machine with network (a local server stands in for
    the host): the data set is fetched once, then the CIFAR-10 recipes run at the quick profile."""
    cifar_from(archive_server.url, hashlib.md5(archive_server.payload).hexdigest())
    recipes = {"cifar-patch-control": get_recipe("cifar-patch-control")}
    monkeypatch.setattr("lrorder.cli.reproduce.all_recipes", lambda: recipes)
    assert run("reproduce", "--out", tmp_path / "all", "--data-dir", tmp_path / "data") == 0
    assert "[cifar-patch-control](cifar-patch-control/report.md): complete" in (
        tmp_path / "all" / "index.md").read_text()
    assert archive_server.ranges == [0]  # one download


def test_a_corrupt_data_set_leaves_no_run_directory_and_skips_only_its_recipe(tmp_path, capsys, monkeypatch,
                                                                              fake_cifar, no_shared_copies):
    (fake_cifar(tmp_path / "data") / "data_batch_2").write_bytes(b"")
    out = tmp_path / "run"
    assert run("run", "cifar-table1", "--out", out, "--data-dir", tmp_path / "data") == 2
    assert "truncated or corrupt" in capsys.readouterr().err and not out.exists()
    recipes = {name: get_recipe(name) for name in ("cifar-table1", "convex-lemma2")}
    monkeypatch.setattr("lrorder.cli.reproduce.all_recipes", lambda: recipes)
    assert run("reproduce", "--out", tmp_path / "all", "--data-dir", tmp_path / "data") == 0
    index = (tmp_path / "all" / "index.md").read_text()
    assert "## cifar-table1: skipped" in index and "truncated or corrupt" in index
    assert "[convex-lemma2](convex-lemma2/report.md): complete" in index


def arm_history(clean, patch):
    """An arm's epoch records (1-based epochs) with clean and patch-only accuracies."""
    return [{"epoch": e, "clean_acc": c, "patch_acc": p} for e, (c, p) in enumerate(zip(clean, patch), 1)]


def test_the_best_epoch_and_its_accuracy_are_read_per_set_beside_the_final_and_last5():
    """Seed 0: large peaks in epoch 2 on clean images and in epoch 3 on patch-only ones; small
    reaches its best twice and the first is kept. Seed 1: large is best at the end; small
    diverged after 2 of 6 epochs."""
    histories = [
        {"large": arm_history([30, 62, 55, 61, 58, 60], [10, 11, 90, 12, 9, 10]),
         "small": arm_history([40, 50, 50, 45, 44, 43], [99, 99, 98, 97, 96, 95])},
        {"large": arm_history([20, 30, 40, 50, 60, 70], [12, 14, 13, 11, 10, 9]),
         "small": arm_history([40, 41], [90, 91])},
    ]
    metrics = {m.name: values for m, values in
               experiment.accuracy_metrics(histories, ["large", "small"], ("clean", "patch"), 6).items()}
    assert metrics["clean_acc_large_best"] == [62, 70] and metrics["clean_best_epoch_large"] == [2, 6]
    assert metrics["patch_acc_large_best"] == [90, 14] and metrics["patch_best_epoch_large"] == [3, 2]
    assert metrics["clean_acc_large"] == [60, 70]
    assert metrics["clean_acc_large_last5"] == pytest.approx([59.2, 50.0])
    assert metrics["clean_acc_small_best"][0] == 50 and metrics["clean_best_epoch_small"][0] == 2
    assert metrics["patch_acc_small_best"][0] == 99 and metrics["patch_best_epoch_small"][0] == 1
    for name in ("clean_acc_small_best", "clean_best_epoch_small", "patch_acc_small_best",
                 "patch_best_epoch_small", "clean_acc_small", "clean_acc_small_last5"):
        assert math.isnan(metrics[name][1]), name


def test_a_run_started_on_another_device_resumes_on_the_one_asked_for(tmp_path, data_dir, patch_run,
                                                                      monkeypatch, capsys, fast_forced):
    """A run started with CUDA (config.json says so) and killed goes on on the CPU with --device cpu
    and ends as the uninterrupted CPU run; without --device, on a machine without CUDA, the resume
    is refused in one line and touches nothing. (The first part ran on the CPU and config.json is
    edited: there is no GPU here; the resume point's states are the CPU's, so the resume is exact.
    `fast` is pinned to the CPU's grouping in force, which `auto` would change with the device.)"""
    out = tmp_path / "moved"
    calls = {"n": 0}
    original = StackedTrainer.run_epoch

    def dies(self):
        calls["n"] += 1
        if calls["n"] == (3 if fast_forced else 7):
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(StackedTrainer, "run_epoch", dies)
    assert run("run", "cifar-patch", "--out", out, "--set", f"data_dir={data_dir}", *TINY, *CPU,
               "--set", "checkpoint_every=1", "--set", f"fast={'on' if fast_forced else 'off'}") == 130
    stored = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**stored, "device": "cuda"}))
    capsys.readouterr()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = (out / "metrics.jsonl").read_bytes(), (out / "state.pt").read_bytes()
    assert run("run", "cifar-patch", "--out", out, "--resume") == 2
    err = capsys.readouterr().err
    assert "no CUDA device is visible: use --device cpu" in err and err.count("\n") == 1
    assert ((out / "metrics.jsonl").read_bytes(), (out / "state.pt").read_bytes()) == before
    assert run("run", "cifar-patch", "--out", out, "--resume", *CPU) == 0
    resumed, lines = records(out)
    reference, reference_lines = records(patch_run)
    assert resumed["metrics"] == reference["metrics"]
    assert without_seconds(lines) == without_seconds(reference_lines)
    assert resumed["devices"] == ["cuda", "cpu"] and reference["devices"] == ["cpu"]
    assert json.loads((out / "config.json").read_text())["device"] == "cuda"  # where it started
    assert "devices cuda -> cpu (resumed)" in (out / "report.md").read_text()
    assert run("run", "cifar-patch", "--out", out, "--resume") == 0  # finished: only re-rendered


class UnitsOnly:
    """A run context that records the units of work it is given and runs none of them."""

    seeds = [0]

    def __init__(self, started_on, device):
        self.started_on, self.device = started_on, device

    def each(self, units, work):
        self.units = list(units)
        return {name: {} for name in units}


@pytest.mark.parametrize("started_on, device, units", [
    ("cuda", "cpu", ["seed 0 large+small+small_noise"]),  # started stacked: goes on stacked
    ("cpu", "cuda", ["seed 0 large", "seed 0 small", "seed 0 small_noise"]),
])
def test_a_resumed_run_keeps_the_units_of_the_device_it_started_on(started_on, device, units):
    """`fast=auto` stacks the arms with CUDA only: a run resumed on another device must still find
    the units (and their resume points) it started with."""
    ctx = UnitsOnly(started_on, device)
    arms = [experiment.Arm(name, Method(name, 0.1)) for name in ("large", "small", "small_noise")]
    experiment.run_arms(ctx, PatchConfig(), arms, patched=True)
    assert ctx.units == units


def test_the_control_has_table1s_200_epoch_schedule_as_a_profile_and_its_report_names_the_schedule(
        tmp_path, data_dir):
    recipe = get_recipe("cifar-patch-control")
    full, paper200 = (resolve(ControlConfig, profile_values(recipe, p)) for p in ("full", "paper200"))
    assert (paper200.epochs, paper200.lr_schedule) == (200, "default")
    assert {k: v for k, v in vars(paper200).items() if k not in ("epochs", "lr_schedule")} == {
        k: v for k, v in vars(full).items() if k not in ("epochs", "lr_schedule")}
    assert "paper200" in recipe.cost
    # Table 1's anneals: x0.2 at epochs 60, 120 and 150 of 200
    line = control_schedule(vars(paper200))
    assert line.startswith("Schedule run: 200 epochs, large LR 0.1 (default: x0.2 at epoch 60, "
                           "x0.2 at epoch 120, x0.2 at epoch 150), small LR 0.004 fixed.")
    assert "likely come from 200-epoch runs" in line
    assert control_schedule(vars(full)).startswith(
        "Schedule run: 60 epochs, large LR 0.1 (decay_early: x0.04 at epoch 30)")
    # the section's numbers are judged at both paper-sized schedules, never on a miniature
    assert set(recipe.paper(paper200)) == set(recipe.paper(full)) == {
        f"val_acc_{arm}{reading}" for arm in ("subset_small", "subset_large", "full_small", "full_large")
        for reading in ("", "_last5")}
    out = tmp_path / "control"
    assert run("run", "cifar-patch-control", "--out", out, "--set", f"data_dir={data_dir}",
               *TINY, "--profile", "paper200", "--set", "epochs=3",
               "--set", "methods=full_large", *CPU) == 0
    assert recipe.paper(resolve(ControlConfig, json.loads((out / "config.json").read_text())["config"])) == {}
    assert ("Schedule run: 3 epochs, large LR 0.1 (default: x0.2 at epoch 2, x0.2 at epoch 2, "
            "x0.2 at epoch 2), small LR 0.004 fixed.") in (out / "report.md").read_text()
