"""Files written whole or not at all: temporary file, fsync, rename, fsync of the directory."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from pytest_maf.errors import UsageError

# The files SQLite keeps beside a database, and the writers' lock.
STORE_SUFFIXES = ("", "-wal", "-shm", "-journal", ".lock")


def store_files(db_path: Path) -> list[Path]:
    """The runtime database and the files beside it that are part of it: beside the file a symbolic
    link names too, where SQLite keeps them when the database is opened through the link."""
    real = os.path.realpath(db_path)
    bases = [os.fspath(db_path)] if real == os.path.abspath(db_path) else [os.fspath(db_path), real]
    return [Path(f"{base}{suffix}") for base in bases for suffix in STORE_SUFFIXES]


def read_at_most(path: Path, limit: int) -> bytes:
    """The bytes of the regular file at ``path``; ValueError when it holds more than ``limit``, OSError
    (ESPIPE) when it is no regular file: a device or a pipe never ends, or never starts, a read of it."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO opens without a writer
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.ESPIPE, "not a regular file (a device, a pipe or a socket)", str(path))
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"more than {limit} bytes")
    return data


def in_use_mark(path: Path) -> Path | None:
    """A file beside ``path`` that is only ever beside a database in use (its write-ahead log, shared
    memory or rollback journal, or the writers' lock file), or None."""
    marks = (Path(f"{path}{suffix}") for suffix in STORE_SUFFIXES if suffix)
    return next((mark for mark in marks if os.path.lexists(mark)), None)


def replaced_output(path: Path, what: str = "the output") -> Path:
    """Where an output that is written beside ``path`` and renamed over it goes (a backup, an export):
    the file a symbolic link names (the link stays); refused when that is no regular file (a device,
    a pipe: renaming over it would replace it, not write to it) or is a database in use (files beside
    it, as beside a live store: a backup over another repository's store would replace that store).
    """
    real = Path(os.path.realpath(path))
    try:
        mode = os.stat(path).st_mode  # through every link: /dev/stdout into a pipe is that pipe
    except OSError:  # nothing there yet
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        raise UsageError(f"{path} is not a regular file (a device, a pipe or a socket); give a file name for {what}")
    beside = in_use_mark(real)
    if beside is not None:
        raise UsageError(f"{path} is a database in use ({beside.name} is beside it); choose another file for {what}")
    return real


def _same_file(left: Path, right: Path) -> bool:
    if os.path.realpath(left) == os.path.realpath(right):
        return True
    try:
        return os.path.samefile(left, right)
    except OSError:
        return False


def folder_outside(path: Path, base: Path) -> Path | None:
    """Where the folder of ``path``, under ``base``, really is when a symbolic link takes it out of ``base``
    (``.cursor -> ~/.cursor``), else None: a file written there would land outside the repository."""
    real = Path(os.path.realpath(path.parent))
    return None if real.is_relative_to(os.path.realpath(base)) else real


def checked_output(text: str, protected: Iterable[Path], what: str = "the output") -> Path:
    """An output file a user named: not empty, not a directory, and none of ``protected``.

    ``protected`` is the runtime database's files (:func:`store_files`) and any
    file the command reads; writing over one of them would destroy it.
    """
    if not text.strip() or "\0" in text:
        raise UsageError(f"give a file name for {what}")
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir():
        named = "is a directory" if path.is_dir() else "names a folder (it ends in a slash)"
        raise UsageError(f"{text} {named}; give {what} the name of a file (in that folder, say)")
    for guarded in protected:
        if _same_file(path, guarded):
            raise UsageError(f"{text} is {guarded}, which this command must not overwrite; choose another file for {what}")
    if _in_git_s_own_folder(path):  # its index, HEAD or config written over breaks the repository
        raise UsageError(f"{text} is in git's own folder (.git); choose a file outside it for {what}")
    return path


def _in_git_s_own_folder(path: Path) -> bool:
    """Whether ``path`` names a file in a folder git keeps a repository in: a ``.git`` folder, or
    where the ``.git`` link or ``gitdir:`` file of the repository it is in (or of the current
    directory's) leads, whatever that folder is called."""
    from pytest_maf.repository import git_folders  # here: only a command that writes a file asks

    real = Path(os.path.realpath(path))
    if ".git" in Path(os.path.abspath(path)).parts or ".git" in real.parts:
        return True
    folders = git_folders(Path(os.path.abspath(path)).parent) + git_folders(Path.cwd())
    return any(real.is_relative_to(folder) for folder in folders)


SQLITE_HEADER = b"SQLite format 3\0"
# Where SQLite's header keeps the user_version and the application_id, each 4 bytes big-endian.
SQLITE_USER_VERSION_AT, SQLITE_APPLICATION_ID_AT = 60, 68


