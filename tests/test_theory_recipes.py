"""The theory recipes end to end through the CLI, at a toy size: the run-directory contract,
the metric names, figures from records, and an exact resume after a kill."""

import json
import math

import pytest
import torch

from lrorder.cli import main
from lrorder.core.metrics import Metric
from lrorder.core.rundir import Records
from lrorder.theory import experiment, recipes
from lrorder.theory.config import TheoryConfig

TOY = ["--set", "d=16", "--set", "n_train=120", "--set", "m_w=8", "--set", "m_v=40", "--set", "steps=60",
       "--set", "anneal_at=20", "--set", "probe_every=10", "--set", "n_test=200", "--set", "eta2=0.05"]


def run(*argv):
    return main([str(a) for a in argv])


def summary_of(out):
    return json.loads((out / "summary.json").read_text())


def test_theory_order_writes_every_metric_per_method_and_seed(tmp_path):
    out = tmp_path / "order"
    assert run("run", "theory-order", "--seeds", 3, "--out", out, *TOY) == 0
    metrics = summary_of(out)["metrics"]
    for method in ("ls", "s", "s_noise"):
        for name in ("test_err", "p_only_err", "q_only_err", "both_err", "p_learned_iter", "q_learned_iter"):
            assert len(metrics[f"{name}_{method}"]["per_seed"]) == 3
    for name in ("anneal_iter_ls", "v_on_q_err_at_anneal_ls", "w_on_p_err_at_anneal_ls",
                 "v_on_q_err_before_anneal_ls", "anneal_iter_s_noise", "ls_p_before_q", "ls_q_after_anneal",
                 "s_q_before_p"):
        assert name in metrics
    assert "anneal_iter_s" not in metrics and "v_on_q_err_before_anneal_s" not in metrics
    assert metrics["anneal_iter_ls"]["per_seed"] == [20.0, 20.0, 20.0]  # the loss rule is out of reach here
    assert {p.name for p in (out / "figures").iterdir()} == {
        "learning_order.png", "final_errors.png", "mechanism.png", "test_vs_train_loss.png"}
    points = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for seed in range(3):
        for method in ("ls", "s", "s_noise"):  # every regular probe, then those where the loss fell 3%
            steps = [p["step"] for p in points if (p["seed"], p["method"]) == (seed, method)]
            assert steps == sorted(set(steps)) and set(range(0, 61, 10)) <= set(steps)
    assert any(p["step"] % 10 for p in points if p["method"] == "ls")  # the large LR moves the loss fast
    assert {"seed", "method", "step", "v_on_q_err", "w_on_p_err", "lemma42", "w_signal_from_q_examples",
            "w_signal_from_p_only", "w_margin_p_only", "w_alignment"} <= set(points[0])
    assert metrics["matched_loss"]["mean"] == pytest.approx(max(
        min(p["train_loss"] for p in points if (p["seed"], p["method"]) == run) for run in
        {(p["seed"], p["method"]) for p in points}))


def test_theory_order_resumes_exactly_after_a_kill(tmp_path, monkeypatch, capsys):
    out, whole = tmp_path / "killed", tmp_path / "whole"
    original = experiment.Simulation.run

    def killed_at_step_35(self, progress, on_probe, on_checkpoint, on_step):
        def step():
            on_step()
            if progress.step == 35:
                raise KeyboardInterrupt
        return original(self, progress, on_probe, on_checkpoint, step)

    monkeypatch.setattr(experiment.Simulation, "run", killed_at_step_35)
    assert run("run", "theory-order", "--seeds", 2, "--out", out, *TOY) == 130
    monkeypatch.setattr(experiment.Simulation, "run", original)
    assert run("run", "theory-order", "--out", out, "--resume") == 0
    assert run("run", "theory-order", "--seeds", 2, "--out", whole, *TOY) == 0
    resumed, uninterrupted = summary_of(out)["metrics"], summary_of(whole)["metrics"]
    for name in ("test_err_ls", "p_only_err_s", "v_on_q_err_at_anneal_ls", "test_err_s_noise"):
        assert resumed[name]["per_seed"] == uninterrupted[name]["per_seed"]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert lines == (whole / "metrics.jsonl").read_text().splitlines()


@pytest.mark.parametrize("argv, message", [
    (["--set", "methods=ls,sgd"], "unknown methods ['sgd']"),
    (["--set", "p0=0.7", "--set", "q0=0.5"], "p0 + q0 must be <= 1"),
    (["--set", "structure=cnn"], "structure='cnn' is not valid"),
])
def test_bad_theory_config_is_one_line(tmp_path, capsys, argv, message):
    assert run("run", "theory-order", "--out", tmp_path / "x", *argv) == 2
    assert message in capsys.readouterr().err


