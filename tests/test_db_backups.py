"""A folder of backups, on both backends: `maf db backup --keep N`, `maf db backups`, `maf db restore latest`."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sqlite3
import subprocess
import time
from contextlib import closing, nullcontext
from pathlib import Path

import pytest

from backends import scratch_schema, server_url, store_of_env, store_rows
from test_hostile_input import one_line_refusal
from workspace import Workspace

OLD = 1_700_000_000  # seconds: older backups are dated from here, a minute apart


def maf(workspace: Workspace, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return workspace.maf(workspace.main, *args, **env)


def backup(workspace: Workspace, env: dict[str, str], path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    completed = maf(workspace, env, "db", "backup", "--output", str(path), *extra)
    assert completed.returncode == 0, completed.stderr
    return completed


def add_task(workspace: Workspace, env: dict[str, str], task_id: str) -> None:
    completed = maf(workspace, env, "task", "add", "--id", task_id)
    assert completed.returncode == 0, completed.stderr


def task_ids(workspace: Workspace, env: dict[str, str]) -> list[str]:
    with store_of_env(env, workspace.main) as store:
        return sorted(task.id for task in store.read(lambda t: t.list_tasks()))


def dated(path: Path, minute: int) -> Path:
    os.utime(path, (OLD + 60 * minute, OLD + 60 * minute))
    return path


def damaged(path: Path) -> Path:
    """The backup cut to half its length: still recognisably pytest-maf's, but failing verification."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def foreign_files(folder: Path, schema_to_dump: str | None = None) -> dict[str, bytes]:
    """Files beside the backups that pytest-maf did not make, dated older than every backup."""
    (folder / "notes.txt").write_text("restore drill on Monday\n")
    with closing(sqlite3.connect(folder / "other-app.db")) as other:
        other.execute("CREATE TABLE tasks (id TEXT)")  # even with a table of the same name
        other.commit()
    with closing(sqlite3.connect(folder / "unmarked.db")) as unmarked:
        unmarked.execute("PRAGMA application_id = 1234")
        unmarked.execute("CREATE TABLE x (a)")
        unmarked.commit()
    with gzip.open(folder / "logs.gz", "wb") as packed:
        packed.write(b"not a database\n")
    if schema_to_dump is not None:
        subprocess.run(
            ["pg_dump", "-Fc", f"--schema={schema_to_dump}", "-f", str(folder / "other.dump"), server_url()],
            check=True, timeout=60,
        )
    made = [folder / name for name in ("notes.txt", "other-app.db", "unmarked.db", "logs.gz", "other.dump")]
    for path in made:
        if path.exists():
            dated(path, -100)
    return {path.name: path.read_bytes() for path in made if path.exists()}


@pytest.mark.slow  # five backups (pg_dump and its verification on PostgreSQL)
def test_keep_leaves_exactly_the_n_newest_backups_and_every_foreign_file(
    workspace: Workspace, store_env: dict[str, str], backend: str, tmp_path: Path
) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    with scratch_schema(server_url()) if backend == "postgres" else nullcontext() as other_schema:
        if other_schema is not None:  # another application's pg_dump: a schema that is not a store
            import psycopg

            with closing(psycopg.connect(server_url(), autocommit=True)) as connection:
                connection.execute(f'CREATE SCHEMA "{other_schema}"')
                connection.execute(f'CREATE TABLE "{other_schema}".tasks (id TEXT)')
        foreign = foreign_files(folder, other_schema)
    for n in range(1, 5):
        backup(workspace, store_env, folder / f"runtime-{n}.bak")
        dated(folder / f"runtime-{n}.bak", n)
    (folder / "link.bak").symlink_to(folder / "runtime-1.bak")

    made = backup(workspace, store_env, folder / "runtime-5.bak", "--keep", "3")

    assert "kept the 3 newest" in made.stdout and "deleted 2: runtime-2.bak, runtime-1.bak" in made.stdout
    left = {path.name for path in folder.iterdir()}
    assert left == {"runtime-5.bak", "runtime-4.bak", "runtime-3.bak", "link.bak", *foreign}
    assert {name: (folder / name).read_bytes() for name in foreign} == foreign