def checked_text_output(text: str, protected: Iterable[Path], what: str = "the output") -> Path:
    """:func:`checked_output` for a text, JSON or HTML file, which is never written over a database:
    one in use (a write-ahead log, shared memory, journal or writers' lock beside it: another
    repository's store, say) or one whose first bytes say SQLite (a store or a backup)."""
    path = checked_output(text, protected, what)
    real = Path(os.path.realpath(path))
    beside = in_use_mark(real)
    if beside is not None:
        raise UsageError(f"{text} is a database in use ({beside.name} is beside it); choose another file for {what}")
    if regular_file_head(real, len(SQLITE_HEADER)) == SQLITE_HEADER:
        raise UsageError(f"{text} is a SQLite database; choose another file for {what}")
    return path


@contextlib.contextmanager
def scratch_directory(
    prefix: str = "maf-", dir: Path | str | None = None, shown: Path | None = None,  # noqa: A002 (tempfile's name)
) -> Iterator[Path]:
    """A new private directory (in ``dir``, else the temporary folder) removed whatever ends the block.

    Its name is chosen first and it is made inside the ``try`` that removes it, so no Ctrl-C or
    SIGTERM, whichever thread the signal reaches, lands between its making and that cleanup
    (``tempfile.TemporaryDirectory`` has such a moment, and left the copy of a database behind).
    A name of 128 random bits is nobody else's. When it cannot be made, the error names ``shown`` (the
    user's file it is made for), if given: the scratch folder's own name means nothing to a user.
    """
    import secrets  # here: the guard, which reads this module, makes no scratch directory
    import shutil

    path = Path(dir if dir is not None else tempfile.gettempdir()) / f"{prefix}{secrets.token_hex(16)}"
    try:
        try:
            os.mkdir(path, 0o700)
        except OSError as error:
            if shown is None:
                raise
            raise OSError(error.errno, error.strerror, str(shown)) from None
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def regular_file_head(path: Path, size: int) -> bytes:
    """The first ``size`` bytes of the regular file at ``path``; none when there is no such file (nothing
    there, unreadable, or a device or pipe, which is not opened: a pipe would wait for a writer)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return b""
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError:
        return b""


def json_file_bytes(payload: Any) -> bytes:
    """``payload`` as a JSON file holds it: indented, keys sorted, UTF-8, one line end."""
    text = json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    # A file name that is not UTF-8 (a surrogate escape) is written as the JSON escape \udcff, read back as it was.
    return text.encode("utf-8", "backslashreplace")


def write_json_atomic(path: Path, payload: Any, *, overwrite: bool = True) -> bool:
    """Write ``payload`` as JSON to ``path``: temporary file, fsync, rename (see :func:`write_text_atomic`)."""
    return write_bytes_atomic(path, json_file_bytes(payload), overwrite=overwrite)


def write_text_atomic(path: Path, text: str, *, overwrite: bool = True) -> bool:
    """Write ``text`` to ``path`` so a reader sees the old file or the whole new one.

    The temporary file is made in ``path``'s own folder. With ``overwrite``
    False an existing ``path`` (even a symbolic link) is left as it is and
    False is returned: the temporary file is hard-linked into place, which
    fails when the name is taken, so writing the same name twice is harmless.
    """
    return write_bytes_atomic(path, text.encode("utf-8"), overwrite=overwrite)


def write_bytes_atomic(path: Path, data: bytes, *, overwrite: bool = True) -> bool:
    """:func:`write_text_atomic` for bytes, written exactly as given.

    The file gets the mode a file the user creates gets (0666 less the umask), or keeps
    the mode of the file it replaces. A ``path`` that is (or leads to) a device, a pipe
    or a socket, such as ``/dev/null`` or ``/dev/stdout``, is written to, never replaced.
    """
    try:
        status = os.stat(path)
    except OSError:  # nothing there yet (or a dangling link)
        status = None
    if status is not None and not stat.S_ISREG(status.st_mode) and not stat.S_ISDIR(status.st_mode):
        if not overwrite:
            return False
        with open(path, "wb") as stream:
            stream.write(data)
        return True
    mode = stat.S_IMODE(status.st_mode) if status is not None else _new_file_mode()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:  # said of the file the user named, not of the scratch file beside it
        raise OSError(error.errno, error.strerror, str(path)) from None
    try:
        os.chmod(temporary, mode)  # mkstemp makes it 0600, private to its owner
        _fill(descriptor, data)
        written = True
        if overwrite:
            os.replace(temporary, path)
        else:
            written = _link_unless_taken(temporary, path)
            with contextlib.suppress(FileNotFoundError):  # renamed into place when links are not supported
                os.unlink(temporary)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return written


def standard_stream(path: Path) -> int | None:
    """1 or 2 when ``path`` names the file or pipe this process's standard output or error writes to
    (``/dev/stdout``, ``/proc/self/fd/2``, the file ``>`` redirected it to); else None."""
    try:
        named = os.stat(path)
    except (OSError, ValueError):
        return None
    for descriptor in (1, 2):
        try:
            opened = os.fstat(descriptor)
        except OSError:
            continue
        if (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino):
            return descriptor
    return None


def write_output(path: Path, data: bytes) -> None:
    """Write ``data`` whole to a file the user named for a command's output (``--html``, ``--output``,
    a JUnit report).

    This process's own standard output or error (``--html /dev/stdout`` piped on, or redirected to a
    file) is written where that descriptor writes, never replaced: replacing ``/dev/stdout``, a link,
    left a file in its place for every later process (as root) while the redirect got nothing.
    Through a symbolic link to a file, that file is replaced whole and the link kept. Otherwise as
    :func:`write_bytes_atomic`.
    """
    for stream in (sys.stdout, sys.stderr):  # what was printed before comes first
        with contextlib.suppress(Exception):
            stream.flush()
    descriptor = standard_stream(path)
    if descriptor is not None:
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view):]
        return
    if os.path.islink(path) and os.path.isfile(path):
        if not _may_follow(path):
            raise OSError(errno.EACCES, "a link another user put in a shared folder (such as /tmp) is not followed", str(path))
        path = Path(os.path.realpath(path))
    write_bytes_atomic(path, data)


def _may_follow(link: Path) -> bool:
    """Whether the system would let this process follow ``link`` with ``protected_symlinks`` on: a link
    of its own, or of the folder's owner, or one in a folder that is not sticky and writable by all
    (``/tmp``), where another user could have put it to make a write land on one of this user's files."""
    try:
        owner, folder = os.lstat(link).st_uid, os.stat(link.parent)
    except OSError:
        return False
    shared = folder.st_mode & stat.S_ISVTX and folder.st_mode & stat.S_IWOTH
    return owner == os.geteuid() or not shared or owner == folder.st_uid