def test_theory_scaling_runs_each_kappa(tmp_path):
    out = tmp_path / "scaling"
    assert run("run", "theory-scaling", "--seeds", 2, "--out", out, *TOY, "--set", "n_train=none",
               "--set", "kappas=0.5,0.8") == 0
    metrics = summary_of(out)["metrics"]
    assert {"test_err_ls_kappa0.5", "test_err_s_kappa0.8", "p_only_err_ls_kappa0.8"} <= set(metrics)
    assert metrics["test_err_ls_kappa0.5"]["kappa"] == 0.5  # the identity is stored, not only the name
    assert (out / "figures" / "ratio_vs_kappa.png").exists()
    points = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {p["kappa"] for p in points} == {0.5, 0.8}
    ratio = metrics["test_err_s_kappa0.5"]["mean"] / metrics["test_err_ls_kappa0.5"]["mean"]
    report = (out / "report.md").read_text()
    assert "## What it shows" in report and "kappa 0.5: L-S" in report and f"(S / L-S {ratio:.4g})" in report


@pytest.mark.parametrize("recipe, sets, message", [
    ("theory-order", ["methods="], "methods must be distinct and not empty"),
    ("theory-order", ["methods=ls,ls"], "methods must be distinct and not empty"),
    ("theory-order", ["lam=1"], "eta1 * lam must be in (0, 1)"),
    ("theory-order", ["kappa=0.001", "n_train=none"], "n_train * d = 1e+10 is too large"),
    ("theory-conv", ["d=30", "patches=4"], "conv needs d divisible by patches with d/patches >= 2"),
    ("theory-scaling", ["kappas=0.5,1.5"], "kappas must be all in [0.001, 1]"),
    ("theory-scaling", ["kappas=0.9", "q0=0.7"], "p0 + q0 must be <= 1"),
    ("theory-scaling", ["kappa=0.5", "p0=0.1"], "theory-scaling does not take kappa=0.5, p0=0.1"),
    ("theory-scaling", ["n_train=500"], "theory-scaling does not take n_train=500"),
])
def test_impossible_theory_configs_fail_in_one_line(recipe, sets, message, tmp_path, capsys):
    argv = ["run", recipe, "--out", str(tmp_path / "r")]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_learned_means_below_the_level_for_consecutive_probes():
    steps = [0, 100, 200, 300, 400, 500]
    flickers = torch.tensor([0.5, 0.05, 0.5, 0.05, 0.05, 0.05])
    late = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.05, 0.05])
    never = torch.full((6,), 0.3)
    series = torch.stack([flickers, late, never], dim=1)[:, None, :]  # [P, M=1, S=3]
    held = experiment.first_learned(steps, series, 0.1, hold=3, cap=501)
    assert held.tolist() == [[300.0, 400.0, 501.0]]  # a run that ends below counts
    assert experiment.first_learned(steps, series, 0.1, hold=1, cap=501).tolist() == [[100.0, 400.0, 501.0]]
    last_only = torch.tensor([0.5] * 5 + [0.05])[:, None, None]
    assert experiment.first_learned(steps, last_only, 0.1, hold=3, cap=501).item() == 500.0  # not the cap


def test_mean_before_the_anneal_reads_the_second_half_of_the_first_phase():
    steps = list(range(0, 1100, 100))
    series = torch.tensor(steps, dtype=torch.float)[:, None, None].expand(-1, 1, 2).clone()
    series[-1, 0, 1] = math.nan  # a probe outside a run's window does not reach its mean
    anneal = torch.tensor([[1000.0, 600.0]])
    assert experiment.mean_before(steps, series, anneal).tolist() == [[750.0, 450.0]]  # 500-1000; 300-600
    never = experiment.mean_before(steps, series, torch.tensor([[math.nan, 1000.0]]))
    assert math.isnan(never[0, 0].item())  # a run that never anneals


def test_learning_order_flags_read_the_sustained_iterations():
    metrics = {Metric("anneal_iter", "ls"): [1000, 1000, 1000, 1000, 1000, math.nan],
               Metric("p_learned_iter", "ls"): [100, 100, 1200, 100, 100, 100],
               Metric("w_on_p_err_at_anneal", "ls"): [0.05, 0.05, 0.3, 0.05, 0.2, 0.05],  # seed 4: P lost
               Metric("q_learned_iter", "ls"): [1500, 800, 1500, 3001, 1500, 3001],
               Metric("q_learned_iter", "s"): [200, 900, 3001],
               Metric("p_learned_iter", "s"): [900, 200, 3001]}
    flags = experiment.learning_order_flags(metrics, learned_err=0.1, steps=3000)
    flags = {metric.name: values for metric, values in flags.items()}
    assert flags["ls_p_before_q"][:5] == [1.0, 0.0, 0.0, 1.0, 0.0] and math.isnan(flags["ls_p_before_q"][5])
    assert flags["ls_q_after_anneal"][:5] == [1.0, 0.0, 1.0, 0.0, 1.0]  # 3001 = censored: never learned
    assert math.isnan(flags["ls_q_after_anneal"][5])  # never annealed: no verdict
    assert flags["s_q_before_p"] == [1.0, 0.0, 0.0]