def test_keep_never_counts_the_live_store_or_a_restore_s_kept_copy(workspace: Workspace) -> None:
    store_folder = workspace.main / ".maf"
    kept_copy = store_folder / "runtime.db.before-restore-20260101T000000"
    shutil.copyfile(store_folder / "runtime.db", kept_copy)
    for path in (store_folder / "runtime.db", kept_copy):
        dated(path, 0)

    backup(workspace, {}, store_folder / "backup-1.db", "--keep", "1")
    backup(workspace, {}, store_folder / "backup-2.db", "--keep", "1")

    assert (store_folder / "runtime.db").is_file() and kept_copy.is_file()
    assert not (store_folder / "backup-1.db").exists() and (store_folder / "backup-2.db").is_file()
    assert maf(workspace, {}, "task", "list").returncode == 0


def test_keep_never_deletes_another_repository_s_store_in_the_same_folder(workspace: Workspace, tmp_path: Path) -> None:
    folder = tmp_path / "stores"
    folder.mkdir()
    other = folder / "other-project.db"
    assert maf(workspace, {}, "setup", "--db", str(other)).returncode == 0
    add_task(workspace, {"MAF_DB_PATH": str(other)}, "theirs")
    dated(other, 0)  # older than any backup: first in line to be pruned were it one

    made = backup(workspace, {}, folder / "mine.db", "--keep", "1")
    listed = maf(workspace, {}, "db", "backups", "--dir", str(folder), "--json")

    assert "deleted" not in made.stdout and other.is_file()
    with closing(sqlite3.connect(other)) as connection:
        assert connection.execute("SELECT id FROM tasks").fetchall() == [("theirs",)]
    assert [Path(row["path"]).name for row in json.loads(listed.stdout)["backups"]] == ["mine.db"]


def test_a_store_copy_with_a_rollback_journal_beside_it_is_no_backup(workspace: Workspace, tmp_path: Path) -> None:
    # A -journal beside a database is a transaction under way (or one to roll back): the file is in use.
    add_task(workspace, {}, "t1")
    folder = tmp_path / "backups"
    backup(workspace, {}, folder / "mine.db")
    shutil.copyfile(folder / "mine.db", folder / "in-use.db")
    (folder / "in-use.db-journal").write_bytes(b"")

    listed = maf(workspace, {}, "db", "backups", "--dir", str(folder), "--json")
    refused = maf(workspace, {}, "db", "backup", "--output", str(folder / "in-use.db"))

    assert [Path(row["path"]).name for row in json.loads(listed.stdout)["backups"]] == ["mine.db"]
    assert refused.returncode == 2 and "is a database in use (in-use.db-journal is beside it)" in refused.stderr


def test_a_backup_never_replaces_a_store_in_use_a_pipe_or_a_device(
    workspace: Workspace, store_env: dict[str, str], tmp_path: Path
) -> None:
    other = tmp_path / "other-project" / "runtime.db"
    assert maf(workspace, {}, "setup", "--db", str(other)).returncode == 0
    add_task(workspace, {"MAF_DB_PATH": str(other)}, "theirs")  # a store in use: its lock file is beside it
    fifo = tmp_path / "backup.fifo"
    os.mkfifo(fifo)

    for target in (other, fifo):
        refused = maf(workspace, store_env, "db", "backup", "--output", str(target))
        one_line_refusal(refused, 2)
    assert "is a database in use" in maf(workspace, store_env, "db", "backup", "--output", str(other)).stderr

    assert fifo.is_fifo()
    with closing(sqlite3.connect(other)) as connection:
        assert connection.execute("SELECT id FROM tasks").fetchall() == [("theirs",)]


def test_a_backup_through_a_symbolic_link_replaces_the_file_it_names(workspace: Workspace, tmp_path: Path) -> None:
    target = tmp_path / "backups" / "nightly.db"
    target.parent.mkdir()
    backup(workspace, {}, target)  # last night's backup, to be replaced
    add_task(workspace, {}, "t1")
    link = tmp_path / "latest.db"
    link.symlink_to(target)

    backup(workspace, {}, link)

    assert link.is_symlink() and link.resolve() == target
    with closing(sqlite3.connect(target)) as connection:
        assert connection.execute("SELECT id FROM tasks").fetchall() == [("t1",)]


