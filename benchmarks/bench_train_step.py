"""Benchmark one WRN training step: plain fp32 eager (the released code's way) vs the lrorder trainer.

The same as `lrorder bench train-step`, with the same options:

    python benchmarks/bench_train_step.py            # WRN-16-10 on CUDA, WRN-10-1 on CPU
    python benchmarks/bench_train_step.py --depth 16 --widen 4 --steps 5
"""

import sys

from lrorder.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "train-step", *sys.argv[1:]]))
