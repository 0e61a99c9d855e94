"""Figures as a reader sees them: drawn from a run's records alone, the expected marks and words on
their axes, readable ticks, and a diverged run saying so in every figure instead of leaving empty
axes. Runs are hand-made run directories (or tiny real convex runs); the figures are caught as
`figures.save` writes them and read back."""

import dataclasses
import json
import math

import numpy as np
import pytest
from matplotlib.text import Text

from lrorder.convex.config import Claim1Config, Lemma2Config
from lrorder.core import figures, rundir
from lrorder.core.metrics import Metric, aggregate, sample_std
from lrorder.core.report import render
from lrorder.core.rundir import Records
from lrorder.theory import plots as theory_plots
from lrorder.theory.config import ScalingConfig, TheoryConfig
from lrorder.vision.config import ControlConfig, PatchConfig, Table1Config

PROBLEM = "ls seed 0: non-finite train loss at iteration 25"


@pytest.fixture
def drawn(monkeypatch):
    """{file name: Figure} of every figure saved while the test runs (still written to disk)."""
    saved = {}
    save = figures.save

    def catch(fig, path):
        save(fig, path)
        saved[path.name] = fig

    monkeypatch.setattr(figures, "save", catch)
    return saved


def words(fig) -> list[str]:
    """Every text of `fig` (titles, labels, ticks, legends, notes), line breaks read as spaces."""
    return [" ".join(t.get_text().split()) for t in fig.findobj(Text) if t.get_text()]


def make_run(path, recipe, config, *, points=(), metrics=None, seeds=(0,), status="diverged",
             problems=(PROBLEM,)):
    """A run directory written by hand with the keys `Records` requires."""
    rundir.write_json(path / rundir.CONFIG, {"recipe": recipe, "profile": "quick", "seeds": list(seeds),
                                             "device": "cpu", "config": dataclasses.asdict(config)})
    rundir.write_json(path / rundir.SUMMARY, {
        "status": status, "problems": list(problems), "seeds": list(seeds), "elapsed_s": 1.0,
        "metrics": {m.name: aggregate(m, values) for m, values in (metrics or {}).items()}})
    rundir.write_text(path / rundir.METRICS, "".join(json.dumps(p) + "\n" for p in points))
    return path


def unmeasured(*names: str) -> dict[Metric, list[float]]:
    return {Metric(name): [math.nan] for name in names}


DIVERGED = {  # recipe: (config, metrics its report reads, figures)
    "convex-claim1": (Claim1Config(), unmeasured(
        "p_both_seen", "gf_test_loss_over_eps", "annealed_test_loss_over_eps", "test_loss_ratio"),
        {"trajectories.png", "test_vs_train.png", "ratio_distribution.png"}),
    "convex-lemma2": (Lemma2Config(), unmeasured(
        "gf_bound_holds", "annealed_bound_holds", "gf_margin_min", "annealed_margin_min",
        "gf_over_annealed_median"), {"bounds.png", "bound_vs_steps.png"}),
    "theory-order": (TheoryConfig(), {}, {"learning_order.png", "mechanism.png"}),
    "cifar-table1": (Table1Config(), {}, {"figure1_accuracy.png", "test_vs_train_loss.png"}),
    "cifar-patch": (PatchConfig(), {Metric("patch_acc", m, "before_anneal"): [math.nan]
                                    for m in ("large", "small", "small_noise")},
                    {"figure3_patch.png", "test_vs_train_loss.png"}),
    "cifar-patch-control": (ControlConfig(), {}, {"test_vs_train_loss.png"}),
}


@pytest.mark.parametrize("recipe", DIVERGED)
def test_a_diverged_run_without_records_says_so_in_every_figure(tmp_path, drawn, recipe):
    config, metrics, names = DIVERGED[recipe]
    render(make_run(tmp_path / recipe, recipe, config, metrics=metrics))
    assert {p.name for p in (tmp_path / recipe / "figures").glob("*.png")} == names
    assert set(drawn) == names
    for fig in drawn.values():
        assert fig.get_suptitle().replace("\n", " ") == f"diverged: {PROBLEM}"
        for ax in fig.axes:
            if ax.axison:  # every drawing axes is empty: the note stands in its middle
                assert f"diverged: {PROBLEM}" in [" ".join(t.get_text().split()) for t in ax.texts]


