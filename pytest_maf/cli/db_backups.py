"""`maf db backup`, `verify-backup`, `backups` and `restore`: a store's backups, on SQLite and PostgreSQL."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_maf.cli.common import add_json, add_output, given, print_json, print_table, when
from pytest_maf.config import Settings
from pytest_maf.errors import INTERRUPTED, UsageError
from pytest_maf.files import checked_output, regular_file_head, replaced_output, store_files
from pytest_maf.terminal import Progress, printable

if TYPE_CHECKING:
    from pytest_maf.store.backups import BackupFile, BackupState

LATEST = "latest"  # `maf db restore latest`: the newest backup that passes verification
DEFAULT_FOLDER = "backups"


def _postgres_backups() -> Any:
    from pytest_maf.extras import import_extra

    return import_extra("pytest_maf.store.postgres_backup", "postgres", "a PostgreSQL store's backups")


def _keep(text: str) -> int:
    from pytest_maf.store.backups import check_keep

    try:
        return check_keep(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of backups, got {text!r}") from None
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--keep ")) from None


def _folder(args: argparse.Namespace, settings: Settings) -> Path:
    """``--dir``, else ``backups/`` at the top of the repository (the current folder outside git)."""
    if args.dir is not None:
        return Path(args.dir)
    return (settings.repo_root or Path.cwd()) / DEFAULT_FOLDER


def _kind(settings: Settings) -> str:
    from pytest_maf.store.backups import POSTGRESQL, SQLITE

    return POSTGRESQL if settings.database_url is not None else SQLITE


def _pruned(output: Path, keep: int | None, settings: Settings, started_ms: int) -> list[Path] | None:
    """Delete all but the ``keep`` newest backups beside ``output``, none made since ``started_ms``; those deleted.

    None: no --keep.
    """
    if keep is None:
        return None
    from pytest_maf.store.backups import prune_backups

    protected = store_files(settings.db_path)
    return [backup.path for backup in prune_backups(output.parent, keep, _kind(settings), protected, started_ms)]


def _said_pruned(output: Path, keep: int | None, removed: list[Path] | None) -> str:
    if removed is None:
        return ""
    names = ", ".join(printable(path.name) for path in removed)
    return f"; kept the {keep} newest in {printable(str(output.parent))}" + (f", deleted {len(removed)}: {names}" if removed else "")


def _backup_json(
    path: Path, size: int, rows: dict[str, int], seconds: float, method: str, removed: list[Path] | None
) -> dict[str, Any]:
    return {"path": str(path), "bytes": size, "rows": rows, "seconds": round(seconds, 3), "method": method,
            "verified": True, "deleted": None if removed is None else [str(path) for path in removed]}


def _backup_output(text: str, settings: Settings, kind: str) -> Path:
    """``--output`` of a backup: a new file, or an older pytest-maf backup of the same kind; never another
    file (an application's database, notes) nor the copy a restore kept of the database it replaced."""
    from pytest_maf.store.backups import backup_kind, is_protected

    protected = [] if settings.database_url is not None else store_files(settings.db_path)
    output = checked_output(text, protected, "--output")
    real = replaced_output(output, "--output")  # no store in use, device or pipe
    if not os.path.lexists(real) or os.path.getsize(real) == 0:  # a new file (through a link too), or an empty one
        return output
    if settings.database_url is None and is_protected(real, [settings.db_path]):
        raise UsageError(
            f"{text} is the copy `maf db restore` kept of the database it replaced; choose another file for --output"
        )
    found = backup_kind(real)
    if found != kind:
        what = f"a pytest-maf {found} database, not a {kind} backup" if found else "no pytest-maf backup"
        raise UsageError(
            f"{text} exists and is {what}: a backup replaces only an older {kind} backup;"
            " choose another file for --output, or remove it first"
        )
    return output


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    started_ms = time.time_ns() // 1_000_000  # a backup made since then is this run's or a concurrent run's
    if settings.database_url is not None:
        if args.gzip:
            raise UsageError("a PostgreSQL backup (pg_dump -Fc) is compressed already: leave out --gzip")
        output = _backup_output(args.output, settings, "postgresql")
        with Progress(f"backing up {settings.store_shown} with pg_dump"):
            pg_report = _postgres_backups().backup(
                settings.database_url, settings.database_schema, output, busy_timeout_s=settings.busy_timeout_s
            )
        removed = _pruned(output, args.keep, settings, started_ms)
        if args.json:
            print_json(_backup_json(pg_report.path, pg_report.bytes, pg_report.rows, pg_report.seconds, "pg_dump", removed))
            return 0
        print(f"backed up {printable(settings.store_shown)} to {printable(str(pg_report.path))} with pg_dump:"
              f" {pg_report.bytes} bytes,"
              f" {sum(pg_report.rows.values())} rows, verified, in {pg_report.seconds:.2f} s"
              + _said_pruned(output, args.keep, removed))
        return 0
    from pytest_maf.store import maintenance

    output = _backup_output(args.output, settings, "sqlite")
    with Progress(f"backing up {settings.db_path}"):
        report = maintenance.backup(settings.db_path, output, compress=args.gzip)
    removed = _pruned(output, args.keep, settings, started_ms)
    if args.json:
        print_json(_backup_json(report.path, report.bytes, report.rows, report.seconds, "sqlite", removed))
        return 0
    total = sum(report.rows.values())
    print(f"backed up {printable(str(settings.db_path))} to {printable(str(report.path))}: {report.bytes} bytes,"
          f" {total} rows, verified, in {report.seconds:.2f} s" + _said_pruned(output, args.keep, removed))
    return 0


def cmd_verify_backup(args: argparse.Namespace, settings: Settings) -> int:
    from pytest_maf.store import maintenance

    try:
        if _is_postgres_backup(Path(args.file)):
            if settings.database_url is None:
                raise UsageError(
                    f"{args.file} is a PostgreSQL backup (pg_dump): it is verified by restoring it into a scratch"
                    " schema, so name the server with MAF_DATABASE_URL (runtime.database_url)"
                )
            rows = _postgres_backups().verify_backup(settings.database_url, Path(args.file))
        else:
            rows = maintenance.verify_database(Path(args.file))
    except maintenance.VerificationError as error:
        if args.json:
            print_json({"file": args.file, "ok": False, "problems": error.problems, "rows": None})
        print(f"{printable(args.file)}: BAD", file=sys.stderr)
        for problem in error.problems:
            print(f"  {printable(problem)}", file=sys.stderr)
        return 1
    if args.json:
        print_json({"file": args.file, "ok": True, "problems": [], "rows": rows})
        return 0
    print(f"{printable(args.file)}: ok (integrity, schema version, canonical schema); "
          + ", ".join(f"{table} {count}" for table, count in rows.items()))
    return 0


def _is_postgres_backup(path: Path) -> bool:
    return regular_file_head(path, 5) == b"PGDMP"  # pg_dump's custom format


def _latest(args: argparse.Namespace, settings: Settings) -> tuple[Path, list[dict[str, str]]]:
    """The newest backup in the folder that passes verification, and the newer ones it passed over (said)."""
    from pytest_maf.store.backups import newest_verified

    chosen, failed = newest_verified(_folder(args, settings), _kind(settings), settings.database_url,
                                     store_files(settings.db_path))
    if not args.json:
        for state in failed:
            print(f"skipped {printable(state.file.path.name)}: it fails verification ({printable(state.problem)})")
    return chosen.file.path, [{"path": str(state.file.path), "problem": state.problem} for state in failed]


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    if args.dir is not None and args.file != LATEST:
        raise UsageError(f"--dir names the folder `maf db restore {LATEST}` looks in; leave it out with a FILE")
    backup, skipped = _latest(args, settings) if args.file == LATEST else (Path(args.file), [])
    _refuse_the_other_backend(backup, settings)
    from pytest_maf.store import maintenance

    if settings.database_url is not None:
        try:
            with Progress(f"restoring {settings.store_shown} from {backup} with pg_restore"):
                kept_schema = _postgres_backups().restore(
                    settings.database_url, settings.database_schema, backup, force=args.force,
                    busy_timeout_s=settings.busy_timeout_s,
                )
        except maintenance.VerificationError as error:  # bad input for a restore, refused before anything changed
            raise UsageError(f"{error}; nothing was restored") from None
        if args.json:
            print_json({"restored": settings.store_shown, "from": str(backup), "kept_as": kept_schema,
                        "skipped": skipped})
            return 0
        print(f"restored {settings.store_shown} from {printable(str(backup))} with pg_restore; the previous store"
              f" is kept as the schema {kept_schema}")
        return 0
    from pytest_maf.store.restore import RestoredThenStopped

    stopped: tuple[str, int] | None = None  # a Ctrl-C or SIGTERM held back while the restore committed
    try:
        with Progress(f"verifying {backup} and restoring {settings.db_path}"):
            try:
                report = maintenance.restore(
                    settings.db_path, backup, force=args.force, busy_timeout_s=settings.busy_timeout_s
                )
            except RestoredThenStopped as late:
                report, stopped = late.report, _how_stopped(late.stop)
    except maintenance.VerificationError as error:  # bad input for a restore, refused before anything changed
        raise UsageError(f"{error}; nothing was restored") from None
    kept = f"the previous database is kept as {report.kept_as}" if report.kept_as else "there was no database to keep"
    if args.json:
        print_json({"restored": str(settings.db_path), "from": str(backup),
                    "kept_as": None if report.kept_as is None else str(report.kept_as), "rows": report.rows,
                    "skipped": skipped, **({"then": stopped[0]} if stopped else {})})
    else:
        print(printable(f"restored {settings.db_path} from {backup}; {kept}"))
    if stopped is None:
        return 0
    # The stop came as the restore committed: it is done, and the command ends as the stop asked.
    print(printable(f"maf: {stopped[0]} once the restore was done; {kept}"), file=sys.stderr)
    return stopped[1]


def _how_stopped(stop: BaseException) -> tuple[str, int]:
    """``stop`` (what a Ctrl-C or SIGTERM raised) as the word the command ends with, and its exit code."""
    signum = getattr(stop, "signum", None)
    if isinstance(signum, int):
        return "terminated", 128 + signum
    if isinstance(stop, KeyboardInterrupt):
        return "interrupted", INTERRUPTED
    raise stop


def _refuse_the_other_backend(backup: Path, settings: Settings) -> None:
    """A backup of the other backend's store is sound, but not this store's to restore: say which way it goes."""
    from pytest_maf.store.backups import POSTGRESQL, SQLITE, backup_kind

    kind = backup_kind(Path(os.path.realpath(backup)))
    if settings.database_url is not None and kind == SQLITE:
        raise UsageError(
            f"{backup} is a backup of a SQLite store, and this store is PostgreSQL ({settings.store_shown}):"
            " restore it into a file (maf db restore FILE --db restored.db), then copy that here with"
            " maf db copy restored.db URL"
        )
    if settings.database_url is None and kind == POSTGRESQL:
        raise UsageError(
            f"{backup} is a backup of a PostgreSQL store (pg_dump), and this store is the SQLite file"
            f" {settings.db_path}: restore it into a scratch schema of a server (MAF_DATABASE_URL=URL"
            " MAF_DATABASE_SCHEMA=restored maf db restore FILE), then move it into a file with maf db copy"
        )


def _state_json(state: BackupState) -> dict[str, Any]:
    backup: BackupFile = state.file
    return {
        "path": str(backup.path), "kind": backup.kind, "bytes": backup.bytes, "modified_at": backup.modified_ms,
        "verified": state.verified, "rows": state.rows, "problem": state.problem or None,
    }


def cmd_backups(args: argparse.Namespace, settings: Settings) -> int:
    from pytest_maf.store.backups import backup_states

    folder = _folder(args, settings)
    states = backup_states(folder, settings.database_url, store_files(settings.db_path))
    if args.json:
        print_json({"folder": str(folder), "backups": [_state_json(state) for state in states]})
        return 0
    if not states:
        print(f"no backups made by pytest-maf in {printable(str(folder))}")
        return 0
    print_table(
        ["BACKUP", "KIND", "BYTES", "TIME", "VERIFIED", "ROWS"],
        [
            [state.file.path.name, state.file.kind, state.file.bytes, when(state.file.modified_ms),
             {True: "yes", False: f"NO: {state.problem}", None: f"not checked: {state.problem}"}[state.verified],
             "" if state.rows is None else str(state.rows)]
            for state in states
        ],
    )
    return 0


def register(db: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The backup actions of `maf db`."""
    folder_help = f"the backups' folder (default: {DEFAULT_FOLDER}/ at the top of the repository)"
    backup = db.add_parser(
        "backup", help="a consistent copy while agents keep writing (SQLite online backup; pg_dump on PostgreSQL)",
        description="Writes one consistent snapshot, verified before it is kept, whole or not at all. With --keep N,"
        " the N newest of pytest-maf's backups in the output's folder stay (this one among them) and older ones are"
        " deleted: only files pytest-maf made (a store database marked \"maf1\", or a pg_dump of a pytest-maf"
        " schema); any other file there is left alone.",
    )
    add_output(backup, "the backup file to write", required=True)
    backup.add_argument("--gzip", action="store_true", help="compress the copy")
    backup.add_argument(
        "--keep", type=_keep, metavar="N", help="then delete all but the N newest backups in FILE's folder (1 to 10000; default: delete none)"
    )
    add_json(backup)
    backup.set_defaults(handler=cmd_backup)
    verify = db.add_parser("verify-backup", help="integrity and schema checks of a backup (exit 1 when bad)")
    verify.add_argument("file", type=given, metavar="FILE")
    add_json(verify)
    verify.set_defaults(handler=cmd_verify_backup)
    listing = db.add_parser(
        "backups", help="the backups in a folder: size, time, and whether each passes verification",
        description="Lists pytest-maf's backups (newest first) with their size, modification time (UTC) and"
        " verification: the checks of `maf db verify-backup` (a PostgreSQL backup needs MAF_DATABASE_URL to be"
        " checked). Other files in the folder are not listed.",
    )
    listing.add_argument("--dir", type=given, metavar="FOLDER", help=folder_help)
    add_json(listing)
    listing.set_defaults(handler=cmd_backups)
    restore = db.add_parser(
        "restore", help="verify a backup, keep the current database aside, and restore",
        description="Refuses a backup that fails verification, and refuses while live leases exist"
        " unless --force. The current database is kept as <db>.before-restore-<timestamp> (on PostgreSQL,"
        f" the schema <schema>_before_restore_<time>). FILE '{LATEST}' restores the newest backup in --dir that"
        " passes verification, passing over newer ones that fail it (give ./latest for a file of that name).",
    )
    restore.add_argument("file", type=given, metavar="FILE", help=f"a backup file, or '{LATEST}'")
    restore.add_argument("--dir", type=given, metavar="FOLDER", help=f"with '{LATEST}': {folder_help}")
    restore.add_argument(
        "--force", action="store_true",
        help="restore even while agents hold leases, or over a store damaged past being a SQLite file at all"
        " (kept aside byte for byte); another application's database is never restored over",
    )
    add_json(restore)
    restore.set_defaults(handler=cmd_restore)