# Writing by a folder's descriptor (``dir_fd``) where the platform can: POSIX.
CAN_WRITE_IN_FOLDER = {os.open, os.link, os.unlink, os.stat, os.mkdir} <= os.supports_dir_fd  # renameat too


def write_bytes_in(folder: int, name: str, data: bytes, *, overwrite: bool = True) -> bool:
    """:func:`write_bytes_atomic` into the folder open as ``folder``, by name only (``dir_fd``): a link
    put in place of the folder or one above it since it was opened is never followed. Only where
    :data:`CAN_WRITE_IN_FOLDER`. The file gets the mode of the one it replaces, or a new file's mode."""
    try:
        mode = stat.S_IMODE(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode)
    except OSError:
        mode = _new_file_mode()
    temporary = f".{name}.{os.urandom(6).hex()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    descriptor = os.open(temporary, flags, 0o600, dir_fd=folder)
    try:
        _fill(descriptor, data, mode)
        written = True
        if overwrite:
            os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
        else:
            written = _link_unless_taken_in(folder, temporary, name)
            with contextlib.suppress(FileNotFoundError):  # renamed into place when links are not supported
                os.unlink(temporary, dir_fd=folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=folder)
        raise
    os.fsync(folder)
    return written


def _fill(descriptor: int, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to the new file open as ``descriptor`` (given ``mode`` exactly, whatever the
    umask, when there is one), sync it and close it."""
    with os.fdopen(descriptor, "wb") as handle:
        if mode is not None:
            os.fchmod(handle.fileno(), mode)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the process's umask."""
    mask = os.umask(0o077)  # read by setting it; a file another thread makes meanwhile is only more private
    os.umask(mask)
    return 0o666 & ~mask


_NO_HARD_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS)


def _link_unless_taken(temporary: str, path: Path) -> bool:
    try:
        os.link(temporary, path)
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
        # A file system without hard links: a narrow race instead of none.
        if os.path.lexists(path):
            return False
        os.replace(temporary, path)
    return True


def _link_unless_taken_in(folder: int, temporary: str, name: str) -> bool:
    """:func:`_link_unless_taken` by name in the folder open as ``folder``."""
    try:
        os.link(temporary, name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
        try:
            os.stat(name, dir_fd=folder, follow_symlinks=False)
            return False
        except FileNotFoundError:
            os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
    return True
