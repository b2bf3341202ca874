"""Layered configuration: where pytest-maf's settings come from, and their validation.

Lowest to highest precedence:

1. built-in defaults (:data:`DEFAULTS`)
2. ``.env`` at the repository root: the ``MAF_*`` variables of settings it sets
   (:mod:`pytest_maf.config_files` reads it as data; no shell runs it)
3. ``maf-config/default.{json,yaml,yml}``
4. ``maf-config/<env>.{json,yaml,yml}``, where ``<env>`` is ``MAF_ENV``, else ``NODE_ENV``
   (from the environment, else from ``.env``)
5. ``maf-config/environments/<env>.{json,yaml,yml}``, for the same named environment
6. ``maf-config/local.{json,yaml,yml}`` (meant to be gitignored)
7. an explicit ``--config FILE``
8. ``MAF_*`` environment variables (:data:`ENVIRONMENT_VARIABLES`)
9. command-line flags

Each layer is one file: ``default.json`` beside ``default.yaml`` is an error naming both.

``maf-config/`` sits at the repository root (the current directory outside
git). Every problem is reported as ``source: key.path: message``; unknown keys
are errors. The store, the plugin and every command read settings from here.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Callable
from pathlib import Path

from pytest_maf.config_files import CONFIG_SUFFIXES as CONFIG_SUFFIXES
from pytest_maf.config_files import DOTENV_NAME, layer_file, read_config_file, read_dotenv
from pytest_maf.config_files import ConfigError as ConfigError
from pytest_maf.database_url import is_database_url, is_other_url, redact_url, schema_problem, url_problem
from pytest_maf.errors import UsageError
from pytest_maf.ids import id_problem
from pytest_maf.light_dataclass import dataclass, field
from pytest_maf.repository import find_repository_root as find_repository_root
from pytest_maf.values import is_utf8

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

DB_RELATIVE_PATH = Path(".maf") / "runtime.db"
CONFIG_DIRECTORY = "maf-config"
LOCAL_STEM = "local"  # maf-config/local.*: the untracked layer `maf config snapshot` saves
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DEFAULT_MAX_ATTEMPTS = 3

def _names(text: str) -> list[str]:
    """A comma-separated list from an environment variable."""
    return [part.strip() for part in text.split(",") if part.strip()]


@dataclass(frozen=True)
class Setting:
    """One setting, declared once: its key, default, help, environment variable and bounds.

    The defaults, the descriptions, the environment mapping, the validation and
    the command line's "(default: ...)" notes are all derived from :data:`SETTINGS`.
    """

    key: str
    default: Any
    help: str
    env: str | None = None
    parse: Callable[[str], Any] | None = None  # how the environment variable is read (default: int or str)
    minimum: int | None = None
    maximum: int | None = None

    def from_environment(self, text: str) -> Any:
        if self.parse is not None:
            return self.parse(text)
        return _whole_number(text) if isinstance(self.default, int) else text


def _whole_number(text: str) -> int:
    """``text`` as an int, in ASCII digits only: ``int()`` also reads ``1_0`` and other scripts' digits."""
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise ValueError(f"not a whole number: {text!r}")
    return int(text)