def test_a_diverged_theory_run_draws_the_records_it_has_and_the_note(tmp_path, drawn):
    """Two seeds logged iterations 0-20 before the divergence: the lines end at 20 on an axis of the
    whole run, the band is over the two seeds, and the note names the first two problems and
    counts the rest."""
    points = [{"seed": seed, "method": method, "step": step, "w_on_p_err": 0.5 - 0.01 * step + 0.1 * seed,
               "v_on_q_err": 0.5, "train_loss": 0.7}
              for seed in (0, 1) for method in ("ls", "s", "s_noise") for step in (0, 10, 20)]
    problems = [PROBLEM, "s seed 1: non-finite train loss at iteration 25", "s_noise seed 0: x"]
    run = make_run(tmp_path / "to", "theory-order", TheoryConfig(), points=points, seeds=(0, 1),
                   problems=problems)
    render(run)
    fig = drawn["learning_order.png"]
    assert fig.get_suptitle().replace("\n", " ") == f"diverged: {'; '.join(problems[:2])}; ... (+1 more)"
    ls = fig.axes[0]
    p_line = next(line for line in ls.lines if line.get_label().startswith("P part"))
    assert list(p_line.get_xdata()) == [0, 10, 20]
    assert ls.get_xlim()[1] >= TheoryConfig().steps
    assert np.allclose(p_line.get_ydata(), [0.55, 0.45, 0.35])
    assert not ls.texts  # records reached the axes: no note in the middle
    assert "band: ± 1 std over 2 seeds" in words(fig)


def test_learning_order_keeps_the_whole_band_in_view_and_explains_it(tmp_path, drawn):
    rng = np.random.default_rng(0)
    errors = {seed: rng.uniform(0.0, 1.0, size=4) for seed in range(3)}  # bands past 0 and 0.6
    points = [{"seed": seed, "method": method, "step": 100 * i, "w_on_p_err": float(errors[seed][i]),
               "v_on_q_err": 0.2}
              for seed in range(3) for method in ("ls", "s") for i in range(4)]
    run = make_run(tmp_path / "to", "theory-order", dataclasses.replace(TheoryConfig(), methods=("ls", "s")),
                   points=points, seeds=(0, 1, 2), status="complete", problems=())
    theory_plots.learning_order(Records(run), ["ls", "s"], tmp_path / "learning_order.png")
    fig = drawn["learning_order.png"]
    values = np.array([errors[s] for s in range(3)])
    low, high = values.mean(0) - sample_std(values, axis=0), values.mean(0) + sample_std(values, axis=0)
    for ax in fig.axes[:2]:
        bottom, top = ax.get_ylim()
        assert bottom <= low.min() and top >= high.max()
    legend = fig.axes[1].get_legend()
    assert legend.get_title().get_text() == "band: ± 1 std over 3 seeds"
    assert min(t.get_fontsize() for t in legend.get_texts()) >= 9
    assert not fig.get_suptitle()  # a complete run carries no note


def scaling_run(path, ls_errors, s_errors, status="complete", problems=()):
    """theory-scaling records: per kappa [per seed] final errors of L-S and S (None: no metric)."""
    kappas = (0.3, 0.45, 0.7)
    metrics = {}
    for kappa, ls, s in zip(kappas, ls_errors, s_errors):
        for method, values in (("ls", ls), ("s", s)):
            if values is not None:
                for quantity in ("test_err", "p_only_err"):
                    metrics[Metric(quantity, method, kappa=kappa)] = values
    config = ScalingConfig(kappas=kappas)
    return make_run(path, "theory-scaling", config, metrics=metrics, seeds=(0, 1, 2), status=status,
                    problems=problems)


def test_ratio_vs_kappa_reads_as_numbers_and_words(tmp_path, drawn):
    run = scaling_run(tmp_path / "ts", ls_errors=([0.1, 0.2, 0.0], [0.1, 0.1, 0.1], [0.2, 0.2, 0.2]),
                      s_errors=([0.4, 0.4, 0.3], [0.2, 0.3, 0.1], [0.2, 0.2, 0.4]))
    theory_plots.ratio_vs_kappa(Records(run), tmp_path / "ratio_vs_kappa.png")
    fig = drawn["ratio_vs_kappa.png"]
    assert (tmp_path / "ratio_vs_kappa.png").stat().st_size > 10_000
    whole, p_only = fig.axes
    # plain numbers at the kappas measured; seed 2's L-S error is 0 at kappa 0.3: no ratio, said so
    assert [t.get_text() for t in whole.get_xticklabels()] == ["0.3\nno ratio:\n1 (error 0)", "0.45", "0.7"]
    bottom, top = whole.get_ylim()
    assert [t.get_text() for t in whole.get_yticklabels() if bottom <= t.get_position()[1] <= top] == [
        "1", "1.5", "2", "3"]
    assert whole.get_title() == "All test examples"
    assert p_only.get_title() == "Test examples with the P pattern only"
    seeds = [line for line in whole.lines if line.get_marker() == "o" and line.get_color() == "0.45"]
    assert np.allclose(np.sort(np.concatenate([line.get_ydata() for line in seeds])),
                       np.sort([4, 2, 2, 3, 1, 1, 1, 2]))  # 8 ratios
    means = next(line for line in whole.lines if line.get_label() == "S / L-S of the seed means")
    assert np.allclose(means.get_ydata(), [1.1 / 0.3, 2.0, 4 / 3])
    legend = p_only.get_legend()
    assert legend.get_title().get_text() == "3 values of κ × 3 seeds"
    fig.canvas.draw()  # the legend is laid out beside the data, not over it
    assert legend.get_window_extent().x0 >= p_only.get_window_extent().x1


