"""The theory recipes end to end through the CLI, at a toy size: the run-directory contract,
the metric names of issue 4, figures from records, and an exact resume after a kill."""

import json
import math

import pytest
import torch

from lrorder.cli import main
from lrorder.core.rundir import Records
from lrorder.theory import experiment, recipes

TOY = ["--set", "d=16", "--set", "n_train=120", "--set", "m_w=8", "--set", "m_v=40", "--set", "steps=60",
       "--set", "anneal_at=20", "--set", "probe_every=10", "--set", "n_test=200", "--set", "eta2=0.05"]


def run(*argv):
    return main([str(a) for a in argv])


def summary_of(out):
    return json.loads((out / "summary.json").read_text())


def test_theory_order_writes_the_metrics_of_issue_4(tmp_path):
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
    assert {p.name for p in (out / "figures").iterdir()} == {"learning_order.png", "final_errors.png"}
    points = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(points) == 3 * 7 and {"v_on_q_err_ls", "w_on_p_err_s", "lemma42_s_noise"} <= set(points[0])


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
    assert (out / "figures" / "ratio_vs_kappa.png").exists()


@pytest.mark.parametrize("recipe, sets, message", [
    ("theory-order", ["methods="], "methods must be distinct and not empty"),
    ("theory-order", ["methods=ls,ls"], "methods must be distinct and not empty"),
    ("theory-order", ["lam=1"], "eta1 * lam must be in (0, 1)"),
    ("theory-order", ["kappa=0.001", "n_train=none"], "n_train * d = 1e+10 is too large"),
    ("theory-conv", ["d=30", "patches=4"], "conv needs d divisible by patches with d/patches >= 2"),
    ("theory-scaling", ["kappas=0.5,1.5"], "kappas must be all in [0.001, 1]"),
    ("theory-scaling", ["kappas=0.9", "q0=0.7"], "p0 + q0 must be <= 1"),
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
    metrics = {"anneal_iter_ls": [1000, 1000, 1000, 1000, 1000, math.nan],
               "p_learned_iter_ls": [100, 100, 1200, 100, 100, 100],
               "w_on_p_err_at_anneal_ls": [0.05, 0.05, 0.3, 0.05, 0.2, 0.05],  # seed 4 lost P again
               "q_learned_iter_ls": [1500, 800, 1500, 3001, 1500, 3001],
               "q_learned_iter_s": [200, 900, 3001], "p_learned_iter_s": [900, 200, 3001]}
    flags = recipes.learning_order_flags(metrics, learned_err=0.1, steps=3000)
    assert flags["ls_p_before_q"][:5] == [1.0, 0.0, 0.0, 1.0, 0.0] and math.isnan(flags["ls_p_before_q"][5])
    assert flags["ls_q_after_anneal"][:5] == [1.0, 0.0, 1.0, 0.0, 1.0]  # 3001 = censored: never learned
    assert math.isnan(flags["ls_q_after_anneal"][5])  # never annealed: no verdict
    assert flags["s_q_before_p"] == [1.0, 0.0, 0.0]


def test_theory_conv_is_theory_order_with_the_convolution_net(tmp_path):
    out = tmp_path / "conv"
    assert run("run", "theory-conv", "--seeds", 2, "--out", out, *TOY) == 0
    recorded = json.loads((out / "config.json").read_text())["config"]
    assert (recorded["structure"], recorded["patches"], recorded["methods"]) == ("conv", 2, ["ls", "s"])
    metrics = summary_of(out)["metrics"]
    names = {"test_err_ls", "p_only_err_s", "v_on_q_err_at_anneal_ls", "ls_p_before_q", "s_q_before_p"}
    assert names <= set(metrics)
    points = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "u_norm_ls" in points[0] and "lemma42_s" in points[0]
    assert (out / "figures" / "learning_order.png").exists()


def test_conv_defaults_follow_theorem_f2():
    """Theorem F.2: Assumption 3.3 with d replaced by d k and r by r / k; x2 fills the last stride."""
    config = experiment.TheoryConfig(structure="conv", d=64, patches=4, kappa=0.5)
    assert config.resolved("n_train") == 1024
    assert config.resolved("r") == pytest.approx(256**-0.75 / 4)
    assert config.resolved("lam") == pytest.approx(256**-1.25)
    dist = config.distribution()
    assert (dist.d, dist.q_dim) == (96, 16)  # x in R^112: four patches of 64 at stride 16


def test_a_run_recorded_before_the_sustained_metrics_still_renders(tmp_path):
    """Old summaries lack v_on_q_err_before_anneal_ls and ls_q_after_anneal: the discussion says n/a."""
    stat = {"mean": 0.5, "std": 0.0, "per_seed": [0.5]}
    old = {name: stat for name in ("ls_p_before_q", "anneal_iter_ls", "v_on_q_err_at_anneal_ls")}
    (tmp_path / "summary.json").write_text(json.dumps({"metrics": old}))
    (tmp_path / "config.json").write_text(json.dumps({"config": {"methods": ["ls"]}}))
    (first,) = recipes.TheoryOrder().discuss(Records(tmp_path))
    assert "second half of the large-LR phase n/a" in first and "after the anneal in n/a" in first