SETTINGS: tuple[Setting, ...] = (
    Setting("runtime.db_path", ".maf/runtime.db", "runtime database, relative to the repository root", "MAF_DB_PATH"),
    Setting(
        "runtime.database_url", "",
        "a postgresql://user@host/database URL: the store lives there instead of in db_path"
        " (agents on many machines share it; needs pytest-maf[postgres]); empty: SQLite", "MAF_DATABASE_URL",
    ),
    Setting("runtime.database_schema", "maf", "the PostgreSQL schema that holds the store (one per repository)",
            "MAF_DATABASE_SCHEMA"),
    Setting("runtime.busy_timeout_seconds", 30,
            "longest a command waits for another writer before it exits 5 (store busy)", "MAF_BUSY_TIMEOUT", None, 1, 3600),
    Setting("tasks.lease_ttl_seconds", 1800,
            "task lease length; every operation by the holder extends the lease to this from now",
            "MAF_TASK_LEASE_TTL", None, 1, 31_536_000),
    Setting("tasks.lease_max_ttl_seconds", 14400, "longest task lease a caller may ask for",
            "MAF_TASK_LEASE_MAX_TTL", None, 1, 31_536_000),
    Setting("tasks.max_attempts", DEFAULT_MAX_ATTEMPTS, "claims before a task is DEAD", "MAF_TASK_MAX_ATTEMPTS", None, 1, 1000),
    Setting("reservations.default_ttl_minutes", 30, "default file reservation length",
            "MAF_RESERVATION_DEFAULT_TIMEOUT", None, 1, 525_600),
    Setting("reservations.max_ttl_minutes", 120, "longest file reservation a caller may ask for",
            "MAF_RESERVATION_MAX_TIMEOUT", None, 1, 525_600),
    Setting("agent_mail.root", ".agent-mail", "agent-mail root, relative to the repository root", "MAF_AGENT_MAIL_ROOT"),
    Setting("escalation.targets", ["minimax-debug-1", "codex-senior"],
            "escalation targets, in order: the chain an escalation climbs (an example chain: set your own agents)"),
    Setting("escalation.levels_per_target", 2, "levels an escalation stays with a target before the next one",
            None, None, 1, 1000),
    Setting("preflight.timeout_seconds", 60, "longest a preflight run may take", "MAF_PREFLIGHT_TIMEOUT", None, 1, 86_400),
    Setting("preflight.min_python", "3.10",
            "oldest Python accepted (pytest-maf itself needs 3.10; raise it to require more)"),
    Setting("preflight.recommended_python", "3.11", "Python below this gives a warning"),
    Setting("preflight.min_sqlite", "3.35.0", "oldest SQLite library accepted"),
    Setting("preflight.required_env", [], "environment variables that must be set (values are never shown)",
            "MAF_REQUIRED_ENV", _names),
    Setting("preflight.tool_versions", {}, "tools and their minimum versions, such as {node: '>= 18.17'}"),
    Setting("preflight.mcp_clients", {
        "claude-code": ".mcp.json",
        "codex": ".codex/config.toml",
        "cursor": ".cursor/mcp.json",
        "gemini": ".gemini/settings.json",
    }, "MCP client configuration files to check, by client"),
    Setting("preflight.mcp_required", [], "clients whose MCP file must exist", "MAF_MCP_REQUIRED", _names),
    Setting("preflight.min_free_disk_mb", 100, "free disk space required where the database lives",
            "MAF_MIN_FREE_DISK_MB", None, 1, 1_000_000_000),
    Setting("preflight.acknowledged_warnings", {},
            "warning checks a person has accepted, by check id: {by: who, on: YYYY-MM-DD, reason: why};"
            " they stay recorded but no longer warn"),
    Setting("agents.stale_after_seconds", 900,
            "an agent silent for longer than this is shown as stale (maf agents, maf_agents{state} in maf metrics)",
            "MAF_AGENT_STALE_AFTER", None, 1, 31_536_000),
    Setting("logging.level", "warning", "debug, info, warning, error or critical", "LOG_LEVEL", str.lower),
    Setting("logging.format", "text", "text or json", "MAF_LOG_FORMAT", str.lower),
    Setting("logging.file", "",
            "also write every event as a JSON line to this file, relative to the repository root; empty: stderr only",
            "MAF_LOG_FILE"),
    Setting("logging.file_level", "info", "the lowest level written to logging.file", "MAF_LOG_FILE_LEVEL", str.lower),
    Setting("logging.max_bytes", 10_485_760, "size at which logging.file is rotated to FILE.1 (FILE.1 to FILE.2, ...)",
            "MAF_LOG_MAX_BYTES", None, 1024, 1_073_741_824),
    Setting("logging.backup_count", 5, "rotated log files kept (FILE.1 ... FILE.N); older ones are deleted",
            "MAF_LOG_BACKUP_COUNT", None, 1, 1000),
)
SETTINGS_BY_KEY: dict[str, Setting] = {setting.key: setting for setting in SETTINGS}