def test_ratio_vs_kappa_of_a_run_diverged_at_one_kappa(tmp_path, drawn):
    problem = "kappa 0.7: ls seed 0: non-finite train loss at iteration 25"
    run = scaling_run(tmp_path / "ts", ls_errors=([0.1] * 3, [0.1] * 3, None),
                      s_errors=([0.2] * 3, [0.3] * 3, None), status="diverged", problems=(problem,))
    theory_plots.ratio_vs_kappa(Records(run), tmp_path / "ratio_vs_kappa.png")
    fig = drawn["ratio_vs_kappa.png"]
    assert fig.get_suptitle().replace("\n", " ") == f"diverged: {problem}"
    assert fig.axes[0].get_xticklabels()[2].get_text() == "0.7\nno ratio:\n3 (not recorded)"
    means = next(line for line in fig.axes[0].lines if line.get_label() == "S / L-S of the seed means")
    assert np.allclose(means.get_xdata(), [0.3, 0.45]) and np.allclose(means.get_ydata(), [2, 3])


def test_claim1_trajectories_show_where_each_run_stops(tmp_path, cli, drawn):
    out = tmp_path / "c1"
    assert cli("run", "convex-claim1", "--seeds", 1, "--out", out, "--set", "draws=2000") == 0
    fig = drawn["trajectories.png"]
    whole, zoom, _ = fig.axes
    text = words(fig)
    assert "A stops: test loss 1.5 eps" in text and "B stops: test loss 0.75 eps" in text  # Claim 1
    # K = 20 large steps: beta1 bounces between 0 and 2000 (the sharp direction), three distinct moves
    assert len([t for t in whole.texts if t.arrow_patch is not None and not t.get_text()]) == 3
    assert "after steps 1, 3, ..., 19 (10x)" in text and "after steps 2, 4, ..., 20 (10x)" in text
    assert "B: 20 large steps, η = 1/γmax (arrows)" in text
    stops = [line.get_xydata()[0] for line in zoom.lines if line.get_marker() in ("o", "s")]
    assert len(stops) == 2
    (left, right), (bottom, top) = zoom.get_xlim(), zoom.get_ylim()
    for x, y in stops:  # both stops in view, on the train loss = eps ellipse (gamma = 2/3, 1/3)
        assert left < x < right and bottom < y < top
        assert (2 / 3) * x**2 + (1 / 3) * y**2 == pytest.approx(0.1)
    ellipse = next(line for line in zoom.lines if line.get_linestyle() == "--")
    assert np.ptp(ellipse.get_ydata()) < top - bottom  # the ellipse fits the panel


def test_lemma2_bounds_show_the_data_range_and_the_share_that_holds(tmp_path, cli, drawn):
    out = tmp_path / "l2"
    assert cli("run", "convex-lemma2", "--seeds", 1, "--out", out, "--set", "instances=2000") == 0
    fig = drawn["bounds.png"]
    arrays = Records(out).array("instances")
    flow, annealed = fig.axes
    assert "holds on 100.0% of 2,000 instances (seed 0)" in flow.get_title()
    assert "holds on 100.0% of 2,000 instances (seed 0)" in annealed.get_title()
    edge = 10 * arrays["annealed_test"].max()  # a looser bound is drawn on the right edge, counted
    loose = int((arrays["annealed_upper"] > edge).sum())
    assert loose > 0 and f"bound > {edge:.3g} eps ({loose:,}; on the edge)" in words(fig)
    assert annealed.get_xlim()[1] <= 1.5 * edge  # not the bound's 18 decades
    assert flow.get_xlim()[1] <= 1.5 * arrays["gf_lower"].max()


def test_a_diverged_vision_run_draws_the_epochs_before_it(tmp_path, drawn):
    """The small-LR arm diverged in epoch 2 (its record there carries no accuracies): the large
    arm's two epochs and the small arm's first are drawn, under the note."""
    problem = "small seed 0: non-finite train loss in epoch 2"
    points = [{"seed": 0, "method": "large", "epoch": 1, "train_acc": 30.0, "val_acc": 28.0},
              {"seed": 0, "method": "large", "epoch": 2, "train_acc": 40.0, "val_acc": 35.0},
              {"seed": 0, "method": "small", "epoch": 1, "train_acc": 20.0, "val_acc": 19.0},
              {"seed": 0, "method": "small", "epoch": 2, "train_loss": None, "diverged": True}]
    config = dataclasses.replace(Table1Config(), epochs=4, methods=("large", "small"))
    render(make_run(tmp_path / "t1", "cifar-table1", config, points=points, problems=(problem,)))
    fig = drawn["figure1_accuracy.png"]
    assert fig.get_suptitle() == f"diverged: {problem}"
    curves = {line.get_label(): line.get_ydata() for line in fig.axes[0].lines}
    assert np.allclose(curves["large LR + anneal: val"][:2], [28, 35])
    assert list(curves["small LR: val"]) == [19]
