"""The CLI end to end on the convex recipes: the run-directory contract, bad input, resume, reports."""

import json

import pytest

from lrorder.cli import main
from lrorder.convex.recipes import ConvexClaim1
from lrorder.core import recipe as registry

FAST = ["--set", "draws=2000"]


def run(*argv):
    return main([str(a) for a in argv])


def test_claim1_run_directory_contract(tmp_path, capsys):
    out = tmp_path / "claim1"
    assert run("run", "convex-claim1", "--seeds", 3, "--out", out, "--device", "cuda") == 0
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"] == "convex-claim1" and config["seeds"] == [0, 1, 2]
    assert config["config"]["n"] == 3 and config["device"] == "cpu"  # numpy only, whatever asked
    assert {"python", "numpy", "torch"} <= set(config["versions"]) and "git_commit" in config
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert set(summary["paper"]) == {"p_both_seen", "gf_test_loss_over_eps",
                                     "annealed_test_loss_over_eps", "test_loss_ratio",
                                     "agree_when_one_unseen"} <= set(summary["metrics"])
    ratio = summary["metrics"]["test_loss_ratio"]
    assert abs(ratio["mean"] - 2) < 0.05 and len(ratio["per_seed"]) == 3
    assert summary["paper"]["test_loss_ratio"] == 2.0
    assert abs(summary["metrics"]["p_both_seen"]["mean"] - 0.75) < 0.01
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert all("seed" in json.loads(line) and "step" in json.loads(line) for line in lines)
    assert {p.name for p in (out / "figures").iterdir()} == {
        "trajectories.png", "test_vs_train.png", "ratio_distribution.png"}
    report = (out / "report.md").read_text()
    assert "| test_loss_ratio |" in report and "All 5 measured metrics the paper states agree" in report


