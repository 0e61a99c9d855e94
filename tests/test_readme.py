"""The README's set-up commands are the ones CI and users run, and its examples parse."""

import re
import shlex
from pathlib import Path

from lrorder.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_has_exactly_the_two_setup_commands_and_ci_runs_the_test_one():
    commands = re.findall(r"```sh\n(.+?)\n```", README)
    assert len(commands) == 2
    install_and_reproduce, install_and_test = commands
    assert install_and_reproduce.endswith("lrorder reproduce")
    assert install_and_test.endswith("python -m pytest")
    assert install_and_test in (ROOT / ".ci" / "run").read_text().splitlines()


def test_every_lrorder_example_in_the_readme_parses():
    blocks = "\n".join(re.findall(r"```[a-z]*\n(.*?)```", README, flags=re.S))
    examples = [line.split("#")[0].strip() for line in blocks.splitlines()
                if line.startswith("lrorder ")]
    assert len(examples) >= 8
    for example in examples:
        build_parser().parse_args(shlex.split(example)[1:])
