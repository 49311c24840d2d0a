"""The repository's promises: the README's two commands, CI running exactly the test command, one dependency."""

from __future__ import annotations

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(name: str) -> str:
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


def readme_commands() -> list:
    return re.findall(r"```sh\n(.+?)\n```", read("README.md"), re.S)[:2]


def test_readme_starts_with_the_two_commands():
    """The README's first two code blocks are install-and-run and install-test-deps-and-test."""
    run, test = readme_commands()
    assert "pip install" in run and "ollama_proxy.py" in run
    assert "pip install" in test and "[test]" in test and "pytest" in test
    assert read("README.md").index(run) < 600


def test_ci_runs_the_readme_test_command():
    """.ci/run runs exactly the README's test command."""
    match = re.search(r"^TEST_COMMAND='(.+)'$", read(".ci/run"), re.M)
    assert match is not None
    assert match.group(1) == readme_commands()[1]


def test_only_dependency_is_h11():
    """pyproject declares h11>=0.16 and nothing else at run time; the test extra has the clients."""
    text = read("pyproject.toml")
    assert re.search(r'^dependencies = \["h11>=0\.16"\]$', text, re.M)
    assert re.search(r'^test = \[.*"pytest.*"ollama.*"openai.*\]$', text, re.M)
    assert 'py-modules = ["ollama_proxy"]' in text and 'ollama-proxy = "ollama_proxy:main"' in text
