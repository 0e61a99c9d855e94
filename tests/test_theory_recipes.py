"""The theory recipes end to end through the CLI, at a toy size: the run-directory contract,
the metric names of issue 4, figures from records, and an exact resume after a kill."""

import json

import pytest

from lrorder.cli import main
from lrorder.theory import experiment

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
                 "anneal_iter_s_noise", "ls_p_before_q", "s_q_before_p"):
        assert name in metrics
    assert "anneal_iter_s" not in metrics
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