def test_a_backup_through_a_link_to_a_file_not_made_yet_or_to_an_empty_file_makes_it(
    workspace: Workspace, tmp_path: Path
) -> None:
    add_task(workspace, {}, "t1")
    (tmp_path / "backups").mkdir()
    link = tmp_path / "latest.db"
    link.symlink_to(tmp_path / "backups" / "nightly.db")  # the file it names is made by the backup
    empty = tmp_path / "backups" / "from-mktemp.db"
    empty.touch()

    for output in (link, empty):
        backup(workspace, {}, output)  # before this stop's review: "exists and is no pytest-maf backup"
        with closing(sqlite3.connect(output)) as connection:
            assert connection.execute("SELECT id FROM tasks").fetchall() == [("t1",)]


def test_a_backup_named_with_terminal_escapes_is_shown_escaped(workspace: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "a\x1b[2Jb.db"  # ESC [2J clears the terminal it reaches

    made = backup(workspace, {}, path)
    checked = maf(workspace, {}, "db", "verify-backup", str(path))
    damaged(path)
    failed = maf(workspace, {}, "db", "verify-backup", str(path))

    assert checked.returncode == 0 and failed.returncode == 1
    for shown in (made.stdout, checked.stdout, failed.stderr):
        assert "\x1b" not in shown and "a\\x1b[2Jb.db" in shown, shown


def test_keep_never_deletes_a_backup_made_while_it_ran(workspace: Workspace, tmp_path: Path) -> None:
    """Two `maf db backup --keep 1` at once: neither deletes the other's fresh backup (and so its own)."""
    folder = tmp_path / "backups"
    folder.mkdir()
    backup(workspace, {}, folder / "old.db")
    dated(folder / "old.db", 0)
    beside = backup(workspace, {}, folder / "beside.db")
    later = time.time() + 3600  # finished by the run beside this one after this one began
    os.utime(folder / "beside.db", (later, later))

    made = backup(workspace, {}, folder / "mine.db", "--keep", "1")

    assert "deleted 1: old.db" in made.stdout, made.stdout
    assert {path.name for path in folder.iterdir()} == {"mine.db", "beside.db"}, beside.stdout


def test_listing_shows_size_time_and_verification_of_our_backups_only(
    workspace: Workspace, store_env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    add_task(workspace, store_env, "t1")
    good = folder / "good.bak"
    backup(workspace, store_env, good)
    dated(good, 1)
    bad = folder / "bad.bak"
    backup(workspace, store_env, bad)
    dated(damaged(bad), 2)
    foreign_files(folder)

    listed = maf(workspace, store_env, "db", "backups", "--dir", str(folder), "--json")

    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    assert [(Path(row["path"]).name, row["verified"]) for row in report["backups"]] == [("bad.bak", False), ("good.bak", True)]
    by_name = {Path(row["path"]).name: row for row in report["backups"]}
    for name in ("good.bak", "bad.bak"):
        status = (folder / name).stat()
        assert by_name[name]["bytes"] == status.st_size
        assert by_name[name]["modified_at"] == status.st_mtime_ns // 1_000_000
    assert by_name["good.bak"]["problem"] is None and by_name["bad.bak"]["problem"]
    assert by_name["good.bak"]["rows"] == 3  # t1: its tasks, task_options and events rows

    text = maf(workspace, store_env, "db", "backups", "--dir", str(folder))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["BACKUP", "KIND", "BYTES", "TIME", "VERIFIED", "ROWS"]
    assert lines[1].startswith("bad.bak") and "NO: " in lines[1] and "2023-11-14T22:15:20Z" in lines[1]
    assert lines[2].startswith("good.bak") and " yes " in lines[2] and "2023-11-14T22:14:20Z" in lines[2]
    assert len(lines) == 3  # no foreign file listed


@pytest.mark.slow  # three backups, then a restore
def test_restore_latest_restores_the_newest_verified_backup_passing_over_a_damaged_newer_one(
    workspace: Workspace, store_env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "backups"
    add_task(workspace, store_env, "t1")
    backup(workspace, store_env, folder / "older.bak")
    dated(folder / "older.bak", 1)
    add_task(workspace, store_env, "t2")
    backup(workspace, store_env, folder / "newest-verified.bak")
    dated(folder / "newest-verified.bak", 2)
    add_task(workspace, store_env, "t3")
    backup(workspace, store_env, folder / "newer-but-damaged.bak")
    dated(damaged(folder / "newer-but-damaged.bak"), 3)
    add_task(workspace, store_env, "t4")

    restored = maf(workspace, store_env, "db", "restore", "latest", "--dir", str(folder))

    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.splitlines()[0].startswith("skipped newer-but-damaged.bak: it fails verification")
    assert "from " + str(folder / "newest-verified.bak") in restored.stdout
    assert task_ids(workspace, store_env) == ["t1", "t2"]


@pytest.mark.parametrize("contents", ["nothing", "only-damaged"])
def test_restore_latest_without_a_verified_backup_is_refused_and_changes_nothing(
    workspace: Workspace, store_env: dict[str, str], tmp_path: Path, contents: str
) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    add_task(workspace, store_env, "t1")
    if contents == "only-damaged":
        backup(workspace, store_env, folder / "damaged.bak")
        damaged(folder / "damaged.bak")
    foreign_files(folder)
    add_task(workspace, store_env, "t2")
    with store_of_env(store_env, workspace.main) as store:
        before = store_rows(store)
    files_before = sorted(path.name for path in workspace.main.joinpath(".maf").iterdir())

    refused = maf(workspace, store_env, "db", "restore", "latest", "--dir", str(folder))

    one_line_refusal(refused, 2)
    expected = "passes verification" if contents == "only-damaged" else "no postgresql backup" if store_env else "no sqlite backup"
    assert expected in refused.stderr and "nothing was restored" in refused.stderr
    with store_of_env(store_env, workspace.main) as store:
        assert store_rows(store) == before
    assert sorted(path.name for path in workspace.main.joinpath(".maf").iterdir()) == files_before


@pytest.mark.parametrize(
    "args, said",
    [
        (["db", "backup", "--output", "{folder}/new.bak", "--keep", "0"], "--keep"),
        (["db", "backup", "--output", "{folder}/new.bak", "--keep", "-1"], "--keep"),
        (["db", "backup", "--output", "{folder}/new.bak", "--keep", "100000000000000000000"], "--keep"),
        (["db", "backup", "--output", "{folder}/new.bak", "--keep", "three"], "--keep"),
        (["db", "restore", "{folder}/no-such-backup.bak"], "no-such-backup.bak"),
        (["db", "restore", "latest", "--dir", "{folder}/no-such-folder"], "no-such-folder"),
    ],
    ids=["keep-0", "keep-negative", "keep-huge", "keep-word", "restore-missing-file", "restore-latest-missing-folder"],
)
def test_hostile_backup_arguments_are_refused_with_nothing_changed(
    workspace: Workspace, store_env: dict[str, str], tmp_path: Path, args: list[str], said: str
) -> None:
    folder = tmp_path / "backups"
    backup(workspace, store_env, folder / "runtime-1.bak")
    for n in (2, 3):  # copies are backups too: a --keep that slipped through would delete two
        shutil.copyfile(folder / "runtime-1.bak", folder / f"runtime-{n}.bak")
    add_task(workspace, store_env, "t1")
    files_before = {path.name: path.read_bytes() for path in folder.iterdir()}
    with store_of_env(store_env, workspace.main) as store:
        rows_before = store_rows(store)

    refused = maf(workspace, store_env, *(arg.format(folder=folder) for arg in args))

    one_line_refusal(refused, 2)
    assert said in refused.stderr
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == files_before
    with store_of_env(store_env, workspace.main) as store:
        assert store_rows(store) == rows_before


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc, where no file can be made")
def test_a_backup_that_cannot_be_written_names_the_output_not_a_scratch_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_maf.cli import main
    from pytest_maf.store import open_store

    db = tmp_path / "runtime.db"
    open_store(db, create=True).close()

    assert main(["db", "backup", "--db", str(db), "--output", "/proc/x.db"]) == 2
    err = capsys.readouterr().err
    # Before: "No such file or directory: /proc/.maf-backup-66fb...", a folder the user never named.
    assert "/proc/x.db" in err and ".maf-backup-" not in err
