"""Reading configuration files: JSON and YAML layers, and the repository's ``.env``.

Parsing only (no precedence, no validation of keys): :mod:`pytest_maf.config`
stacks what these functions return into layers. Every problem is a
:class:`ConfigError` that names the file (and, for ``.env``, the line).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pytest_maf.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
MAX_CONFIG_BYTES = 1024 * 1024
DOTENV_NAME = ".env"


class ConfigError(UsageError):
    """Configuration that does not validate; carries every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        more = f" (and {len(problems) - 1} more; see `maf config validate`)" if len(problems) > 1 else ""
        super().__init__(f"invalid configuration: {problems[0]}{more}")


def check_config_size(source: str, size: int) -> None:
    """Refuse a configuration file of ``size`` bytes above :data:`MAX_CONFIG_BYTES`: the same limit
    whether the file is read as a layer, saved in a snapshot or restored from one."""
    if size > MAX_CONFIG_BYTES:
        raise ConfigError([f"{source}: is {size} bytes; a configuration file may be at most {MAX_CONFIG_BYTES}"])


def read_bounded_text(path: Path) -> str:
    """The UTF-8 text of a configuration file (or ``.env``) no larger than :data:`MAX_CONFIG_BYTES`."""
    from pytest_maf.files import read_at_most

    try:
        check_config_size(str(path), path.stat().st_size)
        return read_at_most(path, MAX_CONFIG_BYTES).decode("utf-8")  # a device or a pipe: refused, not read for ever
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError([f"{path}: cannot read: {error}"]) from None


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse one JSON or YAML configuration file; a problem names the file."""
    return parse_config_text(read_bounded_text(path), path.suffix, str(path))


def parse_config_text(text: str, suffix: str, source: str) -> dict[str, Any]:
    """Parse the text of a configuration file (``suffix`` says JSON or YAML); problems name ``source``."""
    try:
        if suffix == ".json":
            import json  # here: most repositories keep no JSON configuration

            document = json.loads(text, object_pairs_hook=_without_repeats) if text.strip() else {}
        else:
            document = _load_yaml(text) or {}
    except Exception as error:  # json.JSONDecodeError, yaml.YAMLError, RecursionError, refused aliases
        raise ConfigError([f"{source}: does not parse: {' '.join(str(error).split())}"]) from None
    if not isinstance(document, dict):
        raise ConfigError([f"{source}: the top level must be a mapping of sections"])
    _plain_acknowledgements(document)
    return document


def _load_yaml(text: str) -> Any:
    """``yaml.safe_load`` without anchors and aliases: an alias bomb cannot expand."""
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise ValueError(
                    f"line {event.start_mark.line + 1}: anchors and aliases (&name, *name) are not"
                    " supported in configuration; write the values out"
                )
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)):
                    continue  # not a key a configuration has: refused where it is read
                if key in seen:
                    raise ValueError(
                        f"line {key_node.start_mark.line + 1}: {key!r} is given twice in one mapping; the"
                        " second would silently replace the first: merge them"
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    # A date or time is kept as the text written (a value must be one JSON can hold: every view prints it
    # as JSON), and bytes or a set are refused where they are written, with the line.
    NoAliasLoader.add_constructor("tag:yaml.org,2002:timestamp", _scalar_text)
    NoAliasLoader.add_constructor("tag:yaml.org,2002:binary", _refused_tag)
    NoAliasLoader.add_constructor("tag:yaml.org,2002:set", _refused_tag)
    return yaml.load(text, Loader=NoAliasLoader)  # noqa: S506 (a SafeLoader)


def _scalar_text(loader: Any, node: Any) -> str:
    """A YAML date or timestamp (``2026-05-01 09:30:00``) as the text written, never a ``datetime``."""
    return str(loader.construct_scalar(node))


def _refused_tag(loader: Any, node: Any) -> Any:
    tag = node.tag.replace("tag:yaml.org,2002:", "!!")
    instead = "a list ([a, b])" if tag == "!!set" else "text"
    raise ValueError(f"line {node.start_mark.line + 1}: {tag} values are not configuration; write {instead} instead")


def _without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different: a repeated one would silently replace the first."""
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise ValueError(f"{key!r} is given twice in one object; the second would silently replace the first: merge them")
        document[key] = value
    return document


