"""Configuration changes that can be undone: `maf config diff`, `snapshot` and `restore`, in a real git repository."""

from __future__ import annotations

import json
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given

from pytest_maf.config import Layer
from pytest_maf.config_snapshot import diff
from tests.workspace import Workspace

KEYS = ["tasks.max_attempts", "tasks.lease_ttl_seconds", "escalation.levels_per_target"]
STACKS = st.lists(st.dictionaries(st.sampled_from(KEYS), st.integers(1, 3), max_size=3), max_size=4)


def stack(layers: list[dict[str, int]]) -> list[Layer]:
    def nested(values: dict[str, int]) -> dict[str, dict[str, int]]:
        tree: dict[str, dict[str, int]] = {}
        for key, value in values.items():
            section, name = key.split(".")
            tree.setdefault(section, {})[name] = value
        return tree

    return [Layer(f"layer-{number}", nested(values)) for number, values in enumerate(layers)]


def effective(layers: list[dict[str, int]], key: str) -> tuple[int | None, str | None]:
    """The value of ``key`` and its layer, read from the highest layer that sets it (the oracle)."""
    for number in reversed(range(len(layers))):
        if key in layers[number]:
            return layers[number][key], f"layer-{number}"
    return None, None


@given(before=STACKS, now=STACKS)
def test_diff_lists_exactly_the_keys_whose_effective_value_differs(before: list[dict[str, int]], now: list[dict[str, int]]) -> None:
    changes = {change.key: change for change in diff(stack(before), stack(now))}

    assert set(changes) == {key for key in KEYS if effective(before, key)[0] != effective(now, key)[0]}
    for key, change in changes.items():
        assert (change.before, change.before_source) == effective(before, key)
        assert (change.now, change.now_source) == effective(now, key)
    assert diff(stack(now), stack(now)) == []


def commit_default(workspace: Workspace, text: str, message: str) -> None:
    workspace.write(workspace.main, "maf-config/default.yaml", text)
    workspace.git(workspace.main, "add", "maf-config/default.yaml")
    workspace.git(workspace.main, "commit", "-q", "-m", message)


def test_diff_names_each_changed_key_with_its_source_on_both_sides(workspace: Workspace) -> None:
    main = workspace.main
    commit_default(workspace, "tasks:\n  max_attempts: 4\n", "four attempts")
    commit_default(workspace, "tasks:\n  max_attempts: 6\n", "six attempts")
    workspace.write(main, "maf-config/default.yaml", "tasks:\n  max_attempts: 7\n")
    workspace.write(main, "maf-config/local.yaml", "logging:\n  level: info\n")  # untracked: absent at any revision

    against_head = workspace.maf(main, "config", "diff")
    against_first = workspace.maf(main, "config", "diff", "HEAD~1", "--json")

    assert against_head.returncode == 0, against_head.stderr
    default, local = main / "maf-config" / "default.yaml", main / "maf-config" / "local.yaml"
    assert against_head.stdout.splitlines() == [
        f'logging.level: "warning" (defaults) -> "info" ({local})',
        f"tasks.max_attempts: 6 (HEAD:maf-config/default.yaml) -> 7 ({default})",
        "2 key(s) differ from HEAD",
    ]
    changes = {change["key"]: change for change in json.loads(against_first.stdout)["changes"]}
    assert changes["tasks.max_attempts"]["before"] == {"value": 4, "source": "HEAD~1:maf-config/default.yaml"}
    assert changes["tasks.max_attempts"]["now"] == {"value": 7, "source": str(default)}


def test_diff_ignores_what_the_revision_and_now_share(workspace: Workspace) -> None:
    commit_default(workspace, "tasks:\n  max_attempts: 4\n", "four attempts")

    result = workspace.maf(workspace.main, "config", "diff", MAF_TASK_MAX_ATTEMPTS="9")  # the environment: both sides

    assert (result.returncode, result.stdout) == (0, "no difference from HEAD\n")


