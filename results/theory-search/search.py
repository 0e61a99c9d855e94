"""Regime search for theory-order: one simulation per call, a JSON line per run in runs.jsonl.

Usage: python results/theory-search/search.py LABEL SEEDS key=value ...  (keys of TheoryConfig)
Prints per-method mean ± standard error over seeds and the paired gaps S - L-S.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lrorder.core.config import resolve
from lrorder.theory.config import TheoryConfig
from lrorder.theory.experiment import Simulation, figures_of_merit, learning_order_flags

torch.set_num_threads(1)
label, seeds = sys.argv[1], int(sys.argv[2])
config = resolve(TheoryConfig, texts=dict(a.split("=", 1) for a in sys.argv[3:]))
start = time.perf_counter()
sim = Simulation(config, list(range(seeds)))
progress = sim.run(sim.start())
found = figures_of_merit(config, progress)
found.update(learning_order_flags(found, config.learned_err, config.steps))
metrics = {metric.name: values for metric, values in found.items()}
seconds = time.perf_counter() - start
history = {k: torch.stack(v).mean(-1).tolist() for k, v in progress.history.items()
           if k in ("w_on_p_err", "v_on_q_err", "p_only_err", "test_err", "train_loss",
                                                               "q_only_train_loss", "both_train_loss")}
record = {"label": label, "seeds": seeds, "overrides": sys.argv[3:], "seconds": round(seconds, 1),
          "metrics": metrics, "steps": progress.steps, "history": history}
with open(Path(__file__).parent / "runs.jsonl", "a") as f:
    f.write(json.dumps(record) + "\n")


def stat(values):
    a = np.asarray(values, dtype=float)
    return a.mean(), a.std(ddof=1) / np.sqrt(a.size) if a.size > 1 else 0.0


print(f"{label}: {seeds} seeds, {seconds:.0f} s, {' '.join(sys.argv[3:])}")
for name in sorted(metrics):
    m, se = stat(metrics[name])
    print(f"  {name:28s} {m:8.4f} ± {se:.4f}")
for part in ("p_only_err", "test_err"):
    if f"{part}_s" in metrics and f"{part}_ls" in metrics:
        m, se = stat(np.subtract(metrics[f"{part}_s"], metrics[f"{part}_ls"]))
        print(f"  paired {part} S - LS: {m:.4f} ± {se:.4f}")
