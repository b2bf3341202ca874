"""The acting agent of a `maf` command: ``--agent ID``, else MAF_AGENT_ID.

Apart from :mod:`pytest_maf.cli.common` (argparse and the store) so that `maf
guard`, run by every commit's hook, reads it without them.
"""

from __future__ import annotations

import os

from pytest_maf.errors import UsageError
from pytest_maf.ids import validate_id

AGENT_VARIABLE = "MAF_AGENT_ID"


def optional_agent_of(args: object) -> str | None:
    """``--agent`` (``args.agent``), else MAF_AGENT_ID (read now, not when the parser was built), else None; validated."""
    agent = getattr(args, "agent", None)
    if agent is None:
        agent = os.environ.get(AGENT_VARIABLE) or None
    return validate_id("agent", agent) if agent is not None else None


def agent_of(args: object) -> str:
    """The acting agent: ``--agent``, else MAF_AGENT_ID; neither is a usage error (exit 2)."""
    agent = optional_agent_of(args)
    if agent is None:
        raise UsageError(f"give --agent or set {AGENT_VARIABLE}")
    return agent
