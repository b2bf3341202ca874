"""One example command line per `maf` command, shown at the end of its ``--help``.

Kept apart from the commands' modules so that it stays a plain table: light to
import (`maf --help` and `maf guard` pay for it) and checked as a whole by
``tests/test_cli_conventions.py``, which parses every example with the real
parser. A command that writes an epilog of its own keeps it.
"""

from __future__ import annotations

# the command as its parser's prog names it, without "maf ": an example line
EXAMPLES: dict[str, str] = {
    "setup": "maf setup --db ci.db --json",
    "task add": "maf task add --id fix-42 --priority 10 --payload '{\"issue\": 42}'",
    "task claim": "maf task claim --agent claude-1 --json   # exit 3: nothing READY",
    "task renew": "maf task renew fix-42 --agent claude-1 --attempt 1 --ttl 3600",
    "task heartbeat": "maf task heartbeat --agent claude-1   # every lease claude-1 holds",
    "task start": "maf task start fix-42 --agent claude-1 --attempt 1",
    "task verify": "maf task verify fix-42 --agent claude-1 --attempt 1",
    "task release": "maf task release fix-42 --agent claude-1 --attempt 1",
    "task finish": "maf task finish fix-42 --agent claude-1 --attempt 1   # COMMITTED -> DONE, or ROLLBACK",
    "task cancel": "maf task cancel fix-43",
    "task list": "maf task list --state READY --limit 20 --json",
    "task show": "maf task show fix-42 --json",
    "leases reclaim": "maf leases reclaim --json",
    "evidence add": "maf evidence add fix-42 --attempt 1 --verifier lint --result PASS --agent claude-1",
    "evidence list": "maf evidence list --task fix-42 --limit 10",
    "evidence export": "maf evidence export --output evidence.xml --task fix-42",
    "reservation acquire": "maf reservation acquire 'src/api/**' --agent claude-1 --task fix-42 --reason 'fix-42'",
    "reservation renew": "maf reservation renew 'src/api/**' --agent claude-1 --ttl 60",
    "reservation release": "maf reservation release 'src/api/**' --agent claude-1",
    "reservation list": "maf reservation list --all --json",
    "reservation check": "maf reservation check src/api/users.py --agent claude-1",
    "reservation status": "maf reservation status --file src/api/users.py",
    "guard": "maf guard --agent claude-1   # what the pre-commit hook runs",
    "install-hooks": "maf install-hooks   # --uninstall puts back what was there",
    "escalate": "maf escalate --agent claude-1 --error-context 'tests hang' --bead-id bd-7 --target codex-senior",
    "escalate list": "maf escalate list --status active --json",
    "escalate resolve": "maf escalate resolve esc-1a2b3c",
    "mail list": "maf mail list --agent claude-1 --unread --limit 20",
    "mail show": "maf mail show msg-1a2b3c --json",
    "mail ack": "maf mail ack msg-1a2b3c --agent claude-1",
    "mail send": "maf mail send --from claude-1 --to codex-senior --subject 'fix-42' --body 'ready for review'",
    "init": "maf init --mcp claude-code,codex",
    "config validate": "maf config validate --env production --json",
    "config show": "maf config show --env production",
    "config report": "maf config report --output config-report.md",
    "config diff": "maf config diff HEAD~1 --json",
    "config snapshot": "maf config snapshot --output before-tuning.json",
    "config restore": "maf config restore before-tuning.json",
    "health-check": "maf health-check --comprehensive --output health.json",
    "db backup": "maf db backup --output backups/runtime.db.gz --gzip --keep 7",
    "db verify-backup": "maf db verify-backup backups/runtime.db.gz",
    "db backups": "maf db backups --dir backups --json",
    "db restore": "maf db restore latest --dir backups",
    "db recover": "maf db recover --output rebuilt.db",
    "db optimize": "maf db optimize --reindex",
    "db stats": "maf db stats --json",
    "db cleanup": "maf db cleanup --days 30   # a dry run; --apply deletes",
    "db export": "maf db export --format csv --table tasks --output tasks.csv",
    "db copy": "maf db copy .maf/runtime.db postgresql://maf@db.example/maf",
    "metrics": "maf metrics > metrics.prom   # or: maf metrics serve --port 9464",
    "metrics serve": "maf metrics serve --host 127.0.0.1 --port 9464",
    "status": "maf status --watch 2",
    "history": "maf history --agent claude-1 --since 24h --kind override,force-release",
    "load-test": "maf load-test --concurrent 8 --duration 30 --json",
    "bench": "maf bench --compare baseline.json --threshold 1.25",
    "agents": "maf agents --json",
}