def test_report_rerenders_from_records_and_compares(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run("run", "convex-claim1", "--out", a, *FAST) == 0
    assert run("run", "convex-claim1", "--out", b, *FAST, "--set", "eps=0.5") == 0
    before = (a / "report.md").read_text()
    (a / "report.md").unlink()
    capsys.readouterr()
    assert run("report", a, b, "--out", tmp_path / "compare.md") == 0
    assert (a / "report.md").read_text() == before
    table = (tmp_path / "compare.md").read_text()
    assert "| test_loss_ratio |" in table and "a (convex-claim1)" in table


@pytest.mark.parametrize("argv, message", [
    (["run", "convex-clam1"], "unknown recipe 'convex-clam1' (did you mean 'convex-claim1'?)"),
    (["run", "convex-claim1", "--set", "epss=1"], "did you mean 'eps'?"),
    (["run", "convex-claim1", "--set", "eps=abc"], "eps='abc' is not valid: expected a number"),
    (["run", "convex-claim1", "--set", "eps=-0.1"], "eps must be > 0"),
    (["run", "convex-claim1", "--set", "eps=0"], "eps must be > 0"),
    (["run", "convex-claim1", "--set", "n=0"], "n must be >= 1"),
    (["run", "convex-claim1", "--set", "eps"], "is not key=value"),
    (["run", "convex-claim1", "--seeds", "0"], "--seeds must be >= 1"),
    (["run", "convex-claim1", "--profile", "huge"], "has no profile 'huge'"),
    (["run", "convex-claim1", "--seeds", "x"], "invalid int value"),
    (["show", "convex-lemma2", "--set", "small=20"], "small must be < d"),
    (["run", "convex-lemma2", "--set", "sweep_steps=-1"], "sweep_steps must be all >= 0"),
    (["report", "/nonexistent-run"], "is not a run directory"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path):
    assert run(*argv, *(["--out", tmp_path / "r"] if argv[0] == "run" else [])) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_existing_run_directory_is_refused_and_kept(tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert run("run", "convex-claim1", "--out", out) == 2
    assert "exists and is not empty: pass --resume" in capsys.readouterr().err
    assert (out / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]


def test_unwritable_output_path(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert run("run", "convex-claim1", "--out", blocker / "run") == 2
    assert "choose a writable --out" in capsys.readouterr().err


def test_resume_carries_on_after_a_kill(tmp_path, capsys, monkeypatch):
    out = tmp_path / "killed"
    original = ConvexClaim1.run_seed
    calls = []

    def dies_on_seed_1(self, ctx, seed):
        calls.append(seed)
        if seed == 1:
            ctx.log(seed=1, step=0, partial=True)  # written before the kill: must vanish
            raise KeyboardInterrupt
        return original(self, ctx, seed)

    monkeypatch.setattr(ConvexClaim1, "run_seed", dies_on_seed_1)
    assert run("run", "convex-claim1", "--seeds", 3, "--out", out, *FAST) == 130
    assert not (out / "summary.json").exists()
    assert "continue with: lrorder run convex-claim1 --out" in capsys.readouterr().err
    monkeypatch.setattr(ConvexClaim1, "run_seed", lambda self, ctx, seed: (calls.append(seed),
                        original(self, ctx, seed))[1])
    assert run("run", "convex-claim1", "--out", out, "--resume") == 0
    assert calls == [0, 1, 1, 2]
    whole = tmp_path / "whole"
    assert run("run", "convex-claim1", "--seeds", 3, "--out", whole, *FAST) == 0
    resumed, uninterrupted = (json.loads((d / "summary.json").read_text())["metrics"] for d in (out, whole))
    for name in ("p_both_seen", "test_loss_ratio", "gf_test_loss_over_eps"):
        assert resumed[name]["per_seed"] == uninterrupted[name]["per_seed"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert not any(r.get("partial") for r in records)
    assert sum(1 for r in records if "draws" in r) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["seeds"] == [0, 1, 2]
    assert not (out / "state.pt").exists()


@pytest.mark.parametrize("argv, message", [
    (["convex-claim1", "--set", "eps=0.3"], "with a different --set eps"),
    (["convex-claim1", "--profile", "full"], "with a different --profile"),
    (["convex-claim1", "--seeds", "5"], "with a different --seeds"),
    (["convex-lemma2"], "holds a convex-claim1 run, not convex-lemma2"),
])
def test_resume_must_not_change_the_run(tmp_path, capsys, argv, message):
    out = tmp_path / "r"
    assert run("run", "convex-claim1", "--out", out, *FAST) == 0
    report = (out / "report.md").read_text()
    assert run("run", *argv, "--out", out, "--resume") == 2
    assert message in capsys.readouterr().err
    assert (out / "report.md").read_text() == report


def test_a_run_with_no_value_for_a_metric_still_reports(tmp_path, capsys):
    """n = 1 never sees both coordinates: those metrics are NaN, written as null and n/a."""
    out = tmp_path / "n1"
    assert run("run", "convex-claim1", "--out", out, *FAST, "--set", "n=1") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["test_loss_ratio"]["mean"] is None
    assert summary["metrics"]["p_both_seen"]["mean"] == 0.0
    assert "n/a" in (out / "report.md").read_text()


def test_files_are_readable_by_others(tmp_path, capsys):
    out = tmp_path / "r"
    assert run("run", "convex-claim1", "--out", out, *FAST) == 0
    assert (out / "summary.json").stat().st_mode & 0o044 == 0o044


def test_list_and_show(capsys):
    assert run("list") == 0
    listing = capsys.readouterr().out
    assert "convex-claim1" in listing and "convex-lemma2" in listing
    assert run("show", "convex-claim1", "--profile", "full") == 0
    shown = capsys.readouterr().out
    assert "draws = 1000000" in shown and "n = 3 [paper: 3]" in shown
    assert "test_loss_ratio ≈ 2" in shown


def test_reproduce_runs_available_recipes_and_skips_the_rest(tmp_path, capsys, monkeypatch):
    convex = {k: v for k, v in registry.all_recipes().items() if k.startswith("convex")}
    missing = type("NeedsData", (ConvexClaim1,), {
        "name": "needs-data", "missing_data": lambda self, config: "no data: run `lrorder data`"})()
    monkeypatch.setattr("lrorder.cli.all_recipes", lambda: {**convex, "needs-data": missing})
    assert run("reproduce", "--out", tmp_path / "all") == 0
    index = (tmp_path / "all" / "index.md").read_text()
    assert "[convex-claim1](convex-claim1/report.md): complete" in index
    assert "## needs-data: skipped" in index and "run `lrorder data`" in index
    lemma2 = json.loads((tmp_path / "all" / "convex-lemma2" / "summary.json").read_text())["metrics"]
    assert lemma2["annealed_bound_holds"]["mean"] == lemma2["gf_bound_holds"]["mean"] == 1.0


def test_a_claim_on_a_metric_no_seed_measured_is_not_counted_as_a_miss():
    from lrorder.core.report import summary_table, verdict_sentence
    summary = {"metrics": {"a": {"mean": 1.0, "std": 0.0, "per_seed": [1.0]},
                           "b": {"mean": None, "std": None, "per_seed": [None]}},
               "paper_claims": {"a": {"value": 1.0, "source": "s"}, "b": {"value": 0.25, "source": "s",
                                                                           "relation": ">="}}}
    assert verdict_sentence(summary) == ("All 1 measured metrics the paper states agree with it (within the "
                                         "tolerance shown, or on the right side of the paper's bound). Not "
                                         "measured in every seed (e.g. a run that never annealed): b.")
    assert summary_table(summary).splitlines()[-1].endswith("| n/a | n/a |")
