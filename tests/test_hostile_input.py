"""Hostile and careless input against every `maf` subcommand, through the installed command.

Each case gives one line on stderr with the documented exit code, never a
traceback, and on refusal leaves the database and the repository's files
byte for byte as they were. Every command runs with a deadline.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from workspace import Workspace, maf_command

BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n" for previous, name in zip("abcdefgh", "bcdefghi")
)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under the repository (and its store) with a digest of its bytes."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and ".git" not in path.relative_to(root).parts[:1]:
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def one_line_refusal(completed: subprocess.CompletedProcess[str], code: int) -> None:
    assert completed.returncode == code, (completed.returncode, completed.stdout, completed.stderr)
    assert "Traceback" not in completed.stderr + completed.stdout
    lines = [line for line in completed.stderr.splitlines() if line.startswith("maf")]
    assert len(lines) == 1, completed.stderr


Setup = Callable[[Workspace], None]


def nothing(workspace: Workspace) -> None:
    pass


def notes_file(workspace: Workspace) -> None:
    workspace.write(workspace.main, "notes.txt", "my notes\n")


def mail_root_is_a_file(workspace: Workspace) -> None:
    workspace.write(workspace.main, ".agent-mail", "not a folder\n")


def config_folder_is_a_file(workspace: Workspace) -> None:
    workspace.write(workspace.main, "maf-config", "not a folder\n")


def unrelated_baseline(workspace: Workspace) -> None:
    workspace.write(workspace.main, "baseline.json", '{"metrics": {"unknown": 1}}')


def pre_push_hook_is_a_folder(workspace: Workspace) -> None:
    hooks = workspace.main / workspace.git(workspace.main, "rev-parse", "--git-path", "hooks").strip()
    (hooks / "pre-push").mkdir(parents=True)


def alias_bomb(workspace: Workspace) -> None:
    workspace.write(workspace.main, "maf-config/default.yaml", BILLION_LAUGHS)


def a_section_twice(workspace: Workspace) -> None:
    workspace.write(workspace.main, "maf-config/default.yaml", "tasks:\n  max_attempts: 2\ntasks:\n  lease_ttl_seconds: 60\n")


def a_key_twice_in_json(workspace: Workspace) -> None:
    workspace.write(workspace.main, "maf-config/default.json", '{"tasks": {"max_attempts": 2, "max_attempts": 5}}')


# (id, set-up, argv, exit code, words the one line must contain)
CASES: list[tuple[str, Setup, list[str], int, str]] = [
    ("alias-bomb-validate", alias_bomb, ["config", "validate"], 2, "aliases"),
    # before: "valid", and the first section's settings silently dropped
    ("a-yaml-section-twice", a_section_twice, ["config", "validate"], 2, "'tasks' is given twice"),
    ("a-json-key-twice", a_key_twice_in_json, ["config", "show"], 2, "'max_attempts' is given twice"),
    ("alias-bomb-show", alias_bomb, ["config", "show"], 2, "aliases"),
    ("alias-bomb-guard", alias_bomb, ["guard"], 2, "aliases"),
    ("priority-past-int64", nothing, ["task", "add", "--priority", "100000000000000000000"], 2, "priority"),
    ("max-attempts-past-int64", nothing, ["task", "add", "--max-attempts", "100000000000000000000"], 2, "attempts"),
    ("payload-nan", nothing, ["task", "add", "--payload", "NaN"], 2, "NaN"),
    ("payload-infinity", nothing, ["task", "add", "--payload", '{"x": Infinity}'], 2, "Infinity"),
    ("payload-nested-60000", nothing, ["task", "add", "--payload", "[" * 60_000 + "]" * 60_000], 2, "nested"),
    # before, stored as {} and shown so: not what was given
    ("payload-null", nothing, ["task", "add", "--payload", "null"], 2, "null is no value to store: leave the option out"),
    # 64 levels is the limit the message names: 64 objects around a number are taken, 65 are not (before, 64 were refused)
    ("payload-nested-65", nothing, ["task", "add", "--payload", '{"a":' * 65 + "1" + "}" * 65], 2,
     "is nested more than 64 levels deep"),  # one argument is at most 128 KiB
    ("claim-ttl-nan", nothing, ["task", "claim", "--agent", "a", "--ttl", "nan"], 2, "--ttl"),
    ("claim-ttl-huge", nothing, ["task", "claim", "--agent", "a", "--ttl", "1e308"], 2, "--ttl"),
    ("unknown-task", nothing, ["task", "show", "nope"], 2, "no task"),
    ("evidence-of-an-unknown-task", nothing, ["evidence", "list", "--task", "nope", "--json"], 2, "no task with id 'nope'"),
    ("junit-over-the-store", nothing, ["evidence", "export", "--junit", ".maf/runtime.db"], 2, "must not overwrite"),
    ("junit-over-the-wal", nothing, ["evidence", "export", "--junit", ".maf/runtime.db-wal"], 2, "must not overwrite"),
    ("junit-into-a-directory", nothing, ["evidence", "export", "--junit", "src"], 2, "is a directory"),
    ("junit-empty-name", nothing, ["evidence", "export", "--junit", ""], 2, "give a file name"),
    ("health-report-over-the-store", nothing, ["health-check", "--output", ".maf/runtime.db"], 2, "must not overwrite"),
    ("health-report-into-a-directory", nothing, ["health-check", "--output", "src"], 2, "is a directory"),
    ("config-report-over-the-store", nothing, ["config", "report", "--output", ".maf/runtime.db-shm"], 2, "must not overwrite"),
    ("config-report-empty-name", nothing, ["config", "report", "--output", ""], 2, "give a file name"),
    ("init-where-the-mail-root-is-a-file", mail_root_is_a_file, ["init"], 2, "is a file"),
    ("init-where-maf-config-is-a-file", config_folder_is_a_file, ["init"], 2, "is a file"),
    ("pattern-with-an-empty-class", nothing, ["reservation", "acquire", "lib/[z-a]"], 2, "matches nothing"),
    ("pattern-too-wild", nothing, ["reservation", "acquire", "*a" * 40], 2, "wildcards"),
    ("pattern-too-long", nothing, ["reservation", "acquire", "d/" * 600 + "x"], 2, "characters long"),
    ("pattern-with-a-posix-class", nothing, ["reservation", "acquire", "cls/[[:alpha:]]"], 2, "POSIX"),
    ("bench-against-a-baseline-of-nothing-it-measures", unrelated_baseline, ["bench", "--compare", "baseline.json"], 2, "none of the figures"),
    ("install-hooks-over-a-folder", pre_push_hook_is_a_folder, ["install-hooks"], 2, "is a folder"),
    ("metrics-on-an-empty-host", nothing, ["metrics", "serve", "--host", ""], 2, "every interface"),
    ("db-path-with-a-control-character", nothing, ["--db", "a\x01b.db", "task", "list"], 2, "control characters"),
]



# The operations commands (`maf db ...`, `maf metrics serve`, `maf bench`, `maf load-test`).


def no_store(workspace: Workspace) -> None:
    for path in (workspace.main / ".maf").glob("runtime.db*"):
        path.unlink()


def backup_then_no_maf_folder(workspace: Workspace) -> None:
    assert workspace.maf(workspace.main, "db", "backup", "--output", "backup.db").returncode == 0
    import shutil

    shutil.rmtree(workspace.main / ".maf")


def empty_backup(workspace: Workspace) -> None:
    workspace.write(workspace.main, "empty.db", "")


def garbage_store(workspace: Workspace) -> None:
    import random

    no_store(workspace)
    (workspace.main / ".maf" / "runtime.db").write_bytes(random.Random(5).randbytes(20_000))


def malformed_store(workspace: Workspace) -> None:
    """A store whose header is sound and some of whose pages are overwritten."""
    from pytest_maf import tasks
    from pytest_maf.store import open_store

    db = workspace.main / ".maf" / "runtime.db"
    with open_store(db) as store:
        for n in range(600):
            tasks.add_task(store, task_id=f"t{n:04}", payload={"note": "x" * 200})
        store.pragma("wal_checkpoint(TRUNCATE)")
    for suffix in ("-wal", "-shm"):
        (db.parent / f"runtime.db{suffix}").unlink(missing_ok=True)
    data = bytearray(db.read_bytes())
    for number in range(10, len(data) // 4096 - 2, 7):
        data[number * 4096 : (number + 1) * 4096] = b"\xde\xad\xbe\xef" * 1024
    db.write_bytes(bytes(data))


def not_json_baseline(workspace: Workspace) -> None:
    workspace.write(workspace.main, "baseline.json", "claim: 1 ms\n")


def not_a_baseline(workspace: Workspace) -> None:
    workspace.write(workspace.main, "baseline.json", '{"metrics": {"claim": "fast"}}')


def baseline_under_a_nanosecond(workspace: Workspace) -> None:
    workspace.write(workspace.main, "baseline.json", '{"metrics": {"claim_to_finish_cycle": 1e-320}}')


CASES += [
    # before, written over git's index: "fatal: index file corrupt"
    ("health-report-over-git-s-index", nothing, ["health-check", "--output", ".git/index"], 2, "is in git's own folder (.git)"),
    ("backup-into-git-s-folder", nothing, ["db", "backup", "--output", ".git/backup.db"], 2, "is in git's own folder (.git)"),
    # before, both ran on a scratch SQLite file and reported its figures as if for the server named
    ("load-test-told-a-server", nothing, ["load-test", "--db", "postgresql://maf@db.invalid/agents", "--duration", "1"], 2,
     "maf load-test measures on a scratch SQLite file, or the new one --database names, never on --db's store"),
    ("bench-told-a-store", nothing, ["bench", "--db", "other.db", "--output", "b.json"], 2,
     "maf bench measures on a scratch SQLite file of its own, never on --db's store"),
    # before, "ratio": Infinity under --json: no JSON at all
    ("bench-against-a-baseline-under-a-nanosecond", baseline_under_a_nanosecond, ["bench", "--compare", "baseline.json"],
     2, "claim_to_finish_cycle under a nanosecond is no time `maf bench` measured"),
    ("backup-over-the-store", nothing, ["db", "backup", "--output", ".maf/runtime.db"], 2, "must not overwrite"),
    ("backup-over-the-wal", nothing, ["db", "backup", "--output", ".maf/runtime.db-wal"], 2, "must not overwrite"),
    ("backup-over-the-shm", nothing, ["db", "backup", "--output", ".maf/runtime.db-shm"], 2, "must not overwrite"),
    ("backup-into-a-directory", nothing, ["db", "backup", "--output", "src"], 2, "is a directory"),
    # before, "newdir/ is a directory" of a folder that is not there
    ("backup-into-a-folder-not-there", nothing, ["db", "backup", "--output", "newdir/"], 2,
     "newdir/ names a folder (it ends in a slash); give --output the name of a file"),
    # standard output is a pipe here: before, "No such file or directory: /proc/PID/fd/.maf-backup-..."
    ("backup-to-standard-output-a-pipe", nothing, ["db", "backup", "--output", "/dev/stdout"], 2, "not a regular file"),
    ("backup-empty-name", nothing, ["db", "backup", "--output", ""], 2, "give a file name"),
    ("backup-without-a-store", no_store, ["db", "backup", "--output", "b.db"], 2, "maf setup"),
    ("backup-of-a-malformed-store", malformed_store, ["db", "backup", "--output", "b.db"], 2, "malformed"),
    ("recover-over-the-store", nothing, ["db", "recover", "--output", ".maf/runtime.db"], 2, "must not overwrite"),
    ("recover-over-the-wal", nothing, ["db", "recover", "--output", ".maf/runtime.db-wal"], 2, "must not overwrite"),
    ("recover-into-a-directory", nothing, ["db", "recover", "--output", "src"], 2, "is a directory"),
    ("recover-without-a-store", no_store, ["db", "recover"], 2, "no runtime database"),
    ("recover-salvaging-nothing", garbage_store, ["db", "recover"], 1, "recovered no row"),
    ("restore-the-live-store", nothing, ["db", "restore", ".maf/runtime.db"], 2, "not a backup"),
    ("restore-without-the-maf-folder", backup_then_no_maf_folder, ["db", "restore", "backup.db"], 2, "maf setup"),
    ("restore-a-missing-backup", nothing, ["db", "restore", "missing.db"], 2, "no such file"),
    ("restore-an-empty-backup", empty_backup, ["db", "restore", "empty.db"], 2, "is empty"),
    ("restore-a-file-that-is-no-backup", not_json_baseline, ["db", "restore", "baseline.json"], 2, "nothing was restored"),
    ("restore-a-directory", nothing, ["db", "restore", "src"], 2, "is a directory"),
    ("verify-a-directory", nothing, ["db", "verify-backup", "src"], 2, "is a directory"),
    ("verify-a-missing-file", nothing, ["db", "verify-backup", "missing.db"], 2, "no such file"),
    ("cleanup-days-past-int64", nothing, ["db", "cleanup", "--days", "100000000000000000000"], 2, "--days"),
    ("cleanup-days-negative", nothing, ["db", "cleanup", "--days", "-1"], 2, "--days"),
    ("cleanup-without-a-store", no_store, ["db", "cleanup", "--days", "1", "--apply"], 2, "maf setup"),
    ("optimize-without-a-store", no_store, ["db", "optimize"], 2, "maf setup"),
    ("metrics-port-past-65535", nothing, ["metrics", "serve", "--port", "99999"], 2, "--port"),
    ("metrics-port-negative", nothing, ["metrics", "serve", "--port", "-1"], 2, "--port"),
    ("bench-compare-missing", nothing, ["bench", "--compare", "missing.json"], 2, "no baseline"),
    ("bench-compare-a-directory", nothing, ["bench", "--compare", "src"], 2, "not a file"),
    ("bench-compare-not-json", not_json_baseline, ["bench", "--compare", "baseline.json"], 2, "not valid JSON"),
    ("bench-compare-not-a-baseline", not_a_baseline, ["bench", "--compare", "baseline.json"], 2, "not a baseline"),
    ("bench-output-over-the-store", nothing, ["bench", "--output", ".maf/runtime.db"], 2, "must not overwrite"),
    ("bench-output-over-its-baseline", not_a_baseline, ["bench", "--compare", "baseline.json", "--output", "baseline.json"], 2, "not a baseline"),
    ("bench-threshold-nan", nothing, ["bench", "--output", "b.json", "--threshold", "nan"], 2, "--threshold"),
    # before, "cannot use the runtime database notes.txt: ... it is damaged: run `maf db recover`"
    ("load-test-into-a-text-file", notes_file, ["load-test", "--database", "notes.txt", "--duration", "0.2"], 2,
     "notes.txt is not a SQLite file: --database names a new or scratch file"),
    # before, "give a file name for --database, such as src/report"
    ("load-test-into-a-folder", nothing, ["load-test", "--database", "src", "--duration", "0.2"], 2,
     "src is a directory; give --database the name of a file"),
    ("load-test-duration-negative", nothing, ["load-test", "--duration", "-1"], 2, "--duration"),
    ("load-test-duration-nan", nothing, ["load-test", "--duration", "nan"], 2, "--duration"),
    # before, "a lease TTL must be above 0, got 0 ms": not what was given
    ("claim-ttl-a-nanosecond", nothing, ["task", "claim", "--ttl", "1e-9", "--agent", "a"], 2,
     "--ttl 1e-09 is less than the thousandth of a second it is counted in"),
    # before, a pass with nothing measured: 0 cycles, every invariant "ok", exit 0
    ("load-test-duration-a-nanosecond", nothing, ["load-test", "--duration", "1e-9"], 2,
     "--duration must be a number of seconds from 0.1 (a shorter run measures nothing)"),
    ("load-test-duration-infinite", nothing, ["load-test", "--duration", "inf"], 2, "--duration"),
    ("load-test-concurrent-100000", nothing, ["load-test", "--concurrent", "100000", "--duration", "1"], 2, "--concurrent"),
    ("load-test-concurrent-0", nothing, ["load-test", "--concurrent", "0", "--duration", "1"], 2, "--concurrent"),
    ("load-test-into-the-store", nothing, ["load-test", "--database", ".maf/runtime.db", "--duration", "1"], 2, "must not overwrite"),
]


def a_pipe(workspace: Workspace) -> None:
    os.mkfifo(workspace.main / "pipe")  # nothing ever writes to it: a read of it would wait for ever


# A device or a pipe given as an input file: refused before a byte is read (/dev/zero never ends: it
# filled the disk, or the memory, before; a pipe with no writer hung the command).
CASES += [
    ("verify-the-zero-device", nothing, ["db", "verify-backup", "/dev/zero"], 2, "not a regular file"),
    ("verify-a-pipe", a_pipe, ["db", "verify-backup", "pipe"], 2, "not a regular file"),
    ("restore-the-zero-device", nothing, ["db", "restore", "/dev/zero"], 2, "not a regular file"),
    ("restore-a-pipe", a_pipe, ["db", "restore", "pipe"], 2, "not a regular file"),
    ("config-restore-the-zero-device", nothing, ["config", "restore", "/dev/zero"], 2, "not a regular file"),
    ("config-restore-a-pipe", a_pipe, ["config", "restore", "pipe"], 2, "not a regular file"),
    ("config-diff-the-zero-device", nothing, ["config", "diff", "--snapshot", "/dev/zero"], 2, "not a regular file"),
    ("config-validate-a-pipe", a_pipe, ["config", "validate", "--config", "pipe"], 2, "not a regular file"),
    ("config-validate-a-folder", nothing, ["config", "validate", "--config", "src"], 2, "a folder"),
]


def another_store_and_a_backup(workspace: Workspace) -> None:
    for argv in (["setup", "--db", "other.db"], ["db", "backup", "--output", "old-backup.db"]):
        made = workspace.maf(workspace.main, *argv, agent="alice")
        assert made.returncode == 0, made.stderr


# A text, JSON or HTML output is never written over a database: not the store of another --db (the
# configured one is protected by name), not a backup.
CASES += [
    ("report-over-the-store-another-db-names", another_store_and_a_backup,
     ["report", "--db", "other.db", "--html", ".maf/runtime.db"], 2, "choose another file"),
    ("evidence-export-over-a-backup", another_store_and_a_backup,
     ["evidence", "export", "--output", "old-backup.db"], 2, "is a SQLite database"),
    ("config-snapshot-over-another-store", another_store_and_a_backup,
     ["config", "snapshot", "--output", "other.db"], 2, "choose another file"),
    ("db-export-over-a-backup", another_store_and_a_backup,
     ["db", "export", "--output", "old-backup.db"], 2, "is a SQLite database"),
    # A new database is never made where SQLite keeps another one's journal or WAL: it would be deleted.
    ("db-copy-into-the-stores-journal", nothing, ["db", "copy", ".maf/runtime.db", ".maf/runtime.db-journal"], 2,
     "keeps a file of its own"),
    ("setup-at-another-stores-wal", another_store_and_a_backup, ["setup", "--db", "other.db-wal"], 2,
     "keeps a file of its own"),
    # an existing one too: before, "file is not a database; it is damaged: run `maf db recover`"
    ("task-list-on-the-stores-lock-file", nothing, ["task", "list", "--db", ".maf/runtime.db.lock"], 2,
     "keeps a file of its own"),
]


def an_application_database_notes_and_a_restores_copy(workspace: Workspace) -> None:
    import sqlite3

    application = sqlite3.connect(workspace.main / "app.db")
    application.execute("CREATE TABLE customers (name TEXT)")
    application.commit()
    application.close()
    (workspace.main / "notes.txt").write_text("notes\n")
    kept = workspace.main / ".maf" / "runtime.db.before-restore-20260101T000000Z"
    kept.write_bytes((workspace.main / ".maf" / "runtime.db").read_bytes())


# A backup replaces only an older backup: before, it replaced any file --output named.
CASES += [
    ("backup-over-an-application-database", an_application_database_notes_and_a_restores_copy,
     ["db", "backup", "--output", "app.db"], 2, "is no pytest-maf backup"),
    ("backup-over-notes", an_application_database_notes_and_a_restores_copy,
     ["db", "backup", "--output", "notes.txt", "--gzip"], 2, "is no pytest-maf backup"),
    ("backup-over-the-copy-a-restore-kept", an_application_database_notes_and_a_restores_copy,
     ["db", "backup", "--output", ".maf/runtime.db.before-restore-20260101T000000Z"], 2, "`maf db restore` kept"),
]


# An option given an empty value (an unset shell variable: --task="$TASK") is refused; before, a filter read
# it as "every" (an empty evidence report that passed CI) and a file option as none (built-in defaults).
CASES += [
    (f"empty-{'-'.join(argv[:-1])}{argv[-1].split('=')[0]}", nothing, argv, 2, "an empty value")
    for argv in (
        ["evidence", "list", "--task="], ["evidence", "export", "--output", "ev.xml", "--task="],
        ["reservation", "list", "--agent="], ["config", "validate", "--config="], ["config", "show", "--config="],
        ["config", "diff", "--snapshot="], ["history", "--kind="], ["history", "--task="], ["history", "--agent="],
        ["task", "list", "--state="], ["task", "add", "--id="], ["db", "backups", "--dir="],
    )
]


# Messages that said something else: ". is a directory" for an empty file name, "run maf db recover" for a
# text file as a copy's destination, an over-long TTL shown rounded to the maximum, Arabic-Indic digits taken.
CASES += [
    ("copy-into-a-text-file", an_application_database_notes_and_a_restores_copy,
     ["db", "copy", ".maf/runtime.db", "notes.txt"], 2, "notes.txt exists and is no database"),
    ("copy-into-an-empty-name", nothing, ["db", "copy", ".maf/runtime.db", ""], 2, "argument DEST: an empty value"),
    ("verify-an-empty-name", nothing, ["db", "verify-backup", ""], 2, "argument FILE: an empty value"),
    ("restore-an-empty-name", nothing, ["db", "restore", ""], 2, "argument FILE: an empty value"),
    ("renew-past-the-longest-ttl", nothing, ["task", "renew", "t1", "--attempt", "1", "--ttl", "14400.0000001"], 2,
     "--ttl 14400.0000001 is above the maximum of 14400 seconds"),
    ("history-since-arabic-indic-digits", nothing, ["history", "--since", "\u0661h"], 2, "is not a duration"),
]


# Agent-mail: no symbolic link is followed out of the mail root, and a message id is never a glob.


def _link_out(workspace: Workspace, link: str) -> None:
    outside = workspace.main.parent / "outside"
    outside.mkdir(exist_ok=True)
    path = workspace.main / link
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(outside, target_is_directory=True)


def mail_root_linked_out(workspace: Workspace) -> None:
    _link_out(workspace, ".agent-mail")


def messages_linked_out(workspace: Workspace) -> None:
    _link_out(workspace, ".agent-mail/messages")


def inbox_linked_out(workspace: Workspace) -> None:
    _link_out(workspace, ".agent-mail/messages/codex-senior")


def outbox_linked_out(workspace: Workspace) -> None:
    _link_out(workspace, ".agent-mail/outbox")


def one_message(workspace: Workspace) -> None:
    assert workspace.maf(workspace.main, "mail", "send", "--to", "bob", "--subject", "s", "--body", "b", agent="alice").returncode == 0


MAIL_TO_SENIOR = ["mail", "send", "--to", "codex-senior", "--subject", "s", "--body", "b"]
ESCALATE_TO_SENIOR = ["escalate", "--error-context", "stuck", "--bead-id", "bd-1", "--target", "codex-senior"]
CASES += [
    ("mail-send-through-a-mail-root-linked-out", mail_root_linked_out, MAIL_TO_SENIOR, 2, "outside the repository"),
    ("mail-send-through-messages-linked-out", messages_linked_out, MAIL_TO_SENIOR, 2, "outside the mail root"),
    ("mail-send-into-an-inbox-linked-out", inbox_linked_out, MAIL_TO_SENIOR, 2, "messages/codex-senior is a symbolic link"),
    ("mail-send-into-an-outbox-linked-out", outbox_linked_out, MAIL_TO_SENIOR, 2, "outbox is a symbolic link"),
    ("escalate-into-an-inbox-linked-out", inbox_linked_out, ESCALATE_TO_SENIOR, 2, "outside the mail root"),
    ("escalate-into-an-outbox-linked-out", outbox_linked_out, ESCALATE_TO_SENIOR, 2, "outside the mail root"),
    ("escalate-dry-run-into-an-inbox-linked-out", inbox_linked_out, [*ESCALATE_TO_SENIOR, "--dry-run"], 2, "outside the mail root"),
    ("mail-list-through-a-mail-root-linked-out", mail_root_linked_out, ["mail", "list"], 2, "outside the repository"),
    ("mail-list-of-an-inbox-linked-out", inbox_linked_out, ["mail", "list", "--agent", "codex-senior"], 2, "outside the mail root"),
    ("mail-show-through-messages-linked-out", messages_linked_out, ["mail", "show", "msg-1"], 2, "outside the mail root"),
    ("init-through-messages-linked-out", messages_linked_out, ["init"], 2, "outside the mail root"),
    ("mail-show-star", one_message, ["mail", "show", "*"], 2, "may not contain '*'"),
    ("mail-show-question-mark", one_message, ["mail", "show", "msg-????????????????????????????????"], 2, "may not contain '*'"),
    ("mail-show-bracket", one_message, ["mail", "show", "msg-[0-9a-f]*"], 2, "may not contain '*'"),
    ("mail-ack-star", one_message, ["mail", "ack", "*", "--agent", "bob"], 2, "may not contain '*'"),
]

CASES += [
    ("export-over-the-store", nothing, ["db", "export", "--output", ".maf/runtime.db"], 2, "must not overwrite"),
    ("export-of-an-unknown-table", nothing, ["db", "export", "--table", "nope"], 2, "its tables are"),
    ("export-csv-without-one-table", nothing, ["db", "export", "--format", "csv"], 2, "exactly one --table"),
]


# The views (`maf status`, `maf history`, `maf report`): they only read, and their one output file is never the store.


def newer_store(workspace: Workspace) -> None:
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(workspace.main / ".maf" / "runtime.db")) as connection:
        connection.execute("PRAGMA user_version = 999")  # closed: the last connection folds the WAL in


REPORT = ["report", "--html", "report.html"]
CASES += [
    ("report-over-the-store", nothing, ["report", "--html", ".maf/runtime.db"], 2, "must not overwrite"),
    ("report-over-the-lock", nothing, ["report", "--html", ".maf/runtime.db.lock"], 2, "must not overwrite"),
    ("report-over-the-store-by-a-detour", nothing, ["report", "--html", "src/../.maf/runtime.db-wal"], 2, "must not overwrite"),
    ("report-into-a-directory", nothing, ["report", "--html", "src"], 2, "is a directory"),
    ("report-under-a-file", nothing, ["report", "--html", "README.md/report.html"], 2, "README.md is not a folder"),
    ("report-empty-name", nothing, ["report", "--html", ""], 2, "give a file name"),
    ("report-since-negative", nothing, [*REPORT, "--since", "-1"], 2, "--since"),
    ("report-since-past-a-century", nothing, [*REPORT, "--since", "99999999999999999999d"], 2, "hundred years"),
    ("report-limit-past-int64", nothing, [*REPORT, "--limit", str(2**70)], 2, "--limit"),
    ("report-without-a-store", no_store, REPORT, 2, "maf setup"),
    ("report-of-a-malformed-store", malformed_store, REPORT, 2, "malformed"),
    ("report-of-a-newer-store", newer_store, REPORT, 2, "newer than this pytest-maf"),
    ("status-without-a-store", no_store, ["status"], 2, "maf setup"),
    ("status-of-a-malformed-store", malformed_store, ["status", "--json"], 2, "malformed"),
    ("status-of-a-newer-store", newer_store, ["status"], 2, "newer than this pytest-maf"),
    ("status-watch-infinite", nothing, ["status", "--watch", "inf"], 2, "--watch"),
    ("status-watch-negative", nothing, ["status", "--watch", "-1"], 2, "--watch"),
    ("history-without-a-store", no_store, ["history"], 2, "maf setup"),
    ("history-of-a-malformed-store", malformed_store, ["history"], 2, "malformed"),
    ("history-since-garbage", nothing, ["history", "--since", "yesterday"], 2, "not a duration"),
    ("history-limit-negative", nothing, ["history", "--limit", "-1"], 2, "--limit"),
    ("history-limit-past-int64", nothing, ["history", "--limit", str(2**70)], 2, "--limit"),
    ("history-agent-with-an-escape", nothing, ["history", "--agent", "\x1b[2Jx"], 2, "agent id"),
]


def bob_holds_src(workspace: Workspace) -> None:
    held = workspace.maf(workspace.main, "reservation", "acquire", "src/**", agent="bob")
    assert held.returncode == 0, held.stderr


# An option is taken only as spelled in full: a prefix of --force must not force anything.
CASES += [
    ("force-by-a-prefix", bob_holds_src, ["reservation", "release", "src/**", "--for", "--reason", "x"], 2,
     "unrecognized arguments: --for"),
    ("restore-force-by-a-prefix", nothing, ["db", "restore", "backup.db", "--forc"], 2, "unrecognized arguments: --forc"),
]


# A --db with a URL's scheme:// that is not PostgreSQL's is a mistake, not a file path to create folders for.
CASES += [
    ("db-url-scheme-typo", nothing, ["setup", "--db", "postgresq://u:s3cr3t@127.0.0.1/test"], 2, "another scheme"),
    ("db-url-other-scheme-after-command", nothing, ["task", "list", "--db", "mysql://x/maf"], 2, "another scheme"),
    ("db-file-uri-before-command", nothing, ["--db", "file:///tmp/x.db", "task", "add", "--id", "t"], 2, "another scheme"),
]


@pytest.mark.parametrize(
    ("setup", "argv", "code", "words"),
    [pytest.param(setup, argv, code, words, id=case_id) for case_id, setup, argv, code, words in CASES],
)
def test_hostile_input_is_one_line_and_changes_nothing(
    workspace: Workspace, setup: Setup, argv: list[str], code: int, words: str
) -> None:
    setup(workspace)
    before = snapshot(workspace.main)

    completed = workspace.maf(workspace.main, *argv, agent="alice", timeout=60)

    one_line_refusal(completed, code)
    assert words in completed.stdout + completed.stderr
    assert snapshot(workspace.main) == before



@pytest.mark.parametrize("argv", [
    ["status", "--json"], ["status", "--watch", "1", "--json"], ["history", "--json"], [*REPORT, "--json"],
])
def test_a_view_that_fails_with_json_prints_one_error_object(workspace: Workspace, argv: list[str]) -> None:
    import json

    no_store(workspace)

    completed = workspace.maf(workspace.main, *argv, timeout=60)

    one_line_refusal(completed, 2)
    assert json.loads(completed.stdout) == {"error": completed.stderr.strip().removeprefix("maf: error: "), "exit_code": 2}



def test_the_views_show_stored_escapes_and_direction_characters_as_escapes(workspace: Workspace) -> None:
    import json

    forged = "\x1b[2J\x1b[31mred\u202egnp.exe\r\nmaf status: all clear"
    assert workspace.maf(workspace.main, "task", "add", "--id", "fix-1").returncode == 0
    assert workspace.maf(workspace.main, "task", "claim", agent="alice").returncode == 0
    assert workspace.maf(workspace.main, "reservation", "acquire", "src/**", "--task", "fix-1", "--reason", forged,
                         agent="alice").returncode == 0
    assert workspace.maf(workspace.main, "reservation", "release", "src/**", "--force", "--reason", forged,
                         agent="lead").returncode == 0

    status = workspace.maf(workspace.main, "status", agent="lead")
    trail = workspace.maf(workspace.main, "history", agent="lead")
    exact = workspace.maf(workspace.main, "history", "--kind", "force_release", "--json", agent="lead")

    for shown in (status, trail):
        assert shown.returncode == 0 and not any(c in shown.stdout for c in "\x1b\r\u202e"), shown.stdout
        assert "\\x1b[2J\\x1b[31mred\\u202egnp.exe\\r\\nmaf status: all clear" in shown.stdout
        assert not any(line.startswith("maf status: all clear") for line in shown.stdout.splitlines())
    assert json.loads(exact.stdout)[0]["data"]["reason"] == forged  # --json stays exact,
    assert not any(c in exact.stdout for c in "\x1b\r\u202e"), exact.stdout  # and shows each as \\u001b ...



def test_a_lone_surrogate_escaped_in_stored_json_is_shown_not_fatal(workspace: Workspace) -> None:
    import json
    import sqlite3

    assert workspace.maf(workspace.main, "reservation", "acquire", "src/**", "--reason", "r", agent="alice").returncode == 0
    with sqlite3.connect(workspace.main / ".maf" / "runtime.db") as connection:  # valid JSON, not valid UTF-8 text
        connection.execute("""UPDATE reservation_events SET data_json = '{"pattern":"src/**","reason":"a\\ud800b"}'""")

    shown = {argv: workspace.maf(workspace.main, *argv.split()) for argv in ("history", "history --json", "status --json")}

    for completed in shown.values():
        assert completed.returncode == 0 and "Traceback" not in completed.stderr, completed.stderr
    assert json.loads(shown["history --json"].stdout)[0]["data"]["reason"] == "a\ud800b"
    assert "a\\ud800b" in shown["history"].stdout



def test_a_stored_text_that_is_not_utf8_is_shown_and_hides_nothing_else(workspace: Workspace) -> None:
    import sqlite3

    assert workspace.maf(workspace.main, "task", "add", "--id", "fix-1").returncode == 0
    assert workspace.maf(workspace.main, "reservation", "acquire", "src/**", "--reason", "r", agent="alice").returncode == 0
    with sqlite3.connect(workspace.main / ".maf" / "runtime.db") as connection:  # as another tool might write it
        connection.execute("UPDATE reservations SET reason = CAST(X'636166e9' AS TEXT)")  # Latin-1 'café'

    shown = [workspace.maf(workspace.main, *argv) for argv in (["status"], ["reservation", "list"], ["history"])]

    for completed in shown:
        assert completed.returncode == 0 and "Traceback" not in completed.stderr, completed.stderr
    assert "caf\ufffd" in shown[0].stdout and "READY 1" in shown[0].stdout  # the byte, marked; the rest as it is


def test_a_corrupt_stored_row_is_reported_and_does_not_break_its_neighbours(workspace: Workspace) -> None:
    import json
    import sqlite3

    for task_id in ("good", "bad"):
        assert workspace.maf(workspace.main, "task", "add", "--id", task_id).returncode == 0
    with sqlite3.connect(workspace.main / ".maf" / "runtime.db") as connection:
        connection.execute("UPDATE tasks SET payload_json = '{not json' WHERE id = 'bad'")
        connection.execute("UPDATE events SET data_json = 'NaN]' WHERE task_id = 'bad'")

    listed = workspace.maf(workspace.main, "task", "list", "--json")
    shown = workspace.maf(workspace.main, "task", "show", "bad", "--json")

    assert listed.returncode == 0, listed.stderr
    assert sorted(task["id"] for task in json.loads(listed.stdout)) == ["bad", "good"]
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert "tasks.payload_json of task 'bad' is not valid JSON" in detail["task"]["payload"]["unreadable"]
    assert "events.data_json" in detail["events"][0]["data"]["unreadable"]


def test_a_required_secret_never_reaches_test_output_junit_or_evidence(workspace: Workspace) -> None:
    secret = "hunter2-not-for-your-eyes"
    report = workspace.home / "preflight.xml"

    run = workspace.pytest(
        workspace.main, "--maf-preflight", "-l", "--tb=long", "-vv", f"--junitxml={report}",
        agent="alice", A_SECRET=secret, MAF_REQUIRED_ENV="A_SECRET,MISSING_ONE",
    )
    evidence = workspace.maf(workspace.main, "evidence", "list", "--json")

    assert run.returncode == 1 and "MISSING_ONE" in run.stdout  # the check did fail, and says which
    assert evidence.returncode == 0 and "MISSING_ONE" in evidence.stdout
    for shown in (run.stdout, run.stderr, report.read_text(encoding="utf-8"), evidence.stdout):
        assert secret not in shown
    assert secret.encode() not in (workspace.main / ".maf" / "runtime.db").read_bytes()


@pytest.mark.parametrize("argv", [["metrics"], ["bench", "--output", "baseline.json"]])
def test_a_missing_extra_is_one_line_saying_what_to_install(workspace: Workspace, argv: list[str]) -> None:
    import sys

    hide = (
        "import sys; sys.modules['prometheus_client'] = None\n"  # as if the extra were not installed
        "from pytest_maf.cli import main; sys.exit(main(sys.argv[1:]))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", hide, *argv], cwd=workspace.main, capture_output=True, text=True,
        env=workspace.env("alice"), timeout=60,
    )

    one_line_refusal(completed, 2)
    assert "pip install 'pytest-maf[metrics]'" in completed.stderr


def test_a_stored_pattern_the_door_now_refuses_breaks_nobody(workspace: Workspace) -> None:
    import sqlite3

    assert workspace.maf(workspace.main, "reservation", "acquire", "src/**", agent="alice").returncode == 0
    with sqlite3.connect(workspace.main / ".maf" / "runtime.db") as connection:  # as an older pytest-maf let in
        connection.execute(
            "INSERT INTO reservations (agent_id, pattern, anchor, exclusive, reason, created_at, expires_at)"
            " SELECT 'mallory', 'lib/[z-a]', 'lib', 1, '', created_at, expires_at FROM reservations"
        )
    workspace.stage(workspace.second, "src/app/models.py")

    guard = workspace.maf(workspace.second, "guard", agent="bob")
    check = workspace.maf(workspace.main, "reservation", "check", "lib/x", "src/a.py", agent="bob")
    listed = workspace.maf(workspace.main, "reservation", "list")
    released = workspace.maf(workspace.main, "reservation", "release", "lib/[z-a]", agent="mallory")

    assert guard.returncode == 1 and "alice" in guard.stdout  # the real reservation still blocks
    assert check.returncode == 1 and "lib/x: free" in check.stdout
    assert listed.returncode == 0 and "lib/[z-a]" in listed.stdout
    assert released.returncode == 0, released.stderr  # and the bad row can be removed by its holder


@pytest.mark.slow
def test_the_wildest_pattern_allowed_checks_in_bounded_time(workspace: Workspace) -> None:
    wild = "*a" * 31 + "b"  # 31 wildcards, the most the door lets in, against a path that almost matches
    assert workspace.maf(workspace.main, "reservation", "acquire", wild, agent="alice").returncode == 0
    name = "a" * 200
    workspace.stage(workspace.second, name)

    guard = workspace.maf(workspace.second, "guard", agent="bob", timeout=20)  # a hang fails at the deadline
    writer = workspace.maf(workspace.main, "task", "add", "--id", "t1", timeout=20)

    assert guard.returncode == 0, guard.stdout + guard.stderr
    assert writer.returncode == 0



@pytest.mark.parametrize("option", ["--junitxml=.maf/runtime.db", "--log-file=.maf/runtime.db-wal"])
def test_pytests_own_report_files_may_not_name_the_store(workspace: Workspace, option: str) -> None:
    before = snapshot(workspace.main)

    run = workspace.pytest(workspace.main, "--maf-preflight", option, agent="alice")

    assert run.returncode == 4, run.stdout + run.stderr  # pytest's usage error
    assert "must not overwrite" in run.stderr
    assert snapshot(workspace.main) == before


def test_the_readme_form_of_task_run_takes_its_options_after_the_task(workspace: Workspace) -> None:
    import sys

    assert workspace.maf(workspace.main, "task", "add", "--id", "fix-42").returncode == 0
    assert workspace.maf(workspace.main, "task", "claim", "--agent", "claude-1").returncode == 0

    run = workspace.maf(
        workspace.main, "task", "run", "fix-42", "--agent", "claude-1", "--ttl", "60", "--",
        sys.executable, "-c", "import os, sys; print(os.environ['MAF_AGENT_ID']); sys.exit(3)",
    )
    wrong = workspace.maf(workspace.main, "task", "run", "fix-42", "--agent", "claude-1", "--bogus", "--", "true")

    assert (run.returncode, run.stdout.strip()) == (3, "claude-1"), run.stderr
    one_line_refusal(wrong, 2)
    assert "--bogus" in wrong.stderr


def test_arguments_that_are_not_utf8_are_one_line(workspace: Workspace) -> None:
    import sys

    before = snapshot(workspace.main)
    completed = subprocess.run(
        [sys.executable, "-m", "pytest_maf", "reservation", "acquire", "x", "--reason", b"caf\xe9"],  # Latin-1
        cwd=workspace.main, capture_output=True, text=True, env=workspace.env("alice"), timeout=60,
    )

    one_line_refusal(completed, 2)
    assert "not UTF-8" in completed.stderr
    assert snapshot(workspace.main) == before


def test_the_command_maf_task_run_runs_may_take_arguments_that_are_not_utf8(workspace: Workspace) -> None:
    import sys

    for argv in (["task", "add", "--id", "fix-42"], ["task", "claim"]):
        assert workspace.maf(workspace.main, *argv, agent="alice").returncode == 0
    name = b"caf\xe9.txt"  # a Latin-1 file name: the child's argument, not maf's
    (workspace.main / os.fsdecode(name)).write_text("latin\n")

    completed = subprocess.run(
        [sys.executable, "-m", "pytest_maf", "task", "run", "fix-42", "--agent", "alice", "--attempt", "1",
         "--", "cat", name],
        cwd=workspace.main, capture_output=True, text=True, env=workspace.env("alice"), timeout=60,
    )

    assert completed.returncode == 0, completed.stderr  # before: "argument 8 ... is not UTF-8 text"
    assert completed.stdout == "latin\n"


def test_an_argument_that_is_not_utf8_with_json_prints_the_error_object(workspace: Workspace) -> None:
    import json
    import sys

    completed = subprocess.run(
        [sys.executable, "-m", "pytest_maf", "task", "add", "--id", b"\xff", "--json"],
        cwd=workspace.main, capture_output=True, text=True, env=workspace.env("alice"), timeout=60,
    )

    one_line_refusal(completed, 2)
    report = json.loads(completed.stdout)
    assert (sorted(report), report["exit_code"]) == (["error", "exit_code"], 2)
    assert "is not UTF-8 text" in report["error"]


@pytest.mark.parametrize("view", [["status"], ["history"], ["agents"], ["task", "list"]])
def test_a_view_with_standard_output_closed_is_not_an_internal_error(workspace: Workspace, view: list[str]) -> None:
    import sys

    completed = subprocess.run(
        [sys.executable, "-m", "pytest_maf", *view], cwd=workspace.main, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, env=workspace.env("alice"), timeout=60,
        preexec_fn=lambda: os.close(1),  # as `maf status >&-`
    )

    assert (completed.returncode, completed.stderr) == (0, "")


def test_a_failure_message_with_bytes_that_are_not_utf8_is_recorded(workspace: Workspace) -> None:
    import json

    workspace.write(workspace.main, "t/test_file.py", (
        "import os\n"
        "def test_the_file_is_there():\n"
        "    name = os.fsdecode(b'r-\\xff.txt')\n"
        "    assert os.path.exists(name), f'missing {name}'\n"
    ))
    assert workspace.maf(workspace.main, "task", "add", "--id", "j").returncode == 0
    assert workspace.maf(workspace.main, "task", "claim", agent="alice").returncode == 0
    assert workspace.maf(workspace.main, "task", "start", "j", "--attempt", "1", agent="alice").returncode == 0

    run = workspace.pytest(workspace.main, "--maf-task", "j", "t", agent="alice")
    shown = workspace.maf(workspace.main, "task", "show", "j", "--json")

    assert run.returncode == 1 and "Traceback" not in run.stdout + run.stderr, run.stdout + run.stderr
    detail = json.loads(shown.stdout)
    assert detail["task"]["state"] == "READY"  # rolled back, not stranded in VERIFYING
    (row,) = detail["evidence"]
    assert row["result"] == "FAIL" and "missing r-" in row["details"]["message"]


@pytest.mark.parametrize("stdin", [
    "refs/heads/main --output=/tmp/maf-outside refs/heads/main -p\n",
    "garbage\n",
    "a b c d e f\n",
])
def test_pre_push_input_that_git_would_not_send_fails_closed(workspace: Workspace, stdin: str) -> None:
    before = snapshot(workspace.main)

    completed = workspace.maf(workspace.main, "guard", "--pre-push", agent="bob", stdin=stdin)

    one_line_refusal(completed, 2)
    assert "pre-push input" in completed.stderr
    assert snapshot(workspace.main) == before
    assert not Path("/tmp/maf-outside").exists()


def test_a_fifo_or_a_hand_made_file_in_an_inbox_neither_hangs_nor_crashes(workspace: Workspace) -> None:
    import os

    assert workspace.maf(workspace.main, "init").returncode == 0
    inbox = workspace.main / ".agent-mail" / "messages" / "bob"
    inbox.mkdir(parents=True, exist_ok=True)
    os.mkfifo(inbox / "msg-fifo.json")
    (inbox / "msg-odd.json").write_text('{"id": 5, "created_at": 1e999}', encoding="utf-8")

    listed = workspace.maf(workspace.main, "mail", "list", agent="bob", timeout=20)  # a hang fails here
    shown = workspace.maf(workspace.main, "mail", "show", "msg-odd", agent="bob", timeout=20)
    acked = workspace.maf(workspace.main, "mail", "ack", "msg-odd", agent="bob", timeout=20)

    assert "Traceback" not in listed.stderr and listed.returncode in (0, 2)
    for refused in (shown, acked):
        one_line_refusal(refused, 2)
        assert "not an agent-mail message" in refused.stderr


def test_the_guard_shows_a_reason_with_escape_sequences_escaped(workspace: Workspace) -> None:
    reason = "\x1b[31mred\nmaf guard: all clear"
    assert workspace.maf(workspace.main, "reservation", "acquire", "docs/api.md", "--reason", reason, agent="alice").returncode == 0
    workspace.stage(workspace.second, "docs/api.md")

    blocked = workspace.maf(workspace.second, "guard", agent="bob")

    assert blocked.returncode == 1
    assert "\x1b" not in blocked.stdout and "\\x1b[31mred\\nmaf guard: all clear" in blocked.stdout
    assert not any(line.startswith("maf guard: all clear") for line in blocked.stdout.splitlines())


@pytest.mark.parametrize(("setting", "words"), [
    ("preflight:\n  min_python: abc\n", "expected a version"),
    ("escalation:\n  targets: ['../x']\n", "may not contain"),
    ("tasks:\n  lease_max_ttl_seconds: 99999999999999999999999\n", "at most"),
    ("reservations:\n  max_ttl_minutes: 99999999999999999999999\n", "at most"),
])
def test_config_validate_refuses_what_would_fail_later(workspace: Workspace, setting: str, words: str) -> None:
    workspace.write(workspace.main, "maf-config/local.yaml", setting)

    completed = workspace.maf(workspace.main, "config", "validate")

    assert completed.returncode == 2 and words in completed.stdout + completed.stderr
    assert "Traceback" not in completed.stderr



def database_header(size: int) -> bytes:
    """The first 100 bytes of a SQLite database of ``size`` bytes (64 KiB pages), as its header gives it."""
    header = bytearray(100)
    header[:16] = b"SQLite format 3\0"
    header[16:18] = (1).to_bytes(2, "big")  # 1: pages of 65,536 bytes
    header[24:28] = header[92:96] = (1).to_bytes(4, "big")  # the size is valid: written at change 1
    header[28:32] = (size // 65536).to_bytes(4, "big")
    return bytes(header)


def verify_with_files_capped(workspace: Workspace, backup: Path, cap: int) -> subprocess.CompletedProcess[str]:
    """``maf db verify-backup BACKUP`` unable to write a file larger than ``cap`` bytes (RLIMIT_FSIZE)."""
    import resource
    import signal

    def capped() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the cap fails (EFBIG), it does not kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))

    return subprocess.run(
        [*maf_command(), "db", "verify-backup", str(backup)], cwd=workspace.main, env=workspace.env("alice"),
        capture_output=True, text=True, timeout=120, preexec_fn=capped,
    )


@pytest.mark.skipif(os.name != "posix", reason="POSIX resource limits")
def test_a_gzip_bomb_given_as_a_backup_is_refused_from_its_first_bytes(workspace: Workspace) -> None:
    import gzip

    bomb = workspace.main / "bomb.db.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as packed:  # 64 MiB of zeros in about 300 KB
        for _ in range(64):
            packed.write(bytes(1 << 20))

    completed = verify_with_files_capped(workspace, bomb, 8 << 20)

    assert completed.returncode == 1, completed.stderr  # before: EFBIG after writing 8 MiB of its copy
    assert "bomb.db.gz: BAD" in completed.stdout + completed.stderr
    assert "not a database" in completed.stdout + completed.stderr and "Traceback" not in completed.stderr


@pytest.mark.skipif(os.name != "posix", reason="POSIX resource limits")
def test_a_backup_unpacks_no_further_than_its_database_ends(workspace: Workspace) -> None:
    import gzip

    workspace.maf(workspace.main, "db", "backup", "--output", "backup.db", agent="alice", timeout=60)
    padded = workspace.main / "padded.db.gz"
    with gzip.open(padded, "wb", compresslevel=1) as packed:  # a sound backup, then 64 MiB of zeros SQLite never reads
        packed.write((workspace.main / "backup.db").read_bytes())
        for _ in range(64):
            packed.write(bytes(1 << 20))

    completed = verify_with_files_capped(workspace, padded, 8 << 20)

    assert completed.returncode == 0, completed.stderr  # before: EFBIG after writing 8 MiB of its copy
    assert "padded.db.gz: ok" in completed.stdout


def test_a_backup_larger_than_the_room_to_check_it_is_refused_before_it_is_copied(workspace: Workspace, tmp_path: Path) -> None:
    import gzip

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    huge = workspace.main / "huge.db.gz"
    with gzip.open(huge, "wb") as packed:
        packed.write(database_header((1 << 32) * 65536 // 2))  # its header says 128 TiB

    completed = workspace.maf(workspace.main, "db", "verify-backup", str(huge), agent="alice", timeout=60, TMPDIR=str(scratch))

    one_line_refusal(completed, 2)
    assert "huge.db.gz holds a database of" in completed.stderr and "set TMPDIR to a folder with room" in completed.stderr
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("case", ["cut-short", "no-size"])
def test_a_backup_whose_header_gives_no_size_or_more_than_it_holds_is_bad(workspace: Workspace, case: str) -> None:
    import gzip

    header = bytearray(database_header(1 << 30))  # says 1 GiB
    if case == "no-size":  # a stale size, as SQLite before 3.7.0 left it: no bound on what a gzip unpacks to
        header[92:96] = (2).to_bytes(4, "big")
        backup = workspace.main / "stale.db.gz"
        with gzip.open(backup, "wb", compresslevel=1) as packed:
            packed.write(bytes(header))
            for _ in range(64):
                packed.write(bytes(1 << 20))
    else:
        backup = workspace.main / "short.db"
        backup.write_bytes(bytes(header))  # 100 bytes of a database its header says is 1 GiB

    completed = verify_with_files_capped(workspace, backup, 8 << 20)

    assert completed.returncode == 1, completed.stderr  # BAD; before: unpacked until the cap (or the disk) ran out
    said = completed.stdout + completed.stderr
    assert ("gives no size" if case == "no-size" else "the file holds 100: it is cut short") in said


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_sigterm_in_a_backup_check_removes_its_private_copy(workspace: Workspace, tmp_path: Path) -> None:
    import shutil
    import signal
    import time

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    if shutil.disk_usage(scratch).free < 3 * 1024**3:
        pytest.skip("needs room for a copy of 1 GiB")
    big = workspace.main / "big.db"
    with open(big, "wb") as file:  # sparse: a gigabyte to copy, no disk used
        file.write(database_header(1024**3))
        file.truncate(1024**3)
    checking = subprocess.Popen(
        [*maf_command(), "db", "verify-backup", str(big)], cwd=workspace.main,
        env={**workspace.env("alice"), "TMPDIR": str(scratch)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 30
    while not any(scratch.glob("*/backup.db")) and checking.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # until the private copy is under way
    checking.send_signal(signal.SIGTERM)
    _, err = checking.communicate(timeout=60)

    assert checking.returncode == 128 + signal.SIGTERM and "maf: terminated" in err
    assert list(scratch.iterdir()) == []  # before: a copy of gigabytes left in the temporary folder


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_a_signal_as_a_scratch_directory_is_made_still_removes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    from pytest_maf.files import scratch_directory

    class Terminated(Exception):
        pass

    def terminated(*_: object) -> None:
        raise Terminated

    made: list[str] = []
    real_mkdir = os.mkdir

    def made_then_terminated(path: str, *args: object, **options: object) -> None:
        real_mkdir(path, *args, **options)  # type: ignore[arg-type]
        made.append(str(path))
        os.kill(os.getpid(), signal.SIGTERM)  # SIGTERM the moment the directory exists

    monkeypatch.setattr(os, "mkdir", made_then_terminated)
    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        with pytest.raises(Terminated), scratch_directory(dir=tmp_path):
            pass
    finally:
        signal.signal(signal.SIGTERM, previous)

    assert made and not os.path.exists(made[0])  # before: left behind, with a copy of a database inside


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
@pytest.mark.parametrize("command", [["health-check", "--json"], ["escalate", "list", "--json"], ["task", "list", "--json"]])
def test_json_output_onto_a_full_disk_is_one_line_not_a_traceback(workspace: Workspace, command: list[str]) -> None:
    import sys

    with open("/dev/full", "w") as full:  # every write: "No space left on device"
        completed = subprocess.run(
            [sys.executable, "-m", "pytest_maf", *command], cwd=workspace.main, stdout=full,
            stderr=subprocess.PIPE, text=True, env=workspace.env("alice"), timeout=60,
        )

    # Before: two tracebacks (the error object written to the same full output) and exit 1.
    assert (completed.returncode, completed.stderr) == (2, "maf: error: No space left on device\n")


@pytest.mark.parametrize("command", [["reservation", "check"], ["reservation", "status", "--file"]])
def test_a_path_asked_about_is_shown_with_its_escape_sequences_escaped(workspace: Workspace, command: list[str]) -> None:
    assert workspace.maf(workspace.main, "reservation", "acquire", "/nl*", agent="alice").returncode == 0

    shown = workspace.maf(workspace.main, *command, "nl\x1b[31mX\nmaf: all clear", agent="bob")

    # Before, the escape reached the terminal and the newline forged a line of its own.
    assert "\x1b" not in shown.stdout and "nl\\x1b[31mX\\nmaf: all clear: " in shown.stdout
    assert not any(line.startswith("maf: all clear") for line in shown.stdout.splitlines())