def _copied(value: Any) -> Any:
    """A deep copy of plain data (dicts, lists and scalars, as a setting's value is), without the copy module."""
    if isinstance(value, dict):
        return {key: _copied(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copied(item) for item in value]
    return value


def _defaults_tree() -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for setting in SETTINGS:
        section, key = setting.key.split(".", 1)
        tree.setdefault(section, {})[key] = _copied(setting.default)
    return tree


DEFAULTS: dict[str, Any] = _defaults_tree()
# What each key means, for `maf init`'s commented starter file and for `--help`.
DESCRIPTIONS: dict[str, str] = {setting.key: setting.help for setting in SETTINGS}
# Environment variable -> (key path, parser).
ENVIRONMENT_VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    setting.env: (setting.key, setting.from_environment) for setting in SETTINGS if setting.env
}


def default_note(key: str, maximum_key: str | None = None) -> str:
    """The "default: ..." of a command-line option that stands for setting ``key``,
    and its upper bound when another setting (``maximum_key``) gives one."""
    setting = SETTINGS_BY_KEY[key]
    note = f"default: {setting.default}" + (f", {setting.env}" if setting.env else "")
    if maximum_key is not None:
        maximum = SETTINGS_BY_KEY[maximum_key]
        note += f"; at most {maximum.default}" + (f", {maximum.env}" if maximum.env else "")
    return note


@dataclass(frozen=True)
class Settings:
    """Resolved settings. Build with :func:`load_settings`; the defaults live in :data:`SETTINGS`."""

    db_path: Path
    mail_root: Path
    repo_root: Path | None
    database_url: str | None  # set: the store is on PostgreSQL, and db_path is not used
    database_schema: str
    busy_timeout_s: int
    task_lease_ttl_s: int
    task_lease_max_ttl_s: int
    max_attempts: int
    reservation_ttl_min: int
    reservation_max_ttl_min: int
    escalation_targets: tuple[str, ...]
    escalation_levels_per_target: int
    preflight_timeout_s: int
    min_python: str
    recommended_python: str
    min_sqlite: str
    required_env: tuple[str, ...]
    tool_versions: tuple[tuple[str, str], ...]
    mcp_clients: tuple[tuple[str, str], ...]
    mcp_required: tuple[str, ...]
    min_free_disk_mb: int
    # check id -> {"by": ..., "on": "YYYY-MM-DD", "reason": ...}
    acknowledged_warnings: Mapping[str, Mapping[str, str]]
    log_level: str
    log_format: str
    log_file: Path | None  # also write JSON lines here (rotated); None: stderr only
    log_file_level: str
    log_max_bytes: int
    log_backup_count: int
    agent_stale_after_s: int
    sources: Mapping[str, str] = field(default_factory=dict)  # key path -> where its value came from

    @property
    def store_location(self) -> Path | str:
        """What :func:`pytest_maf.store.open_store` opens: the PostgreSQL URL when one is set, else ``db_path``."""
        return self.database_url or self.db_path

    @property
    def store_shown(self) -> str:
        """The store as output may name it: ``db_path``, or the URL without its password."""
        return f"{redact_url(self.database_url)} (schema {self.database_schema})" if self.database_url else str(self.db_path)

    def lease_ttl_ms(self, ttl_s: float | None) -> int:
        """Validate a requested task lease TTL (seconds; None: the default) and return it in ms."""
        return _bounded_ttl(ttl_s, self.task_lease_ttl_s, self.task_lease_max_ttl_s, "seconds", "MAF_TASK_LEASE_MAX_TTL")

    def reservation_ttl_ms(self, ttl_min: float | None) -> int:
        """Validate a requested reservation TTL (minutes; None: the default) and return it in ms."""
        return 60 * _bounded_ttl(
            ttl_min, self.reservation_ttl_min, self.reservation_max_ttl_min, "minutes", "MAF_RESERVATION_MAX_TIMEOUT"
        )


