"""A store this user may only read (an auditor's, a CI artifact, a mounted backup): the views show it,
a write says which files are not writable, and nothing is left behind that would stop a writer later."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_maf import tasks
from pytest_maf.store import open_store
from tools import required_tool
from workspace import isolated_env, maf_command


def as_a_user_who_may_only_read() -> list[str]:
    """A prefix that runs a command without root's power to write whatever it likes (root ignores modes)."""
    if os.geteuid() != 0:
        return []
    setpriv = required_tool("setpriv", "util-linux", "run the read-only store tests as root")
    dropped = "-dac_override,-dac_read_search,-fowner"
    return [setpriv, f"--bounding-set={dropped}", f"--inh-caps={dropped}", "--"]


def maf(tmp_path: Path, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*as_a_user_who_may_only_read(), *maf_command(), "--db", str(db), *args], cwd=tmp_path,
        capture_output=True, text=True, env=isolated_env(tmp_path / "home"), timeout=120,
    )


@pytest.fixture
def store_with_a_task(tmp_path: Path) -> Path:
    db = tmp_path / "ci-artifact" / "runtime.db"
    db.parent.mkdir()
    with open_store(db, create=True) as store:
        tasks.add_task(store, task_id="fix-1")
    return db


@pytest.mark.parametrize("folder_writable", [False, True], ids=["file-and-folder", "file-only"])
def test_a_store_this_user_may_only_read_is_shown_and_a_write_says_why_not(
    tmp_path: Path, store_with_a_task: Path, folder_writable: bool
) -> None:
    db, folder = store_with_a_task, store_with_a_task.parent
    db.chmod(0o444)
    folder.chmod(0o755 if folder_writable else 0o555)
    before = sorted(path.name for path in folder.iterdir())
    try:
        # Before: "attempt to write a readonly database", exit 2, from every view.
        shown = maf(tmp_path, db, "status", "--json")
        listed = maf(tmp_path, db, "task", "list", "--json")
        refused = maf(tmp_path, db, "task", "add", "--id", "fix-2")
        left = sorted(path.name for path in folder.iterdir())
    finally:
        folder.chmod(0o755)
        db.chmod(0o644)

    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["tasks_by_state"]["READY"] == 1
    assert listed.returncode == 0 and [task["id"] for task in json.loads(listed.stdout)] == ["fix-1"]
    assert refused.returncode == 2 and "cannot be written by this user" in refused.stderr
    # Before, with the folder writable: a read-only runtime.db-shm was left, and every later write failed.
    assert left == before
    with open_store(db) as store:  # a writer, once the file is writable again
        tasks.add_task(store, task_id="fix-2")


READER = """
import sys
from pytest_maf.store import open_store
from pytest_maf import tasks
with open_store(sys.argv[1]) as store:
    for _ in range(2):
        print(len(tasks.list_tasks(store)), flush=True)
        sys.stdin.readline()
"""


def test_a_store_read_again_shows_what_a_writer_did_since(tmp_path: Path, store_with_a_task: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a reader that may not write beside a writer that may: root for the writer, as in CI")
    db, folder = store_with_a_task, store_with_a_task.parent
    db.chmod(0o444)
    folder.chmod(0o555)
    reader = subprocess.Popen(
        [*as_a_user_who_may_only_read(), sys.executable, "-c", READER, str(db)], cwd=tmp_path, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=isolated_env(tmp_path / "home"),
    )
    try:
        assert reader.stdout is not None and reader.stdin is not None
        first = reader.stdout.readline()
        with open_store(db) as store:  # a writer with the rights (root here), meanwhile
            tasks.add_task(store, task_id="fix-2")
        reader.stdin.write("\n")
        reader.stdin.flush()
        second = reader.stdout.readline()
        reader.stdin.write("\n")
        reader.stdin.close()
        assert reader.wait(timeout=60) == 0, reader.stderr.read() if reader.stderr else ""
    finally:
        reader.kill()
        reader.wait(timeout=30)
        folder.chmod(0o755)
        db.chmod(0o644)

    # Before: opened as a file nobody writes, the store was read once and never again (status --watch froze).
    assert (first, second) == ("1\n", "2\n")
