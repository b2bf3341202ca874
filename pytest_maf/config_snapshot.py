"""Configuration changes that can be undone: diff against a git revision or a snapshot, snapshot, restore.

The local layer (``maf-config/local.*``, untracked) is what a snapshot
saves: its file name, its exact text and a SHA-256 of both, so a restore
brings the file back byte for byte and refuses a snapshot that was cut,
edited or corrupted before anything is written::

    snapshot = take_snapshot(base)          # a JSON-ready dict
    restore_snapshot(base, read_snapshot(path, base))

:func:`diff` compares the effective configuration with the one the same
layers give when ``maf-config/`` is read from a git revision
(:func:`git_revision_layers`) or the local layer from a snapshot
(:func:`snapshot_layers`); everything else (defaults, ``.env``, the
environment, flags) is the same on both sides.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_maf.config import (
    CONFIG_DIRECTORY, DEFAULTS, LOCAL_STEM, Layer, LayerReader, config_layers, files_on_disk, log_file_problems, merge,
    resolve, shown_value, validate_layer,
)
from pytest_maf.config_files import (
    CONFIG_SUFFIXES, MAX_CONFIG_BYTES, ConfigError, check_config_size, layer_file, parse_config_text, read_bounded_text,
)
from pytest_maf.errors import UsageError
from pytest_maf.files import folder_outside, read_at_most, write_bytes_atomic
from pytest_maf.values import is_utf8

if TYPE_CHECKING:
    from collections.abc import Mapping

SNAPSHOT_FORMAT = "pytest-maf config snapshot"
SNAPSHOT_VERSION = 1
LOCAL_NAMES = tuple(f"{LOCAL_STEM}{suffix}" for suffix in CONFIG_SUFFIXES)
GIT_TIMEOUT_S = 30


# Snapshots of the local layer.


@dataclass(frozen=True)
class Snapshot:
    """The local layer as saved: its file name in maf-config/ and its text, or None for both when there was none."""

    name: str | None
    content: str | None
    created_at: str = ""

    @property
    def checksum(self) -> str:
        return _checksum(self.name, self.content)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": SNAPSHOT_FORMAT, "version": SNAPSHOT_VERSION, "created_at": self.created_at,
            "file": self.name, "content": self.content, "sha256": self.checksum,
        }


def _checksum(name: str | None, content: str | None) -> str:
    return hashlib.sha256(json.dumps([name, content], ensure_ascii=False).encode("utf-8")).hexdigest()


def local_layer_file(base: Path) -> Path | None:
    """``maf-config/local.*`` under ``base``, or None; two of them are an error naming both."""
    return layer_file(base / CONFIG_DIRECTORY, LOCAL_STEM)


def take_snapshot(base: Path, environ: Mapping[str, str] | None = None) -> Snapshot:
    """The local layer as it is now (refused when it is not valid configuration: nothing to come back to)."""
    path = local_layer_file(base)
    created_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if path is None:
        return Snapshot(None, None, created_at)
    snapshot = Snapshot(path.name, read_bounded_text(path), created_at)
    _checked_layer(snapshot, str(path), base, environ)
    return snapshot


def read_snapshot(path: Path, base: Path, environ: Mapping[str, str] | None = None) -> Snapshot:
    """A snapshot file, checked whole: its format, its checksum, and its layer's configuration in ``base``;
    else a :class:`UsageError` saying what it is not."""
    try:
        if path.stat().st_size > 2 * MAX_CONFIG_BYTES:
            raise UsageError(f"{path}: is too large for a configuration snapshot")
        document = json.loads(read_at_most(path, 2 * MAX_CONFIG_BYTES).decode("utf-8"))  # not a device's endless bytes
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        detail = error.strerror if isinstance(error, OSError) and error.strerror else "not JSON"
        raise UsageError(f"{path}: not a configuration snapshot ({detail})") from None
    if not isinstance(document, dict) or document.get("format") != SNAPSHOT_FORMAT:
        raise UsageError(f"{path}: not a configuration snapshot (made by `maf config snapshot`)")
    if document.get("version") != SNAPSHOT_VERSION or isinstance(document.get("version"), bool):
        raise UsageError(f"{path}: snapshot version {document.get('version')!r} is not one this pytest-maf reads"
                         f" ({SNAPSHOT_VERSION})")
    name, content, checksum = document.get("file"), document.get("content"), document.get("sha256")
    well_formed = (name is None and content is None) or (name in LOCAL_NAMES and isinstance(content, str))
    if not well_formed or not isinstance(checksum, str):
        raise UsageError(f"{path}: a snapshot's file must be one of {', '.join(LOCAL_NAMES)} with its content,"
                         " or null with null")
    if isinstance(content, str) and not is_utf8(content):
        raise UsageError(f"{path}: the content is not UTF-8 text (a lone surrogate escape)")
    if checksum != _checksum(name, content):
        raise UsageError(f"{path}: the checksum does not match the content: the snapshot was changed or damaged"
                         " after it was taken")
    created_at = document.get("created_at")
    snapshot = Snapshot(name, content, created_at if isinstance(created_at, str) else "")
    _checked_layer(snapshot, f"{path} ({name})", base, environ)
    return snapshot


def _checked_layer(snapshot: Snapshot, source: str, base: Path, environ: Mapping[str, str] | None) -> Layer | None:
    """The snapshot's layer, which must be valid configuration on its own, as the loader reads it (at
    most :data:`MAX_CONFIG_BYTES`) and as the commands judge it where it goes (its ``logging.file``)."""
    if snapshot.name is None or snapshot.content is None:
        return None
    check_config_size(source, len(snapshot.content.encode("utf-8")))
    layer = Layer(source, parse_config_text(snapshot.content, Path(snapshot.name).suffix, source))
    problems = validate_layer(layer) or _log_file_problems_as_local(base, layer, os.environ if environ is None else environ)
    if problems:
        raise ConfigError(problems)
    return layer


def _log_file_problems_as_local(base: Path, layer: Layer, environ: Mapping[str, str]) -> list[str]:
    """The commands' ``logging.file`` rule on the configuration ``layer`` makes as the local layer of
    ``base``, when the layer sets the log file or the store. When the rest of the configuration is
    invalid on its own (a snapshot is restored to mend it), the layer is judged over the defaults."""
    on_disk = files_on_disk(base / CONFIG_DIRECTORY)

    def with_layer(stem: str) -> Layer | None:
        return layer if stem == LOCAL_STEM else on_disk(stem)

    try:
        values, sources, problems = resolve(config_layers(base, environ, read_layer=with_layer))
        rest_is_valid = not problems
    except ConfigError:
        rest_is_valid = False
    if not rest_is_valid:
        values, sources = merge([Layer("defaults", DEFAULTS), layer])
    if layer.source not in (sources.get("logging.file"), sources.get("runtime.db_path")):
        return []
    return log_file_problems(values, sources, base, Path.cwd())


@dataclass(frozen=True)
class RestoreOutcome:
    written: Path | None  # None: the snapshot had no local layer, or the file was already as saved
    removed: tuple[Path, ...]
    unchanged: bool


def restore_snapshot(base: Path, snapshot: Snapshot) -> RestoreOutcome:
    """Bring the local layer back as saved: the file byte for byte (atomically), and no other local.* beside it.

    Refused (:class:`UsageError`, nothing written or removed) when ``maf-config/`` or a ``local.*`` in
    it is a symbolic link out of ``base``: the write or the removal would land outside the repository.
    """
    directory = base / CONFIG_DIRECTORY
    _refuse_links_out(base, directory)
    present = [directory / name for name in LOCAL_NAMES if (directory / name).is_file()]
    target = None if snapshot.name is None else directory / snapshot.name
    data = None if snapshot.content is None else snapshot.content.encode("utf-8")
    others = tuple(path for path in present if path != target)
    if target is not None and data is not None:
        if target in present and target.read_bytes() == data and not others:
            return RestoreOutcome(None, (), True)
        try:
            write_bytes_atomic(target, data)
        except OSError as error:  # said of the file named, not of the temporary file beside it
            reason = "it is a directory" if target.is_dir() else error.strerror or str(error)
            raise UsageError(f"cannot write {target}: {reason}; nothing was restored") from None
    for path in others:
        os.unlink(path)
    return RestoreOutcome(target, others, target is None and not others)


def _refuse_links_out(base: Path, directory: Path) -> None:
    """A :class:`UsageError` naming the first link, ``directory`` or a ``local.*`` in it, that leads out of ``base``."""
    outside = folder_outside(directory / LOCAL_NAMES[0], base)
    if outside is not None:
        raise UsageError(
            f"{directory} is a symbolic link out of the repository, to {outside}: maf config restore writes"
            f" {CONFIG_DIRECTORY}/local.* only inside it, as maf init does; nothing was restored"
        )
    real_base = os.path.realpath(base)
    for name in LOCAL_NAMES:
        link = directory / name
        target = Path(os.path.realpath(link))
        if link.is_symlink() and not target.is_relative_to(real_base):
            raise UsageError(
                f"{link} is a symbolic link out of the repository, to {target}: maf config restore neither writes"
                " through it nor removes it; remove the link (or copy the snapshot's content there yourself);"
                " nothing was restored"
            )


def snapshot_layers(base: Path, snapshot: Snapshot, snapshot_path: Path) -> LayerReader:
    """maf-config/ as on disk, but with the local layer the snapshot holds."""
    on_disk = files_on_disk(base / CONFIG_DIRECTORY)

    def read(stem: str) -> Layer | None:
        if stem != LOCAL_STEM:
            return on_disk(stem)
        return _checked_layer(snapshot, f"{snapshot_path} ({snapshot.name})", base, None)

    return read


# maf-config/ at a git revision.


def _git(base: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", "-C", str(base), *args], capture_output=True, timeout=GIT_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise UsageError("git is not installed; compare with a snapshot instead (--snapshot FILE)") from None
    except subprocess.TimeoutExpired:
        raise UsageError(f"git {args[0]} took more than {GIT_TIMEOUT_S} s") from None


def git_revision_layers(base: Path, revision: str) -> LayerReader:
    """maf-config/ as it is at ``revision`` (a file missing there is a missing layer)."""
    if not revision.strip() or revision.startswith("-") or not revision.isprintable():
        raise UsageError(f"{revision!r} is not a git revision")
    resolved = _git(base, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    if resolved.returncode != 0:
        if _git(base, "rev-parse", "--git-dir").returncode != 0:
            raise UsageError(f"{base} is not in a git repository; compare with a snapshot instead (--snapshot FILE)")
        if revision == "HEAD" and _git(base, "rev-parse", "--verify", "--quiet", "HEAD").returncode != 0:
            raise UsageError("HEAD has no commit yet; commit maf-config/ first, or compare with a snapshot (--snapshot FILE)")
        raise UsageError(f"unknown git revision {revision!r}")
    commit = resolved.stdout.decode().strip()
    tracked: dict[str, str] = {}  # each layer's name as the working tree spells it: its name in the tree
    if CONFIG_DIRECTORY in _tree_entries(base, commit, CONFIG_DIRECTORY, recursive=False):
        folder, mode = _resolved(base, commit, CONFIG_DIRECTORY, f"{revision}:{CONFIG_DIRECTORY}")
        if mode == _TREE_MODE:  # maf-config/, or the folder a link of that name leads to
            tracked = {
                f"{CONFIG_DIRECTORY}/{name[len(folder) + 1:]}": name
                for name in _tree_entries(base, commit, folder, recursive=True) if name.startswith(f"{folder}/")
            }

    def read(stem: str) -> Layer | None:
        names = [f"{CONFIG_DIRECTORY}/{stem}{suffix}" for suffix in CONFIG_SUFFIXES]
        found = [name for name in names if name in tracked]
        if len(found) > 1:
            raise ConfigError([f"{' and '.join(f'{revision}:{name}' for name in found)}: one layer in {len(found)} files"])
        if not found:
            return None
        source = f"{revision}:{found[0]}"
        name, mode = _resolved(base, commit, tracked[found[0]], source)
        if mode == _TREE_MODE:
            raise ConfigError([f"{source}: is a folder at that revision, not a file"])
        shown = _git(base, "show", f"{commit}:{name}")
        if shown.returncode != 0 or len(shown.stdout) > MAX_CONFIG_BYTES:
            raise ConfigError([f"{source}: cannot read it from git (or above {MAX_CONFIG_BYTES} bytes)"])
        try:
            text = shown.stdout.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError([f"{source}: is not UTF-8 text"]) from None
        return Layer(source, parse_config_text(text, Path(found[0]).suffix, source))

    return read


_SYMBOLIC_LINK_MODE, _TREE_MODE = "120000", "040000"
_MAX_LINKS = 8


def _tree_entries(base: Path, commit: str, path: str, *, recursive: bool) -> dict[str, str]:
    """The entries of ``commit`` at ``path`` (below it, with ``recursive``): each path's mode."""
    listing = _git(base, "ls-tree", *(["-r"] if recursive else []), "-z", commit, "--", path)
    entries = {}
    for entry in listing.stdout.decode("utf-8", "surrogateescape").split("\0"):
        meta, _, name = entry.partition("\t")
        if name:
            entries[name] = meta.split(" ", 1)[0]
    return entries