def _bounded_ttl(value: float | None, default: int, maximum: int, unit: str, variable: str) -> int:
    """A TTL checked against 0 and the maximum, in thousandths of ``unit`` (ms for seconds)."""
    value = default if value is None else value
    if not value > 0:
        raise UsageError(f"--ttl must be above 0 {unit}, got {value:.15g}")
    if value * 1000 < 1:  # else 0 once counted, and refused as if 0 had been given
        raise UsageError(f"--ttl {value:.15g} is less than the thousandth of a {unit[:-1]} it is counted in")
    if value > maximum:
        raise UsageError(f"--ttl {value:.15g} is above the maximum of {maximum} {unit} (raise {variable} to allow it)")
    return int(value * 1000)


# Layers.


@dataclass(frozen=True)
class Layer:
    source: str  # a file path, "defaults", "environment" or "command line"
    values: dict[str, Any]


def environment_name(environ: Mapping[str, str], explicit: str | None = None) -> str | None:
    return explicit or environ.get("MAF_ENV") or environ.get("NODE_ENV") or None


# Reads one layer of maf-config/ by its name without suffix ("default", "environments/staging").
LayerReader = Callable[[str], "Layer | None"]


def files_on_disk(directory: Path) -> LayerReader:
    """The layers of ``directory`` (``maf-config/``) as they are on disk."""

    def read(stem: str) -> Layer | None:
        path = layer_file(directory / Path(stem).parent, Path(stem).name)
        return None if path is None else Layer(str(path), read_config_file(path))

    return read


def dotenv_variables(base: Path) -> tuple[Path, dict[str, str]]:
    """The repository's ``.env`` and the variables it sets (none when there is no such file)."""
    path = base / DOTENV_NAME
    return path, (read_dotenv(path) if path.is_file() else {})


def unread_dotenv_variables(base: Path) -> list[str]:
    """``.env`` variables named like pytest-maf's (``MAF_*``) that no setting reads: a typo, or one
    (such as MAF_AGENT_ID) that only the real environment sets."""
    names = dotenv_variables(base)[1]
    return sorted(name for name in names if name.startswith("MAF_") and name not in (*ENVIRONMENT_VARIABLES, "MAF_ENV"))