def test_theory_conv_is_theory_order_with_the_convolution_net(tmp_path):
    out = tmp_path / "conv"
    assert run("run", "theory-conv", "--seeds", 2, "--out", out, *TOY) == 0
    metrics = summary_of(out)["metrics"]
    names = {"test_err_ls", "p_only_err_s", "v_on_q_err_at_anneal_ls", "ls_p_before_q", "s_q_before_p"}
    assert names <= set(metrics)
    points = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {(p["method"], p["seed"]) for p in points if p["step"] == 0} == {
        (m, s) for m in ("ls", "s") for s in (0, 1)}
    assert "u_norm" in points[0] and "w_norm" not in points[0]  # one filter bank, no W / V blocks
    assert (out / "figures" / "learning_order.png").exists()


def test_conv_defaults_follow_theorem_f2():
    """Theorem F.2: Assumption 3.3 with d replaced by d k and r by r / k; x2 fills the last stride."""
    config = TheoryConfig(structure="conv", d=64, patches=4, kappa=0.5)
    assert config.resolved("n_train") == 1024
    assert config.resolved("r") == pytest.approx(256**-0.75 / 4)
    assert config.resolved("lam") == pytest.approx(256**-1.25)
    dist = config.distribution()
    assert (dist.d, dist.q_dim) == (96, 16)  # x in R^112: four patches of 64 at stride 16


def test_a_run_recorded_before_the_sustained_metrics_still_renders(tmp_path):
    """Old summaries lack v_on_q_err_before_anneal_ls and ls_q_after_anneal: the discussion says n/a."""
    stat = {"mean": 0.5, "std": 0.0, "per_seed": [0.5]}
    old = {name: stat for name in ("ls_p_before_q", "anneal_iter_ls", "v_on_q_err_at_anneal_ls")}
    summary = {"metrics": old, "status": "complete", "seeds": [0], "elapsed_s": 1.0}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    config = {"recipe": "theory-order", "profile": "quick", "seeds": [0], "device": "cpu",
              "config": {"methods": ["ls"]}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (first,) = recipes.TheoryOrder().discuss(Records(tmp_path))
    assert "second half of the large-LR phase n/a" in first and "after the anneal in n/a" in first


def test_a_diverged_simulation_names_the_method_and_seed(tmp_path):
    out = tmp_path / "diverged"
    assert run("run", "theory-order", "--seeds", 2, "--out", out, *TOY, "--set", "methods=ls,s",
               "--set", "eta1=1e12", "--set", "tau_xi=0.1") == 0
    summary = summary_of(out)
    assert summary["status"] == "diverged" and summary["metrics"] == {}
    (problem,) = summary["problems"]
    assert problem.startswith("non-finite train loss of ls seed 0, ls seed 1 at iteration")
    assert "None of the" in (out / "report.md").read_text()


def test_a_seed_is_the_same_run_whatever_seeds_share_its_batch(tmp_path):
    """Data, initialization, gradient and pre-activation noise are drawn per seed: seed 2 of
    --seeds 3 and --seed 2 alone are one run (to float rounding of the batched products)."""
    assert run("run", "theory-order", "--seeds", 3, "--out", tmp_path / "three", *TOY) == 0
    assert run("run", "theory-order", "--seed", 2, "--out", tmp_path / "one", *TOY) == 0
    three, one = summary_of(tmp_path / "three")["metrics"], summary_of(tmp_path / "one")["metrics"]
    for name in ("test_err_ls", "p_only_err_s", "test_err_s_noise", "v_on_q_err_at_anneal_ls",
                 "train_loss_s"):
        assert one[name]["per_seed"][0] == pytest.approx(three[name]["per_seed"][2], abs=1e-4)
    assert three["train_loss_s"]["per_seed"][2] != three["train_loss_s"]["per_seed"][1]

    def probes(out, seed):  # a run's own probes: where its loss moved, whoever shares the batch
        lines = (json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines())
        return [(p["method"], p["step"]) for p in lines if p["seed"] == seed]
    assert probes(tmp_path / "three", 2) == probes(tmp_path / "one", 2)
