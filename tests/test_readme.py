"""The README's two set-up commands are the ones CI and users run."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", text)


def test_readme_has_exactly_the_two_setup_commands_and_ci_runs_the_test_one():
    install_and_reproduce, install_and_test = readme_commands()[:2]
    assert install_and_reproduce.endswith("lrorder reproduce")
    assert install_and_test.endswith("python -m pytest")
    assert install_and_test in (ROOT / ".ci" / "run").read_text().splitlines()
