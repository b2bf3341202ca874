"""Running `maf` in this process, as the CLI tests do: in a scratch folder, without the machine's MAF_* settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_maf.cli import main

MAF_VARIABLES = ("MAF_DB_PATH", "MAF_DATABASE_URL", "MAF_DATABASE_SCHEMA", "MAF_AGENT_ID", "MAF_DEBUG")


def scratch_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in ``tmp_path`` with no MAF_* variable that names a store or an agent."""
    monkeypatch.chdir(tmp_path)
    for name in MAF_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`maf ARGV`: its exit code (argparse's usage errors included), stdout and stderr."""
    try:
        code = main(list(argv))
    except SystemExit as exited:  # argparse's usage errors
        code = int(exited.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