def _plain_acknowledgements(document: dict[str, Any]) -> None:
    """YAML 1.1 reads an acknowledgement's ``on:`` key as true: make it the key written."""
    preflight = document.get("preflight")
    entries = preflight.get("acknowledged_warnings") if isinstance(preflight, dict) else None
    for entry in entries.values() if isinstance(entries, dict) else ():
        if isinstance(entry, dict) and True in entry and "on" not in entry:
            entry["on"] = entry.pop(True)


def layer_file(directory: Path, stem: str) -> Path | None:
    """The one ``stem.{json,yaml,yml}`` in ``directory``, or None; two of them are an error naming both."""
    named = [directory / f"{stem}{suffix}" for suffix in CONFIG_SUFFIXES]
    found = [path for path in named if path.is_file()]
    odd = [path for path in named if not path.is_file() and os.path.lexists(path)]
    if odd:  # a folder, say: not silently no layer at all
        raise ConfigError([
            f"{path}: {'a folder' if path.is_dir() else 'not a regular file (or a link to nothing)'} where a"
            f" configuration layer is read; remove it or make it the layer's file" for path in odd
        ])
    if len(found) > 1:
        raise ConfigError([
            f"{' and '.join(str(path) for path in found)}: one layer in {len(found)} files;"
            f" keep one of them (merge the other into it and remove it)"
        ])
    return found[0] if found else None


# .env: KEY=VALUE lines, read as data, never run by a shell.

_KEY = r"[A-Za-z_][A-Za-z0-9_]*"  # compiled when a .env is first read
_DOUBLE_QUOTED_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$", "`": "`"}


def read_dotenv(path: Path) -> dict[str, str]:
    """The variables a ``.env`` file sets, in order; a line that is not ``KEY=VALUE`` is an error naming it.

    Accepted: blank lines, ``# comments``, an ``export `` prefix, values bare
    (a `` #`` starts a comment), in 'single quotes' (literal) or in "double
    quotes" (``\\n``, ``\\t``, ``\\"``, ``\\\\`` escapes). Nothing is expanded:
    ``$HOME`` and ``$(cmd)`` stay as written. A later line wins over an earlier one.
    """
    variables: dict[str, str] = {}
    text = read_bounded_text(path).removeprefix("\ufeff")  # a byte-order mark some editors write first
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            parsed = parse_dotenv_line(line)
        except ValueError as error:
            raise ConfigError([f"{path}: line {number}: {error}"]) from None
        if parsed is not None:
            variables[parsed[0]] = parsed[1]
    return variables


def parse_dotenv_line(line: str) -> tuple[str, str] | None:
    """``(KEY, value)`` of one ``.env`` line, None for a blank or comment line; ValueError says what is wrong."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    if text.startswith("export ") or text.startswith("export\t"):
        text = text[len("export") :].lstrip()
    key, equals, rest = text.partition("=")
    key = key.rstrip()
    if not equals:
        raise ValueError("expected KEY=VALUE (a line that sets one variable)")
    if not re.fullmatch(_KEY, key):
        raise ValueError(f"{_shown(key)} is not a variable name (letters, digits and _, not starting with a digit)")
    value = _dotenv_value(rest.lstrip())
    if any(ord(character) < 32 and character not in "\t\n" or ord(character) == 127 for character in value):
        raise ValueError(f"{key}: the value holds control characters")
    return key, value


def _dotenv_value(text: str) -> str:
    if not text or text[0] not in "'\"":
        return re.split(r"\s#", text, maxsplit=1)[0].rstrip()
    quote, characters, position = text[0], [], 1
    while position < len(text) and text[position] != quote:
        character = text[position]
        if quote == '"' and character == "\\" and position + 1 < len(text):
            position += 1
            character = _DOUBLE_QUOTED_ESCAPES.get(text[position], "\\" + text[position])
        characters.append(character)
        position += 1
    if position >= len(text):
        raise ValueError(f"the value's {quote} is never closed (values span one line)")
    after = text[position + 1 :].strip()
    if after and not after.startswith("#"):
        raise ValueError(f"text after the value's closing {quote} (only a # comment may follow it)")
    return "".join(characters)


def _shown(text: str, limit: int = 40) -> str:
    shown = text if len(text) <= limit else text[:limit] + "..."
    return repr(shown)
