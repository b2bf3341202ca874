"""The README's Python examples run as written, and every `maf` command line it shows names a real command and options."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block-{n}" for n in range(len(BLOCKS))])
def test_python_example_runs(block: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {"__name__": "readme_example"})


def test_there_are_examples() -> None:
    assert len(BLOCKS) >= 3


def maf_command_problems(text: str) -> list[str]:
    """Each `maf ...` line of ``text``'s shell blocks whose command, or one of whose options, `maf` lacks."""
    from pytest_maf.cli import build_parser

    def commands_of(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        found = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
        return dict(found[0].choices) if found else {}

    problems = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.DOTALL):
        for line in block.splitlines():
            line = re.split(r"\s#\s", f"{line} ", maxsplit=1)[0].strip()
            for part in re.split(r"&&|\|\||;|\$\(|\|\s", line):
                words = re.sub(r"^(\w+=\S+\s+)+", "", part.strip()).split()
                if words[:1] != ["maf"]:
                    continue
                words = words[: words.index("--")] if "--" in words else words  # what follows is another program's
                parser, named = build_parser(), "maf"
                for word in words[1:]:
                    choices = commands_of(parser)
                    if not choices or word.startswith(("-", "[")):
                        break
                    if word not in choices:
                        problems.append(f"{' '.join(words)}: {named} has no command {word!r}")
                        break
                    parser, named = choices[word], f"{named} {word}"
                for option in re.findall(r"(?<![\w-])--?[a-zA-Z][\w-]*", " ".join(words)):
                    if option not in parser._option_string_actions:
                        problems.append(f"{' '.join(words)}: {named} has no option {option}")
    return problems


def test_every_maf_command_in_the_readme_exists_with_its_options() -> None:
    assert maf_command_problems(README) == []


def test_a_command_or_option_maf_lacks_is_found() -> None:
    text = "```bash\nmaf db frobnicate\nmaf status --watch 2 --colour  # on a terminal\nmaf task run t -- pytest -x\n```\n"
    assert maf_command_problems(text) == [
        "maf db frobnicate: maf db has no command 'frobnicate'",
        "maf status --watch 2 --colour: maf status has no option --colour",
    ]


def test_the_exit_code_table_lists_every_exit_code() -> None:
    from pytest_maf.errors import EXIT_CODES

    listed = {int(code) for code in re.findall(r"^\| (\d+) \| ", README, flags=re.MULTILINE)}
    assert listed == set(EXIT_CODES), "the README's exit code table and pytest_maf.errors.EXIT_CODES differ"


def test_the_first_command_needs_nothing_from_the_test_extras() -> None:
    # `pip install . && pytest --maf-preflight` runs in this repository with its pyproject.toml's addopts
    # and without pytest-xdist (a test extra): an xdist option there would make it a usage error.
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider", "--collect-only", "-q",
         "tests/test_typing.py"],
        cwd=root, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
