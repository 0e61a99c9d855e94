"""The CIFAR recipes end to end through the CLI, on a tiny fake CIFAR-10 in the real format."""

import json

import pytest

from lrorder.cli import main
from lrorder.core.config import resolve
from lrorder.core.recipe import get_recipe, profile_values
from lrorder.vision import data, experiment
from lrorder.vision.stacked import StackedTrainer
from lrorder.vision.trainer import Method, Trainer
from test_vision_data import write_fake_cifar

# the paper's settings (full profile) on a tiny network, data set and run
TINY = ["--profile", "full", "--set", "depth=10", "--set", "widen=1", "--set", "train_size=200",
        "--set", "test_size=100", "--set", "epochs=4"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_fake_cifar(root)
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


def records(out):
    summary = json.loads((out / "summary.json").read_text())
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return summary, lines


@pytest.fixture(scope="module")
def patch_run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("runs") / "patch"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(experiment, "PATCH_ONLY_SIZE", 100)
        assert run("run", "cifar-patch", "--out", out, "--set", f"data_dir={data_dir}", *TINY) == 0
    return out


def test_cifar_patch_writes_table2_metrics_and_figure3(patch_run):
    summary, lines = records(patch_run)
    assert summary["status"] == "complete"
    for method in ("large", "small", "small_noise"):
        for kind in ("clean", "mixed", "patch"):
            assert f"{kind}_acc_{method}" in summary["metrics"]
            assert f"{kind}_acc_{method}_last5" in summary["metrics"]
        assert f"patch_acc_{method}_before_anneal" in summary["metrics"]
    assert "clean_acc_small" not in summary["paper"]  # a miniature is not judged on Table 2's numbers
    assert summary["paper"]["clean_order_holds"] == 1.0
    full = paper_at_full_profile("cifar-patch")
    assert full["clean_acc_small"].value == 69.89 and full["mixed_acc_large_last5"].value == 95.35
    assert [(p["method"], p["epoch"]) for p in lines] == [
        (m, e) for m in ("large", "small", "small_noise") for e in range(1, 5)]
    # the anneal is at half of the run: lr 0.1 -> 0.004, sigma 0.4 -> 4e-6
    large = [p for p in lines if p["method"] == "large"]
    noisy = [p for p in lines if p["method"] == "small_noise"]
    assert [p["lr"] for p in large] == pytest.approx([0.1, 0.004, 0.004, 0.004])
    assert [p["sigma"] for p in noisy] == pytest.approx([0.4, 4e-6, 4e-6, 4e-6])
    assert (patch_run / "figures" / "figure3_patch.png").stat().st_size > 10_000
    assert "Patch-only accuracy in the epoch before the anneal" in (patch_run / "report.md").read_text()


def without_seconds(lines):
    return [{k: v for k, v in p.items() if not k.endswith("seconds")} for p in lines]


def killed_and_resumed(out, data_dir, monkeypatch, trainer, call, *sets):
    """Run cifar-patch, interrupted in the `call`-th epoch of `trainer`, then resume it."""
    calls = {"n": 0}
    original = trainer.run_epoch

    def dies(self):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(trainer, "run_epoch", dies)
    argv = ["run", "cifar-patch", "--out", out, "--set", f"data_dir={data_dir}", *TINY,
            "--set", "checkpoint_every=1", *sets]
    assert run(*argv) == 130
    assert run("run", "cifar-patch", "--out", out, "--resume") == 0
    return records(out)


def test_killed_run_resumes_to_the_same_numbers(tmp_path, data_dir, patch_run, monkeypatch):
    resumed, lines = killed_and_resumed(tmp_path / "patch", data_dir, monkeypatch, Trainer, 7)
    reference, reference_lines = records(patch_run)
    assert resumed["metrics"] == reference["metrics"]
    assert without_seconds(lines) == without_seconds(reference_lines)


def test_fast_path_run_resumes_exactly_and_logs_what_the_plain_path_logs(tmp_path, data_dir, patch_run,
                                                                         monkeypatch):
    fast = ("--set", "fast=on")
    straight = tmp_path / "straight"
    assert run("run", "cifar-patch", "--out", straight, "--set", f"data_dir={data_dir}", *TINY, *fast) == 0
    resumed, lines = killed_and_resumed(tmp_path / "resumed", data_dir, monkeypatch, StackedTrainer, 3,
                                        *fast)
    reference, reference_lines = records(straight)
    assert resumed["metrics"] == reference["metrics"]
    assert without_seconds(lines) == without_seconds(reference_lines)
    # every arm's epochs, trained together, carry the plain path's fields and (to float rounding) losses
    plain = {(p["method"], p["epoch"]): p for p in records(patch_run)[1]}
    assert [(p["method"], p["epoch"]) for p in lines] == [
        (m, e) for e in range(1, 5) for m in ("large", "small", "small_noise")]
    for point in lines:
        twin = plain[point["method"], point["epoch"]]
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
    full = paper_at_full_profile("cifar-table1")
    assert [full[f"val_acc_{m}"].value for m in ("large", "small_noise", "small")] == [90.41, 89.65, 84.93]
    # at 4 epochs the default anneals (30%, 60%, 75%) fall on epochs 2, 2 and 3
    assert [p["lr"] for p in lines if p["method"] == "large"] == pytest.approx([0.1, 0.004, 0.0008, 0.0008])
    assert (out / "figures" / "figure1_accuracy.png").exists()


def test_diverged_method_is_a_status_not_a_traceback(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.setattr(Trainer, "lr", lambda self, epoch: float("nan"))
    out = tmp_path / "nan"
    assert run("run", "cifar-patch-control", "--out", out, "--set", f"data_dir={data_dir}", *TINY,
               "--set", "methods=full_large") == 0
    summary, lines = records(out)
    assert summary["status"] == "diverged" and "epoch 1" in summary["problems"][0]
    assert summary["metrics"]["val_acc_full_large"]["mean"] is None and len(lines) == 1


def test_a_diverged_arm_of_a_stacked_group_stops_while_the_others_go_on(tmp_path, data_dir, monkeypatch):
    original = Method.lr
    monkeypatch.setattr(Method, "lr", lambda self, epoch, epochs: float("nan") if self.lr0 == 0.1
                        else original(self, epoch, epochs))
    out = tmp_path / "nan"
    assert run("run", "cifar-patch-control", "--out", out, "--set", f"data_dir={data_dir}", *TINY,
               "--set", "methods=full_large,full_small", "--set", "fast=on") == 0
    summary, lines = records(out)
    assert summary["status"] == "diverged" and "full_large" in summary["problems"][0]
    assert summary["metrics"]["val_acc_full_large"]["mean"] is None
    assert summary["metrics"]["val_acc_full_small"]["mean"] is not None
    assert [(p["method"], p["epoch"]) for p in lines] == [
        ("full_large", 1), ("full_small", 1), ("full_small", 2), ("full_small", 3), ("full_small", 4)]


@pytest.mark.parametrize("sets, message", [
    (["methods=large,huge"], "methods must be a comma-separated subset of large,small,small_noise"),
    (["lr_schedule=often"], "schedule 'often' is not default"),
    (["dataset=mnist"], "dataset='mnist' is not valid"),
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
