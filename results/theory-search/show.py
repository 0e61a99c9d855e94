"""Print the seed-mean trajectories of one search run: python show.py LABEL [every] [probe,probe,...]."""

import json
import sys
from pathlib import Path

label, every = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5
runs = [json.loads(line) for line in (Path(__file__).parent / "runs.jsonl").read_text().splitlines()]
run = [r for r in runs if r["label"] == label][-1]
names = tuple(sys.argv[3].split(",")) if len(sys.argv) > 3 else ("w_on_p_err", "v_on_q_err", "p_only_err")
methods = [k[len("test_err_"):] for k in run["metrics"] if k.startswith("test_err_")]  # order of the run
print("step | " + " | ".join(f"{n} {m}" for n in names for m in methods))
for i, step in enumerate(run["steps"]):
    if i % every == 0 or i == len(run["steps"]) - 1:
        cells = [f"{run['history'][n][i][j]:.3f}" for n in names for j in range(len(methods))]
        print(f"{step} | " + " | ".join(cells))
