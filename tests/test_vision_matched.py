"""The CIFAR recipes' reading at matched train loss, on hand-made histories."""

import dataclasses
import json
import math

import numpy as np
import pytest

from lrorder.core import figures, rundir
from lrorder.core.metrics import Metric, aggregate
from lrorder.core.rundir import Records
from lrorder.vision import plots
from lrorder.vision.config import Table1Config
from lrorder.vision.experiment import matched_loss_metrics


def history(losses, clean, patch=None):
    """An arm's epoch records: train loss and accuracies per epoch (1-based)."""
    patch = patch or [0.0] * len(losses)
    return [{"epoch": e, "train_loss": loss, "clean_acc": c, "patch_acc": p}
            for e, (loss, c, p) in enumerate(zip(losses, clean, patch), start=1)]


def named(metrics):
    return {metric.name: values for metric, values in metrics.items()}


# Lowest losses: seed 0 a 0.5, b 0.7; seed 1 a 0.4, b 0.6 (b's loss goes up again in epoch 3).
# The matched loss is the largest of them, 0.7: seed 0 a first gets there in epoch 2 (0.6),
# b in epoch 3 (0.7, exactly); seed 1 a in epoch 2 (0.65), b in epoch 2 (0.6).
TWO_SEEDS = [
    {"a": history([2.0, 0.6, 0.5], [10, 20, 30], [50, 60, 70]),
     "b": history([1.5, 0.8, 0.7], [15, 25, 35], [55, 65, 75])},
    {"a": history([1.8, 0.65, 0.4], [11, 21, 31], [51, 61, 71]),
     "b": history([1.2, 0.6, 0.62], [16, 26, 36], [56, 66, 76])},
]


def test_two_arms_two_seeds_are_read_where_every_run_has_reached_the_matched_loss():
    metrics = named(matched_loss_metrics(TWO_SEEDS, ["a", "b"], ("clean", "patch"), epochs=3))
    assert metrics == {
        "matched_loss": [0.7, 0.7],
        "epoch_at_matched_loss_a": [2, 2], "epoch_at_matched_loss_b": [3, 2],
        "clean_acc_at_matched_loss_a": [20, 21], "clean_acc_at_matched_loss_b": [35, 26],
        "patch_acc_at_matched_loss_a": [60, 61], "patch_acc_at_matched_loss_b": [75, 66],
    }


def test_a_diverged_arm_is_nan_and_left_out_of_the_matched_loss():
    """Seed 1's b stopped after 2 epochs at loss 0.9: counted, it would raise the matched loss to
    0.9; left out, the level is 0.7 from the runs that finished (seed 0's b)."""
    diverged = [TWO_SEEDS[0], {"a": TWO_SEEDS[1]["a"], "b": history([1.2, 0.9], [16, 26])}]
    metrics = named(matched_loss_metrics(diverged, ["a", "b"], ("clean",), epochs=3))
    assert metrics["matched_loss"] == [0.7, 0.7]
    assert metrics["clean_acc_at_matched_loss_a"] == [20, 21]
    for name, seed0 in (("clean_acc_at_matched_loss_b", 35), ("epoch_at_matched_loss_b", 3)):
        assert metrics[name][0] == seed0 and math.isnan(metrics[name][1])


def test_one_arm_one_seed_is_read_at_its_own_lowest_loss_and_all_diverged_is_nan():
    one = [{"a": history([2.0, 0.5, 0.8], [10, 40, 30])}]
    assert named(matched_loss_metrics(one, ["a"], ("clean",), epochs=3)) == {
        "matched_loss": [0.5], "epoch_at_matched_loss_a": [2], "clean_acc_at_matched_loss_a": [40]}
    none = named(matched_loss_metrics(one, ["a"], ("clean",), epochs=4))  # stopped before epoch 4
    assert set(none) == {"matched_loss", "epoch_at_matched_loss_a", "clean_acc_at_matched_loss_a"}
    assert all(math.isnan(v) for values in none.values() for v in values)


@pytest.mark.parametrize("evals, names", [(("val",), {"val_acc_at_matched_loss_x"}),
                                          (("clean", "mixed", "patch"), {"clean_acc_at_matched_loss_x",
                                                                         "mixed_acc_at_matched_loss_x",
                                                                         "patch_acc_at_matched_loss_x"})])
def test_one_accuracy_per_validation_set(evals, names):
    records = [{"epoch": 1, "train_loss": 1.0, **{f"{name}_acc": 50.0 for name in evals}}]
    metrics = named(matched_loss_metrics([{"x": records}], ["x"], evals, epochs=1))
    assert set(metrics) == {"matched_loss", "epoch_at_matched_loss_x", *names}


def test_the_figure_reads_each_seed_at_the_first_epoch_below_each_level(tmp_path, monkeypatch):
    """One seed: `large` logs losses 2, 1, 0.5; `small` diverges in epoch 1 (its line is not
    drawn). The curve is 10% down to loss 2, 20% down to 1, then 30%; the matched loss from
    summary.json is marked."""
    points = [{"seed": 0, "method": "large", "epoch": e, "train_loss": loss, "val_acc": acc,
               "diverged": False} for e, loss, acc in ((1, 2.0, 10.0), (2, 1.0, 20.0), (3, 0.5, 30.0))]
    points.append({"seed": 0, "method": "small", "epoch": 1, "train_loss": float("nan"), "diverged": True})
    config = dataclasses.replace(Table1Config(), epochs=3)
    rundir.write_json(tmp_path / rundir.CONFIG, {"recipe": "cifar-table1", "profile": "quick", "seeds": [0],
                                                 "device": "cpu", "config": dataclasses.asdict(config)})
    rundir.write_json(tmp_path / rundir.SUMMARY, {
        "status": "diverged", "problems": ["small seed 0: non-finite train loss in epoch 1"], "seeds": [0],
        "elapsed_s": 1.0, "metrics": {"matched_loss": aggregate(Metric("matched_loss"), [0.5])}})
    rundir.write_text(tmp_path / rundir.METRICS, "".join(json.dumps(p) + "\n" for p in points))
    saved = {}
    monkeypatch.setattr(figures, "save", lambda fig, path: saved.setdefault(path.name, fig))
    plots.test_vs_train_loss(Records(tmp_path), tmp_path / "m.png", ("val",), ("large", "small"))
    ax, = saved["m.png"].axes
    curve, marker = ax.lines
    levels = np.geomspace(2.0, 0.5, 60)
    assert np.allclose(curve.get_xdata(), levels)
    assert np.array_equal(curve.get_ydata(), np.where(levels >= 2.0, 10, np.where(levels >= 1.0, 20, 30)))
    assert curve.get_label() == "large LR + anneal" and list(marker.get_xdata()) == [0.5, 0.5]
    assert ax.xaxis_inverted() and ax.get_xscale() == "log"
    assert "diverged" in saved["m.png"].get_suptitle()