def shadowed_dotenv_variables(base: Path, sources: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """``.env`` variables whose setting a higher layer sets after all: (variable, key, that layer's source).

    ``maf init``'s starter ``default.yaml`` sets every key, so a ``.env`` beside it sets nothing.
    """
    dotenv_path, names = dotenv_variables(base)
    shadowed = []
    for name, value in sorted(names.items()):
        key = ENVIRONMENT_VARIABLES[name][0] if name in ENVIRONMENT_VARIABLES else None
        if key is not None and value.strip() and sources.get(key) not in (None, "defaults", str(dotenv_path)):
            shadowed.append((name, key, sources[key]))
    return shadowed


def empty_dotenv_variables(base: Path) -> list[tuple[str, str]]:
    """``.env`` settings given an empty value, which sets nothing: (variable, key)."""
    names = dotenv_variables(base)[1]
    return [(name, ENVIRONMENT_VARIABLES[name][0]) for name, value in sorted(names.items())
            if name in ENVIRONMENT_VARIABLES and not value.strip()]


def config_environment(base: Path, environ: Mapping[str, str], explicit: str | None = None) -> str | None:
    """The environment that selects ``maf-config/<env>.*``: --env, else MAF_ENV or NODE_ENV, else from ``.env``."""
    return environment_name({**dotenv_variables(base)[1], **environ}, explicit)


def config_layers(
    base: Path,
    environ: Mapping[str, str],
    env: str | None = None,
    config_file: Path | None = None,
    flags: Mapping[str, Any] | None = None,
    read_layer: LayerReader | None = None,
) -> list[Layer]:
    """Every layer that applies, lowest precedence first.

    ``read_layer`` reads the layers of ``maf-config/`` (default: from disk); ``maf config diff``
    passes one that reads them from a git revision or a snapshot instead.
    """
    read_layer = read_layer or files_on_disk(base / CONFIG_DIRECTORY)
    dotenv_path, dotenv = dotenv_variables(base)
    layers = [Layer("defaults", _copied(DEFAULTS))]
    if dotenv_path.is_file():
        layers.append(Layer(str(dotenv_path), _variables_layer(str(dotenv_path), dotenv)))
    stems = ["default"]
    name = environment_name({**dotenv, **environ}, env)
    if name:
        if "/" in name or name in (".", ".."):
            given_by = "--env" if env else "environment" if environment_name(environ) else str(dotenv_path)
            raise ConfigError([f"{given_by}: {name!r} is not an environment name"])
        stems += [name, f"environments/{name}"]
    layers += [layer for layer in map(read_layer, [*stems, LOCAL_STEM]) if layer is not None]
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError([f"{config_file}: {_not_a_file(config_file)}"])
        layers.append(Layer(str(config_file), read_config_file(config_file)))
    layers.append(Layer("environment", _variables_layer("environment", environ)))
    if flags:
        command_line: dict[str, Any] = {}
        for key_path, value in flags.items():
            if value is not None:
                _set_path(command_line, key_path, value)
        layers.append(Layer("command line", command_line))
    return layers


def _variables_layer(source: str, variables: Mapping[str, str]) -> dict[str, Any]:
    """The settings that environment variables (or a ``.env`` file's) set; a malformed number is an error."""
    tree: dict[str, Any] = {}
    problems = []
    for variable, (key_path, parse) in ENVIRONMENT_VARIABLES.items():
        raw = variables.get(variable)
        if raw is None or raw.strip() == "":
            continue
        try:
            _set_path(tree, key_path, parse(raw.strip()))
        except ValueError:
            problems.append(f"{source}: {variable}={raw!r}: expected a whole number")
    if problems:
        raise ConfigError(problems)
    return tree


def _set_path(tree: dict[str, Any], key_path: str, value: Any) -> None:
    *parents, last = key_path.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[last] = value


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path.count(".") == 0:
            found.update(_leaves(value, f"{path}."))
        else:
            found[path] = value
    return found


# Validation (pure): each key path's expected type and further rules.

_KINDS: dict[str, tuple[type, ...]] = {path: (type(value),) for path, value in _leaves(DEFAULTS).items()}


def _type_name(kinds: tuple[type, ...]) -> str:
    return {int: "a whole number", str: "a string", list: "a list", dict: "a mapping"}.get(kinds[0], kinds[0].__name__)


def validate_layer(layer: Layer) -> list[str]:
    """Problems in one layer: unknown sections or keys, wrong types, bad values."""
    problems = []
    for section, keys in layer.values.items():
        if section not in DEFAULTS:
            problems.append(f"{layer.source}: {section}: unknown section (known: {', '.join(DEFAULTS)})")
            continue
        if not isinstance(keys, dict):
            problems.append(f"{layer.source}: {section}: expected a mapping of keys")
            continue
        for key, value in keys.items():
            path = f"{section}.{key}"
            if path not in _KINDS:
                known = ", ".join(DEFAULTS[section])
                problems.append(f"{layer.source}: {path}: unknown key (known in {section}: {known})")
                continue
            kinds = _KINDS[path]
            if isinstance(value, bool) or not isinstance(value, kinds):
                shown = "" if path == "runtime.database_url" else f" {value!r}"  # it may hold a password
                problems.append(f"{layer.source}: {path}: expected {_type_name(kinds)}, got {type(value).__name__}{shown}")
                continue
            problem = _value_problem(path, value)
            if problem:
                problems.append(f"{layer.source}: {path}: {problem}")
    return problems




def _value_problem(path: str, value: Any) -> str | None:
    setting = SETTINGS_BY_KEY[path]
    if setting.maximum is not None and isinstance(value, int) and value > setting.maximum:
        return f"must be at most {setting.maximum}, got {value}"
    if path in ("runtime.db_path", "agent_mail.root") and not value.strip():
        return f"expected a file path, got an empty value ({value!r})"
    if path in ("runtime.db_path", "agent_mail.root") and not is_utf8(value):
        return f"expected a file path in UTF-8, got {value!r} (a byte that is not UTF-8)"
    if path in ("runtime.db_path", "agent_mail.root") and not value.isprintable():
        return f"expected a file path without control characters, got {value!r}"
    if path == "runtime.db_path" and is_other_url(value):  # never echoes the value: it may hold a password
        return "expected a file path or a postgresql:// (or postgres://) URL, got a URL of another scheme"
    if path == "runtime.db_path" and not is_database_url(value) and value.endswith(("/", os.sep)):
        return f"{value!r} names a folder; give the database file, such as {value.rstrip('/' + os.sep) or '.'}/runtime.db"
    if path == "runtime.database_url" and value.strip():
        return url_problem(value)  # never echoes the value: it may hold a password
    if path == "runtime.database_schema":
        return schema_problem(value)
    if setting.minimum is not None and isinstance(value, int) and value < setting.minimum:
        return f"{'must be above 0' if setting.minimum == 1 else f'must be at least {setting.minimum}'}, got {value}"
    if path == "logging.file" and not value.isprintable():
        return f"expected a file path without control characters, got {value!r}"
    if path in ("logging.level", "logging.file_level") and value not in LOG_LEVELS:
        return f"unknown level {value!r}; use one of {', '.join(LOG_LEVELS)}"
    if path == "logging.format" and value not in ("text", "json"):
        return f"unknown format {value!r}; use text or json"
    if path in ("preflight.required_env", "preflight.mcp_required", "escalation.targets"):
        if not all(isinstance(item, str) and item for item in value):
            return "expected a list of non-empty strings"
        if path == "escalation.targets" and not value:
            return "give at least one escalation target"
        if path == "escalation.targets":
            found = [(target, id_problem(target)) for target in value]
            shown = [f"{target!r} {problem}" for target, problem in found if problem]
            if shown:
                return "; ".join(shown)
    if path in ("preflight.min_python", "preflight.recommended_python", "preflight.min_sqlite"):
        if not re.fullmatch(r"\d+(\.\d+){0,2}", value):
            return f"expected a version such as 3.11 or 3.35.0, got {value!r}"
    if path in ("preflight.tool_versions", "preflight.mcp_clients"):
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            return "expected a mapping of names to strings"
    if path == "preflight.acknowledged_warnings":
        problems = [problem for check, entry in value.items() for problem in _acknowledgement_problems(check, entry)]
        return "; ".join(problems) or None
    return None


ACKNOWLEDGEMENT_KEYS = ("by", "on", "reason")


def _acknowledgement_problems(check: Any, entry: Any) -> list[str]:
    """What is wrong with one ``check: {by, on, reason}`` entry of preflight.acknowledged_warnings."""
    if not isinstance(check, str) or not check:
        return [f"{check!r}: expected a check id such as env.sqlite-wal-reset"]
    example = f"{check}: {{by: <who>, on: <YYYY-MM-DD>, reason: <why>}}"
    if not isinstance(entry, dict):
        return [f"{check}: expected a mapping, as in {example}"]
    problems = [f"{check}.{key}: unknown key (known: by, on, reason)" for key in entry if key not in ACKNOWLEDGEMENT_KEYS]
    for key, what in (("by", "who acknowledged it"), ("reason", "why it is accepted")):
        if not (isinstance(entry.get(key), str) and entry[key].strip()):
            problems.append(f"{check}.{key}: required, a non-empty string saying {what}")
    on = entry.get("on")
    try:
        valid_date = isinstance(on, str) and len(on) == 10 and bool(datetime.date.fromisoformat(on))
    except ValueError:
        valid_date = False
    if not valid_date:
        problems.append(f"{check}.on: required, the date of the acknowledgement as YYYY-MM-DD, got {on!r}")
    return problems


def merge(layers: list[Layer]) -> tuple[dict[str, Any], dict[str, str]]:
    """The merged values by key path, and the source of each."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer in layers:
        for section, keys in layer.values.items():
            if not isinstance(keys, dict):
                continue
            for key, value in keys.items():
                values[f"{section}.{key}"] = value
                sources[f"{section}.{key}"] = layer.source
    return values, sources


# Other names of MCP clients, as `maf init --mcp` takes them.
MCP_CLIENT_ALIASES = {"claude": "claude-code"}


def resolve(layers: list[Layer]) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """Merge and validate: (values, sources, problems)."""
    problems = [problem for layer in layers for problem in validate_layer(layer)]
    values, sources = merge(layers)
    required, clients = values.get("preflight.mcp_required"), values.get("preflight.mcp_clients")
    if isinstance(required, list) and isinstance(clients, dict):  # each a client whose file the preflight checks
        values["preflight.mcp_required"] = [MCP_CLIENT_ALIASES.get(name, name) for name in required]
        unknown = [name for name, client in zip(required, values["preflight.mcp_required"]) if client not in clients]
        if unknown:
            problems.append(
                f"{sources['preflight.mcp_required']}: preflight.mcp_required: unknown MCP client"
                f" {', '.join(map(repr, unknown))}; clients are {', '.join(sorted(clients))} (claude is claude-code),"
                " from preflight.mcp_clients"
            )
    for low, high, unit in (
        ("reservations.default_ttl_minutes", "reservations.max_ttl_minutes", "minutes"),
        ("tasks.lease_ttl_seconds", "tasks.lease_max_ttl_seconds", "seconds"),
    ):
        if isinstance(values.get(low), int) and isinstance(values.get(high), int) and values[low] > values[high]:
            problems.append(f"{sources[low]}: {low}: {values[low]} {unit} is above {high} ({values[high]}, from {sources[high]})")
    return values, sources, problems


def store_flags(db: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The command-line layer of ``--db``: a file path, or a PostgreSQL URL (``runtime.database_url``)."""
    if db is None:
        return {}
    return {"runtime.database_url": str(db).strip()} if is_database_url(db) else {"runtime.db_path": str(db)}


def _chosen_database_url(layers: list[Layer], values: Mapping[str, Any], sources: Mapping[str, str]) -> str | None:
    """The PostgreSQL URL when one is set at least as high in precedence as ``runtime.db_path``, else None.

    So ``--db file.db`` (or MAF_DB_PATH) still picks a SQLite file over a URL from a configuration file,
    and MAF_DATABASE_URL (or ``--db postgresql://...``) a URL over a configured path.
    """
    url = values["runtime.database_url"].strip()
    if not url:
        return None
    rank = {layer.source: position for position, layer in enumerate(layers)}
    return url if rank[sources["runtime.database_url"]] >= rank[sources["runtime.db_path"]] else None


def shown_value(key_path: str, value: Any) -> Any:
    """A configured value as output may show it: a database URL without its password, and a value JSON
    cannot hold (a mapping with keys of mixed types, such as ``{1: a, b: c}``) as its YAML text.

    >>> shown_value("preflight.tool_versions", {1: "a", "b": "c"})
    '{1: a, b: c}'
    """
    import json  # here: only the views show values

    if key_path == "runtime.database_url" and value:
        # never echoed unless it is a string whose password can be hidden
        return redact_url(value) if isinstance(value, str) else f"({type(value).__name__}, not shown)"
    try:
        json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        import yaml

        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=float("inf")).strip()
    return value


