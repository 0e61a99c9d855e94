"""Reports rendered from records: comparisons say what differs, verdicts never overstate, and a
damaged record is one line, not a traceback."""

import json
import os

import pytest

from lrorder.cli import main
from lrorder.core import report, rundir

FAST = ["--set", "draws=2000"]


def run(*argv):
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    assert run("run", "convex-claim1", "--out", root / "a", *FAST) == 0
    assert run("run", "convex-claim1", "--out", root / "b", *FAST, "--set", "eps=0.5", "--seeds", 2) == 0
    return root / "a", root / "b"


def test_a_comparison_names_the_settings_that_differ(two_runs):
    table = report.compare(list(two_runs))
    differ = table.split("Metrics:")[0]
    assert "| eps | 0.1 | 0.5 |" in differ and "| seeds | 0,1,2 | 0,1 |" in differ
    assert "| alpha |" not in differ and "| recipe |" not in differ  # shared settings are not listed
    assert "| test_loss_ratio |" in table.split("Metrics:")[1]


def test_a_run_that_measured_nothing_the_paper_states_says_so():
    summary = {"status": "diverged", "metrics": {"p_both_seen": {"mean": None}},
               "paper_claims": {"p_both_seen": {"value": 0.75, "source": "Claim 1", "relation": "≈",
                                                "tolerance": 0.01}}}
    sentence = report.verdict_sentence(summary)
    assert sentence.startswith("None of the 1 metrics the paper states could be measured (the run diverged)")


def test_one_seed_is_reported_without_a_spread(two_runs):
    single = json.loads((two_runs[0].parent / "a" / rundir.SUMMARY).read_text())
    single["metrics"] = {k: {**v, "per_seed": v["per_seed"][:1], "std": 0.0}
                         for k, v in single["metrics"].items()}
    assert "±" not in report.summary_table(single)


@pytest.mark.parametrize("damage, message", [
    (("summary.json", "{}"), "lacks status, seeds, metrics, elapsed_s"),
    (("summary.json", "[1, 2]"), "is not a dict of lrorder records"),
    (("summary.json", "{\"status\": "), "is corrupt"),
    (("config.json", "{\"recipe\": \"convex-claim1\"}"), "lacks profile, seeds, device, config"),
])
def test_report_on_a_damaged_record_is_one_line(two_runs, tmp_path, capsys, damage, message):
    copy = tmp_path / "copy"
    os.system(f"cp -r {two_runs[0]} {copy}")
    name, text = damage
    (copy / name).write_text(text)
    assert run("report", copy) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_report_over_a_metrics_file_of_random_bytes_renders_and_says_what_it_skipped(two_runs, tmp_path,
                                                                                      capsys):
    copy = tmp_path / "copy"
    os.system(f"cp -r {two_runs[0]} {copy}")
    noise = [os.urandom(n).replace(b"\n", b"x") for n in (3000, 500)]
    (copy / rundir.METRICS).write_bytes(b"\n".join(noise))
    assert run("report", copy) == 0
    assert "skipped damaged line(s) 1, 2\n" in capsys.readouterr().err
    assert "line(s) 1, 2 of metrics.jsonl are damaged" in (copy / rundir.REPORT).read_text()


def test_figures_and_tables_report_the_same_spread():
    """One definition of the spread over seeds: the sample std (ddof 1), NaN seeds left out."""
    from lrorder.core.metrics import Metric, aggregate, sample_std

    values = [0.1, 0.4, 0.4]
    assert aggregate(Metric("x"), values)["std"] == pytest.approx(0.17320508)  # sqrt(0.06 / 2)
    band = sample_std([[0.1, 1.0], [0.4, float("nan")], [0.4, 3.0]], axis=0)
    assert band[0] == pytest.approx(0.17320508) and band[1] == pytest.approx(1.41421356)


def test_report_of_one_run_with_out_writes_its_table(two_runs, tmp_path):
    assert run("report", two_runs[0], "--out", tmp_path / "table.md") == 0
    table = (tmp_path / "table.md").read_text()
    assert "| test_loss_ratio |" in table and "Settings that differ" not in table


def test_shares_are_written_as_shares(two_runs):
    text = (two_runs[0] / rundir.REPORT).read_text()
    assert "Where both coordinates were sampled (75" in text and "% of draws)" in text


def test_a_part_of_a_combined_run_reads_with_its_seeds_and_without_them_as_older_combines_wrote():
    part = {"dir": "runs/large", "methods": ["large"], "devices": ["cuda", "cpu"], "git_commit": "abc1234"}
    assert report._part(part) == "`runs/large` (large; cuda -> cpu; commit abc1234)"
    assert report._part({**part, "seeds": [3, 4], "git_commit": None}) == (
        "`runs/large` (large; seeds 3, 4; cuda -> cpu; commit unknown)")