def test_diff_reads_a_committed_layer_through_its_symbolic_link_as_the_working_tree_does(workspace: Workspace) -> None:
    main = workspace.main
    workspace.write(main, "shared/maf.yaml", "tasks:\n  max_attempts: 5\n")
    (main / "maf-config").mkdir(exist_ok=True)
    (main / "maf-config" / "default.yaml").unlink(missing_ok=True)
    (main / "maf-config" / "default.yaml").symlink_to("../shared/maf.yaml")
    workspace.git(main, "add", "shared/maf.yaml", "maf-config/default.yaml")
    workspace.git(main, "commit", "-q", "-m", "the layer is a link")

    same = workspace.maf(main, "config", "diff")  # before: "the top level must be a mapping" (the link's text)
    workspace.write(main, "shared/maf.yaml", "tasks:\n  max_attempts: 6\n")
    changed = workspace.maf(main, "config", "diff")

    assert (same.returncode, same.stdout) == (0, "no difference from HEAD\n"), same.stderr
    assert changed.stdout.splitlines()[0].startswith("tasks.max_attempts: 5 (HEAD:maf-config/default.yaml) -> 6 (")
    (main / "maf-config" / "default.yaml").unlink()
    (main / "maf-config" / "default.yaml").symlink_to("/etc/hostname")
    workspace.git(main, "add", "maf-config/default.yaml")
    workspace.git(main, "commit", "-q", "-m", "a link out")
    out = workspace.maf(main, "config", "diff")
    assert out.returncode == 2 and "a symbolic link to '/etc/hostname', outside the repository at that revision" in out.stderr


def test_diff_reads_a_configuration_folder_committed_as_a_link_and_a_chain_of_eight_links(workspace: Workspace) -> None:
    main = workspace.main
    workspace.write(main, "shared/cfg/default.yaml", "tasks:\n  max_attempts: 5\n")
    if (main / "maf-config").exists():
        workspace.git(main, "rm", "-rq", "maf-config")
    (main / "maf-config").symlink_to("shared/cfg")  # the folder itself a link
    for number in range(7):  # default.yaml -> link-6 -> ... -> link-0 -> real.yaml: eight links
        (main / "shared" / "cfg" / f"link-{number}").symlink_to("real.yaml" if number == 0 else f"link-{number - 1}")
    (main / "shared" / "cfg" / "real.yaml").write_text("tasks:\n  max_attempts: 5\n")
    (main / "shared" / "cfg" / "default.yaml").unlink()
    (main / "shared" / "cfg" / "default.yaml").symlink_to("link-6")
    workspace.git(main, "add", "-A")
    workspace.git(main, "commit", "-q", "-m", "linked configuration")

    same = workspace.maf(main, "config", "diff")  # before: every layer absent at HEAD, or "more than 8 links"
    (main / "shared" / "cfg" / "real.yaml").write_text("tasks:\n  max_attempts: 6\n")
    changed = workspace.maf(main, "config", "diff")

    assert (same.returncode, same.stdout) == (0, "no difference from HEAD\n"), same.stderr
    assert changed.stdout.splitlines()[0].startswith("tasks.max_attempts: 5 (HEAD:maf-config/default.yaml) -> 6 (")


@pytest.mark.parametrize(("target", "expected"), [
    ("../conf/default.yaml", None),  # through conf -> real/conf: before, "which that revision does not hold"
    ("../real/conf", "is a folder at that revision, not a file"),  # before: "the top level must be a mapping"
    ("../real/conf/missing.yaml", "that revision holds no real/conf/missing.yaml"),
])
def test_diff_follows_a_layer_s_link_through_linked_folders_as_the_working_tree_does(
    workspace: Workspace, target: str, expected: str | None
) -> None:
    main = workspace.main
    workspace.write(main, "real/conf/default.yaml", "tasks:\n  max_attempts: 5\n")
    (main / "conf").symlink_to("real/conf")
    layer = main / "maf-config" / "default.yaml"
    layer.parent.mkdir(exist_ok=True)
    layer.unlink(missing_ok=True)
    layer.symlink_to(target)
    workspace.git(main, "add", "-A")
    workspace.git(main, "commit", "-q", "-m", "a layer through a linked folder")

    result = workspace.maf(main, "config", "diff")

    if expected is None:
        assert (result.returncode, result.stdout) == (0, "no difference from HEAD\n"), result.stderr
    else:
        assert result.returncode == 2 and expected in result.stderr