def _resolved(base: Path, commit: str, path: str, source: str) -> tuple[str, str]:
    """``path`` in the tree of ``commit`` with every symbolic link on the way followed as the working
    tree follows it (a folder's as a file's): its name in the tree and its mode. A link out of the
    repository, a name the revision does not hold, or more than :data:`_MAX_LINKS` links, is a
    :class:`ConfigError`."""
    pending, links = path.split("/"), 0
    walked: list[str] = []
    mode = _TREE_MODE  # the tree's top
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not walked:
                raise ConfigError([f"{source}: leads outside the repository at that revision"])
            walked.pop()
            continue
        name = "/".join([*walked, part])
        mode = _tree_entries(base, commit, name, recursive=False).get(name, "")
        if not mode:
            raise ConfigError([f"{source}: that revision holds no {name}"])
        if mode != _SYMBOLIC_LINK_MODE:
            walked.append(part)
            continue
        links += 1
        if links > _MAX_LINKS:
            raise ConfigError([f"{source}: more than {_MAX_LINKS} symbolic links in a row"])
        target = _git(base, "show", f"{commit}:{name}").stdout.decode("utf-8", "surrogateescape")
        if posixpath.isabs(target):
            raise ConfigError([f"{source}: a symbolic link to {target!r}, outside the repository at that revision"])
        pending[:0] = target.split("/")  # read from the link's own folder
    return "/".join(walked), mode


# The difference.


@dataclass(frozen=True)
class Change:
    key: str
    before: Any
    before_source: str | None  # None: the key is not set on that side
    now: Any
    now_source: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "before": {"value": shown_value(self.key, self.before), "source": self.before_source},
            "now": {"value": shown_value(self.key, self.now), "source": self.now_source},
        }


def diff(before: list[Layer], now: list[Layer]) -> list[Change]:
    """Every key whose effective value differs, with the layer each side's value comes from."""
    before_values, before_sources = merge(before)
    now_values, now_sources = merge(now)
    return [
        Change(key, before_values.get(key), before_sources.get(key), now_values.get(key), now_sources.get(key))
        for key in sorted(set(before_values) | set(now_values))
        if before_values.get(key) != now_values.get(key) or (key in before_values) != (key in now_values)
    ]