def _not_a_file(path: Path) -> str:
    if path.is_dir():
        return "a folder, not a configuration file"
    if os.path.lexists(path):
        return "not a regular file (a device, a pipe, a socket or a link to nothing)"
    return "no such file"


def load_settings(
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    db_path: str | os.PathLike[str] | None = None,
    env: str | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Resolve settings from every layer; raises :class:`ConfigError` listing every problem."""
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    repo_root = find_repository_root(cwd)
    base = repo_root or cwd
    layers = config_layers(base, environ, env, config_file, store_flags(db_path))
    values, sources, problems = resolve_checked(layers, base, cwd)
    if problems:
        raise ConfigError(problems)

    def located(key_path: str) -> Path:
        return located_path(values, sources, key_path, base, cwd)

    return Settings(
        db_path=located("runtime.db_path"),
        mail_root=located("agent_mail.root"),
        repo_root=repo_root,
        database_url=_chosen_database_url(layers, values, sources),
        database_schema=values["runtime.database_schema"],
        busy_timeout_s=values["runtime.busy_timeout_seconds"],
        task_lease_ttl_s=values["tasks.lease_ttl_seconds"],
        task_lease_max_ttl_s=values["tasks.lease_max_ttl_seconds"],
        max_attempts=values["tasks.max_attempts"],
        reservation_ttl_min=values["reservations.default_ttl_minutes"],
        reservation_max_ttl_min=values["reservations.max_ttl_minutes"],
        escalation_targets=tuple(values["escalation.targets"]),
        escalation_levels_per_target=values["escalation.levels_per_target"],
        preflight_timeout_s=values["preflight.timeout_seconds"],
        min_python=values["preflight.min_python"],
        recommended_python=values["preflight.recommended_python"],
        min_sqlite=values["preflight.min_sqlite"],
        required_env=tuple(values["preflight.required_env"]),
        tool_versions=tuple(sorted(values["preflight.tool_versions"].items())),
        mcp_clients=tuple(sorted(values["preflight.mcp_clients"].items())),
        mcp_required=tuple(values["preflight.mcp_required"]),
        min_free_disk_mb=values["preflight.min_free_disk_mb"],
        acknowledged_warnings={
            check: {key: entry[key] for key in ACKNOWLEDGEMENT_KEYS}
            for check, entry in sorted(values["preflight.acknowledged_warnings"].items())
        },
        log_level=values["logging.level"],
        log_format=values["logging.format"],
        log_file=_log_file(values, sources, base, cwd),
        log_file_level=values["logging.file_level"],
        log_max_bytes=values["logging.max_bytes"],
        log_backup_count=values["logging.backup_count"],
        agent_stale_after_s=values["agents.stale_after_seconds"],
        sources=sources,
    )


def located_path(values: Mapping[str, Any], sources: Mapping[str, str], key_path: str, base: Path, cwd: Path) -> Path:
    """The path setting ``key_path`` names: relative to ``cwd`` when the environment or the command line
    gives it, as a shell user expects; from a file, to the repository root ``base``."""
    origin = cwd if sources[key_path] in ("environment", "command line") else base
    return origin / Path(values[key_path])


def resolve_checked(layers: list[Layer], base: Path, cwd: Path) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """:func:`resolve`, then, when the values are well formed, the rules that look at the repository's
    files: ``logging.file`` never names the store, ``.env``, ``maf-config/`` or ``.git/``. Every command,
    ``maf config validate`` and ``show`` judge a configuration by this."""
    values, sources, problems = resolve(layers)
    if not problems:
        problems = log_file_problems(values, sources, base, cwd)
    return values, sources, problems


def log_file_problems(values: Mapping[str, Any], sources: Mapping[str, str], base: Path, cwd: Path) -> list[str]:
    """What is wrong with ``logging.file`` among well-formed ``values``: nothing, or one problem naming its source."""
    try:
        _log_file(values, sources, base, cwd)
    except ConfigError as error:
        return error.problems
    return []


def _log_file(values: Mapping[str, Any], sources: Mapping[str, str], base: Path, cwd: Path) -> Path | None:
    """``logging.file`` as a path, or None when unset; never the store or a file beside it, nor the configuration."""
    if not values["logging.file"].strip():
        return None
    path = located_path(values, sources, "logging.file", base, cwd)
    db_path = located_path(values, sources, "runtime.db_path", base, cwd)
    from pytest_maf.files import checked_output, store_files  # tempfile and more: only when a log file is set

    try:
        checked_output(str(path), [*store_files(db_path), base / DOTENV_NAME], "the log file")
        if Path(os.path.realpath(path)).is_relative_to(os.path.realpath(base / CONFIG_DIRECTORY)):
            raise UsageError(f"{path} is in {base / CONFIG_DIRECTORY}, which holds the configuration;"
                             " choose a file outside it for the log file")
        log_folder, log_name = os.path.split(os.path.realpath(path))
        for store_file in store_files(db_path):  # the rotated FILE.1 ... and FILE.lock must not be one either
            folder, name = os.path.split(os.path.realpath(store_file))
            if folder == log_folder and name.startswith(f"{log_name}."):
                raise UsageError(f"rotating {path} would overwrite {store_file}; choose another file for the log file")
    except UsageError as error:
        raise ConfigError([f"{sources['logging.file']}: logging.file: {error}"]) from None
    return path