@pytest.mark.parametrize(("revision", "expected"), [
    ("no-such-branch", "maf: error: unknown git revision 'no-such-branch'"),
    ("--output=x", "maf: error: '--output=x' is not a git revision"),
    ("", "maf: error: '' is not a git revision"),  # "$REF" unset; before, HEAD without a word
])
def test_diff_refuses_a_revision_git_does_not_know(workspace: Workspace, revision: str, expected: str) -> None:
    result = workspace.maf(workspace.main, "config", "diff", "--", revision)

    assert (result.returncode, result.stderr.strip()) == (2, expected)


def test_a_worktree_s_own_configuration_folder_is_said_to_be_unread(workspace: Workspace) -> None:
    commit_default(workspace, "tasks:\n  max_attempts: 4\n", "four attempts")
    workspace.write(workspace.second, "maf-config/default.yaml", "tasks:\n  max_attempts: many\n")  # edited there

    validated = workspace.maf(workspace.second, "config", "validate")
    diffed = workspace.maf(workspace.second, "config", "diff")

    # Before: "valid" and "no difference", and not a word that the file edited is not the one read.
    note = (f"note: {workspace.second / 'maf-config'} is not read: every worktree of this repository reads"
            f" {workspace.main / 'maf-config'} (the main worktree's)")
    assert validated.returncode == 0 and note in validated.stdout
    assert diffed.returncode == 0 and note in diffed.stderr
    assert note not in workspace.maf(workspace.main, "config", "validate").stdout


def test_diff_against_a_file_that_is_no_snapshot_says_so_and_nothing_about_restoring(workspace: Workspace) -> None:
    workspace.write(workspace.main, "notes.txt", "not a snapshot\n")

    diffed = workspace.maf(workspace.main, "config", "diff", "--snapshot", "notes.txt")
    restored = workspace.maf(workspace.main, "config", "restore", "notes.txt")

    assert (diffed.returncode, diffed.stderr) == (2, "maf: error: notes.txt: not a configuration snapshot (not JSON)\n")
    assert (restored.returncode, restored.stderr) == (
        2, "maf: error: notes.txt: not a configuration snapshot (not JSON); nothing was restored\n"
    )


LOCAL = "# kept on this machine only\r\nlogging:\n  level: \"debug\"   # ünïcode, CRLF, no final newline\n  format: json"


def test_a_snapshot_restores_the_local_layer_byte_for_byte(workspace: Workspace) -> None:
    main = workspace.main
    local = main / "maf-config" / "local.yaml"
    local.parent.mkdir(exist_ok=True)
    local.write_bytes(LOCAL.encode("utf-8"))

    saved = workspace.maf(main, "config", "snapshot", "--output", "../local-snapshot.json")
    local.unlink()
    (main / "maf-config" / "local.json").write_text('{"logging": {"level": "error"}}')
    compared = workspace.maf(main, "config", "diff", "--snapshot", "../local-snapshot.json")
    restored = workspace.maf(main, "config", "restore", "../local-snapshot.json")

    assert saved.returncode == restored.returncode == compared.returncode == 0, saved.stderr + restored.stderr
    assert local.read_bytes() == LOCAL.encode("utf-8")
    assert not (main / "maf-config" / "local.json").exists()  # the layer is one file again
    assert f"removed {main / 'maf-config' / 'local.json'}" in restored.stdout
    assert 'logging.level: "debug" (../local-snapshot.json (local.yaml)) -> "error"' in compared.stdout
    assert json.loads(workspace.maf(main, "config", "show", "--json").stdout)["values"]["logging.format"] == {
        "value": "json", "source": str(local),
    }


