"""Database URLs: telling one from a file path, and showing one without its password.

A store location is either a SQLite file path or a PostgreSQL URL
(``postgresql://user:secret@db.example/maf``). Wherever a URL is shown (output,
logs, errors) it goes through :func:`redact_url` first::

    redact_url("postgresql://maf:s3cret@db/maf")  # -> "postgresql://maf:****@db/maf"
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit

from pytest_maf.errors import UsageError

URL_SCHEMES = ("postgresql://", "postgres://")
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_QUERY_PASSWORD = r"(?i)(password=)[^&]*"  # compiled when a URL is first shown


_ANY_URL = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.-]*://")


def is_other_url(location: str) -> bool:
    """Whether ``location`` has a URL's ``scheme://`` but not a PostgreSQL one (``postgresq://``, ``mysql://``):
    a mistake, never a file path meant (taken as one, it would become folders named after the URL)."""
    return bool(_ANY_URL.match(location)) and not is_database_url(location)


def is_database_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` is a PostgreSQL URL rather than a file path."""
    return isinstance(location, str) and location.strip().lower().startswith(URL_SCHEMES)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``****`` (in the user part and in a ``password=`` parameter)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
    except ValueError:
        return "a PostgreSQL URL that does not parse"
    user, at, host = netloc.rpartition("@")
    if at and ":" in user:
        netloc = f"{user.split(':', 1)[0]}:****@{host}"
    shown = parts._replace(netloc=netloc, query=re.sub(_QUERY_PASSWORD, r"\1****", parts.query)).geturl()
    return shown


def hide_password(text: str, url: str) -> str:
    """``text`` (an error message, say) with the password of ``url`` written as ``****`` wherever it appears."""
    shown = text.replace(url, redact_url(url))
    for password in url_passwords(url):
        shown = shown.replace(password, "****")
    return shown


def url_passwords(url: str | None) -> list[str]:
    """The secrets ``url`` carries, longest first: texts that output and logs must never show.

    The password (in the user part and in a ``password=`` parameter), as written
    and decoded, and, when the user part holds an unencoded ``@``, everything
    after it: the driver splits at the first ``@`` and names the rest (the
    password's tail) as the host in its errors.
    """
    if not url:
        return []
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    userinfo = parts.netloc.rpartition("@")[0]
    found = [password or "", userinfo.partition("@")[2] if "@" in userinfo else ""]
    found += re.findall(r"(?i)(?:^|&)password=([^&]*)", parts.query)
    secrets = {secret for text in found for secret in (text, unquote(text)) if secret}
    return sorted(secrets, key=len, reverse=True)


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot name a PostgreSQL store, or None (pure)."""
    if not is_database_url(url):
        return "expected a URL such as postgresql://user@host:5432/database"
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as error:
        return f"does not parse as a URL ({error})"
    if not url.isprintable():
        return "contains control characters"
    if parts.netloc.count("@") > 1:  # the driver would take the password's tail for the host, and name it in errors
        return "holds more than one @ before the host: percent-encode @ in the user or password as %40"
    return None


def refuse_unusable_url(url: str) -> None:
    """:class:`UsageError` when ``url`` cannot name a PostgreSQL store (checked before connecting)."""
    problem = url_problem(url)
    if problem:
        raise UsageError(f"the PostgreSQL URL {redact_url(url)} {problem}")


def schema_problem(schema: str) -> str | None:
    """Why ``schema`` cannot name the store's PostgreSQL schema, or None (pure)."""
    if not SCHEMA_NAME.fullmatch(schema):
        return (
            f"expected a PostgreSQL schema name of lower-case letters, digits and _ (at most 63,"
            f" not starting with a digit), got {schema!r}"
        )
    if schema.startswith("pg_"):
        return f"schema names starting with pg_ are reserved by PostgreSQL, got {schema!r}"
    return None
