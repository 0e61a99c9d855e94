"""`lrorder selftest`: the quick run on the CPU passes every check and records it; a broken
stacked trainer, or a check that cannot run, is a failed row and a non-zero exit status."""

import json

import pytest
import torch

from lrorder.vision import bench, selftest
from lrorder.vision.stacked import StackedTrainer

COMPARISONS = [f"{grouping} = plain trainer, {what}, {precision}" for grouping in ("stacked", "one model")
               for precision in ("fp32", "bf16") for what in ("one step", "a short epoch")]
CHECKS = [*COMPARISONS, *selftest.GRAPH_CHECKS, "a diverging arm leaves the others untouched",
          "save / resume is exact (1 model)", "save / resume is exact (3 models stacked)",
          "one patch-experiment epoch, finite loss", "train-step benchmark"]


@pytest.fixture
def one_thread():
    """One thread: on a 2-core machine that is busy with other work, two threads wait on each
    other and the quick selftest takes a minute instead of seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def quick(cli, out):
    return cli("selftest", "--quick", "--device", "cpu", "--out", out)


def test_the_quick_selftest_passes_on_the_cpu_prints_its_table_and_records_it(tmp_path, capsys, cli,
                                                                               one_thread):
    assert quick(cli, tmp_path) == 0
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / selftest.FILE).read_text())
    rows = {row["check"]: row for row in record["rows"]}
    assert list(rows) == CHECKS
    for name, row in rows.items():
        if name in selftest.GRAPH_CHECKS:
            assert (row["status"], row["detail"]) == ("skipped", "skipped: needs CUDA"), name
        else:
            assert row["status"] == "pass", row
            assert row["figure"] is not None and row["tolerance"] is not None, name
        assert any(line.split()[:1] == [row["status"]] and name in line for line in printed.splitlines())
    assert rows["stacked = plain trainer, one step, fp32"]["tolerance"] == selftest.TOLERANCE["fp32", "step"]
    assert rows["save / resume is exact (3 models stacked)"]["tolerance"] == 0
    assert printed.startswith("lrorder selftest on ") and "WRN-10-1 (--quick)" in printed.splitlines()[0]
    assert "13 passed, 0 failed, 2 skipped" in printed.splitlines()[-1]
    assert all(path in printed for path in ("plain fp32 eager (released code)", "plain Trainer",
                                            "fast off: 1 model", "fast on: 3 methods stacked"))
    assert record["passed"] is True and record["device"] == "cpu" and record["quick"] is True
    assert record["torch"] == torch.__version__ and "git_commit" in record
    assert record["command"] == f"lrorder selftest --quick --device cpu --out {tmp_path}"
    assert [row["path"] for row in record["benchmark"]] == list(bench.paths("cpu"))
    assert not list(tmp_path.glob(".selftest.json.*"))  # written atomically: no temporary file left


def test_a_broken_stacked_trainer_and_a_check_that_cannot_run_fail_with_a_non_zero_exit(
        tmp_path, capsys, cli, one_thread, monkeypatch):
    step = StackedTrainer.step

    def perturbed(self, x, y):  # every step moves the last model's last layer a little
        out = step(self, x, y)
        with torch.no_grad():
            self.model.fc.weight[-1].add_(0.1)
        return out

    def cannot_run(size, device):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(StackedTrainer, "step", perturbed)
    monkeypatch.setattr(selftest, "check_patch_epoch", cannot_run)
    assert quick(cli, tmp_path) == 1
    printed = capsys.readouterr().out
    rows = {row["check"]: row for row in json.loads((tmp_path / selftest.FILE).read_text())["rows"]}
    for name in COMPARISONS:
        assert rows[name]["status"] == "fail" and rows[name]["figure"] > rows[name]["tolerance"], rows[name]
    patch = rows["one patch-experiment epoch, finite loss"]
    assert patch["status"] == "fail" and patch["detail"] == "error: RuntimeError: out of memory"
    # the stacked trainer against itself still agrees, and the checks after a failure still run
    for name in ("a diverging arm leaves the others untouched", "save / resume is exact (1 model)",
                 "save / resume is exact (3 models stacked)", "train-step benchmark"):
        assert rows[name]["status"] == "pass", rows[name]
    last = printed.splitlines()[-1]
    assert last.startswith("4 passed, 9 failed, 2 skipped") and "FAILED: stacked = plain trainer" in last


def test_cuda_without_a_gpu_or_an_unwritable_out_is_one_line_before_any_check(tmp_path, capsys, cli,
                                                                              monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli("selftest", "--device", "cuda", "--out", tmp_path) == 2
    assert "no CUDA device is visible: use --device cpu" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert cli("selftest", "--quick", "--device", "cpu", "--out", tmp_path / "file" / "out") == 2
    printed = capsys.readouterr()
    assert "cannot write to" in printed.err and printed.out == ""
    assert not (tmp_path / selftest.FILE).exists()


def test_the_device_peak_is_known_for_the_gpus_named_and_only_for_them():
    assert bench.device_peak("NVIDIA H100 80GB HBM3") == bench.PEAK_TFLOPS == 989.0
    assert bench.device_peak("NVIDIA H100 NVL") == 835.0 and bench.device_peak("NVIDIA H100 PCIe") == 756.0
    assert bench.device_peak("NVIDIA H200") == 989.0 and bench.device_peak("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench.device_peak("NVIDIA GeForce RTX 3090") is None