def test_a_snapshot_of_no_local_layer_restores_its_absence(workspace: Workspace) -> None:
    snapshot = workspace.maf(workspace.main, "config", "snapshot")
    (workspace.main / "snapshot.json").write_text(snapshot.stdout)
    workspace.write(workspace.main, "maf-config/local.yml", "tasks: {max_attempts: 2}\n")

    restored = workspace.maf(workspace.main, "config", "restore", "snapshot.json", "--json")

    assert json.loads(snapshot.stdout)["file"] is None
    assert json.loads(restored.stdout)["removed"] == [str(workspace.main / "maf-config" / "local.yml")]
    assert not (workspace.main / "maf-config" / "local.yml").exists()


def _tampered(document: dict[str, object], **changes: object) -> dict[str, object]:
    """The snapshot with ``changes``, and a checksum recomputed as a careful tamperer would."""
    from pytest_maf.config_snapshot import _checksum

    changed = {**document, **changes}
    changed["sha256"] = _checksum(changed["file"], changed["content"])  # type: ignore[arg-type]
    return changed


@pytest.mark.parametrize(("damage", "expected"), [
    (lambda text, document: text[: len(text) // 2], "not a configuration snapshot (not JSON)"),
    (lambda text, document: text.replace("level: info", "level: crit"), "the checksum does not match"),
    (lambda text, document: json.dumps({**document, "sha256": "0" * 64}), "the checksum does not match"),
    (lambda text, document: json.dumps(_tampered(document, content="logging:\n  level: loud\n")), "unknown level 'loud'"),
    (lambda text, document: json.dumps(_tampered(document, file="../../evil.yaml")), "must be one of local.json"),
    (lambda text, document: json.dumps(_tampered(document, content="tasks: [1,")), "does not parse"),
    (lambda text, document: json.dumps({**document, "format": "other"}), "not a configuration snapshot"),
    (lambda text, document: "", "not a configuration snapshot"),
    (lambda text, document: "[" * 100_000 + "]" * 100_000, "not a configuration snapshot (not JSON)"),
    (lambda text, document: text.replace("level: info", "level: \\ud800"), "not UTF-8 text"),
    (lambda text, document: json.dumps({**document, "version": True}), "snapshot version True"),
], ids=["truncated", "edited", "bad-checksum", "invalid-setting", "path-escape", "unparsable", "foreign", "empty",
        "nested-too-deep", "lone-surrogate", "version-not-a-number"])
def test_a_damaged_or_tampered_snapshot_is_refused_with_nothing_written(workspace: Workspace, damage: object, expected: str) -> None:
    main = workspace.main
    workspace.write(main, "maf-config/local.yaml", "logging:\n  level: info\n")
    saved = workspace.maf(main, "config", "snapshot").stdout
    workspace.write(main, "maf-config/local.yaml", "logging:\n  level: error\n")
    before = {path.name: path.read_bytes() for path in (main / "maf-config").iterdir()}
    (main / "snapshot.json").write_text(damage(saved, json.loads(saved)))  # type: ignore[operator]

    result = workspace.maf(main, "config", "restore", "snapshot.json")

    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("maf: error: ") and expected in line
    assert {path.name: path.read_bytes() for path in (main / "maf-config").iterdir()} == before
    assert not (main.parent / "evil.yaml").exists()


@pytest.mark.parametrize("output", [".maf/runtime.db", "maf-config/default.yaml", ".env"])
def test_a_snapshot_never_overwrites_the_store_or_a_configuration_file(workspace: Workspace, output: str) -> None:
    workspace.write(workspace.main, "maf-config/default.yaml", "tasks:\n  max_attempts: 4\n")
    workspace.write(workspace.main, ".env", "LOG_LEVEL=info\n")
    target = workspace.main / output
    before = target.read_bytes()

    result = workspace.maf(workspace.main, "config", "snapshot", "--output", output)

    assert result.returncode == 2 and "must not overwrite" in result.stderr
    assert target.read_bytes() == before


@pytest.mark.parametrize("output", ["maf-config/local.json", "maf-config/default.json", "maf-config/notes/snapshot.json"])
def test_a_snapshot_is_never_written_into_the_configuration_folder(workspace: Workspace, output: str) -> None:
    """A new file there can be a layer of its own: local.json beside local.yaml made every command exit 2."""
    workspace.write(workspace.main, "maf-config/local.yaml", "tasks:\n  max_attempts: 4\n")
    before = sorted(str(path) for path in (workspace.main / "maf-config").rglob("*"))

    result = workspace.maf(workspace.main, "config", "snapshot", "--output", output)

    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("maf: error: ") and "holds the configuration" in line
    assert sorted(str(path) for path in (workspace.main / "maf-config").rglob("*")) == before
    assert workspace.maf(workspace.main, "config", "show").returncode == 0


def test_a_restore_over_a_folder_of_the_layer_s_name_says_so_and_writes_nothing(workspace: Workspace) -> None:
    main = workspace.main
    workspace.write(main, "maf-config/local.yaml", "tasks:\n  max_attempts: 4\n")
    assert workspace.maf(main, "config", "snapshot", "--output", "snapshot.json").returncode == 0
    (main / "maf-config" / "local.yaml").unlink()
    (main / "maf-config" / "local.yaml").mkdir()
    before = sorted(path.name for path in (main / "maf-config").iterdir())

    result = workspace.maf(main, "config", "restore", "snapshot.json")

    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line == f"maf: error: cannot write {main / 'maf-config' / 'local.yaml'}: it is a directory; nothing was restored"
    assert sorted(path.name for path in (main / "maf-config").iterdir()) == before


def _snapshot_of_a_local_layer(workspace: Workspace) -> Path:
    """A valid snapshot holding ``local.yaml``, saved beside the repository; maf-config/local.* gone after."""
    main = workspace.main
    workspace.write(main, "maf-config/local.yaml", "tasks:\n  max_attempts: 4\n")
    assert workspace.maf(main, "config", "snapshot", "--output", "../snapshot.json").returncode == 0
    (main / "maf-config" / "local.yaml").unlink()
    return main.parent / "snapshot.json"


def _files_in(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_a_restore_through_a_configuration_folder_linked_out_of_the_repository_is_refused(
    workspace: Workspace, tmp_path: Path
) -> None:
    """As maf init refuses it: the write, and the removal of the other local.*, landed outside."""
    main = workspace.main
    snapshot = _snapshot_of_a_local_layer(workspace)
    outside = tmp_path / "someone-elses-config"
    outside.mkdir()
    (outside / "local.json").write_text('{"tasks": {"max_attempts": 3}}')
    for path in (main / "maf-config").iterdir():
        path.rename(outside / path.name)
    (main / "maf-config").rmdir()
    (main / "maf-config").symlink_to(outside, target_is_directory=True)
    before = _files_in(outside)

    result = workspace.maf(main, "config", "restore", str(snapshot))

    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"maf: error: {main / 'maf-config'} is a symbolic link out of the repository, to ")
    assert line.endswith("nothing was restored")
    assert _files_in(outside) == before  # local.json still there, no local.yaml written


@pytest.mark.parametrize("name", ["local.yaml", "local.json"])
def test_a_restore_never_replaces_or_removes_a_local_layer_linked_out_of_the_repository(
    workspace: Workspace, tmp_path: Path, name: str
) -> None:
    main = workspace.main
    snapshot = _snapshot_of_a_local_layer(workspace)
    kept = tmp_path / f"dotfiles-{name}"
    kept.write_text('{"tasks": {"max_attempts": 3}}' if name.endswith("json") else "tasks:\n  max_attempts: 3\n")
    (main / "maf-config" / name).symlink_to(kept)
    before = _files_in(main / "maf-config")

    result = workspace.maf(main, "config", "restore", str(snapshot))

    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"maf: error: {main / 'maf-config' / name} is a symbolic link out of the repository, to {kept}")
    assert (main / "maf-config" / name).is_symlink() and _files_in(main / "maf-config") == before
