"""`maf report --html`: one self-contained HTML page from :class:`pytest_maf.report.ReportData` (pure).

No template engine and nothing fetched: the CSS and the two small scripts are
inline, the chart is SVG drawn here. Every text from the store passes through
:func:`_text` (control characters shown as escapes, then HTML-escaped), and the page's Content-Security-Policy lets only
its own two scripts run (by their hashes) and nothing load from anywhere, so
text that slipped through unescaped could still neither run nor call out.

Example::

    page = render_report(gather_report(store))
    Path("report.html").write_text(page, encoding="utf-8")
"""

from __future__ import annotations

import base64
import hashlib
import json
from html import escape
from typing import Any, Iterable, Sequence

from pytest_maf.clock import iso_utc, span
from pytest_maf.evidence import is_blocking_failure
from pytest_maf.records import TASK_STATES, Evidence, Event
from pytest_maf.report import Attempt, CheckResult, PreflightRun, ReportData, TaskHistory
from pytest_maf.status import relative_time
from pytest_maf.tasks import DEFAULT_PRIORITY
from pytest_maf.terminal import cut, printable

CHECK_HISTORY_LENGTH = 30  # results shown per check, newest last
DETAIL_LIMIT = 4_000  # characters of one failure's details; the rest is in `maf evidence list`
SILENT_SHOWN = 100  # the latest attempts named as having no evidence
TIMELINE_FIELDS = ("from", "to", "attempt", "agent")  # shown in their own columns
HIDDEN_FIELDS = frozenset({*TIMELINE_FIELDS, "lease_expires_at", "max_attempts", "priority"})
FOLLOWING_KINDS = frozenset({"done", "retry", "exhaust"})  # moves the one before sets off, in the same transaction

# Runs first, in <head>: every script error and policy violation lands in an attribute a test reads.
ERROR_SCRIPT = (
    "(function(){var r=document.documentElement,n=function(m){"
    "r.setAttribute('data-js-errors',(r.getAttribute('data-js-errors')||'')+m+'\\n')};"
    "window.addEventListener('error',function(e){n('error: '+e.message)});"
    "document.addEventListener('securitypolicyviolation',function(e){n('blocked: '+e.violatedDirective)})})();"
)
# Filters and folding for the task list (absent when no task is listed), and every fold opened for printing.
PAGE_SCRIPT = """(function(){
var d=document,tasks=d.getElementById('tasks'),folds=function(){return d.querySelectorAll('details')};
var on=function(id,type,act){var x=d.getElementById(id);if(x)x.addEventListener(type,act)};
on('only-failures','change',function(e){tasks.classList.toggle('only-failures',e.target.checked)});
on('expand','click',function(){folds().forEach(function(x){x.open=true})});
on('collapse','click',function(){folds().forEach(function(x){x.open=false})});
var shut=[];
window.addEventListener('beforeprint',function(){shut=[];folds().forEach(function(x){if(!x.open){shut.push(x);x.open=true}})});
window.addEventListener('afterprint',function(){shut.forEach(function(x){x.open=false})});
d.documentElement.setAttribute('data-report-ready','1');
})();"""

STYLE = """
:root{--pass:#1a7f37;--fail:#cf222e;--warn:#9a6700;--muted:#57606a;--line:#d0d7de;--soft:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;background:#fff}
main{max-width:1240px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:22px;margin:8px 0 2px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid var(--line);padding-bottom:4px}
h3{font-size:14px;margin:12px 0 4px}
.muted,.m{color:var(--muted)}code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
code{overflow-wrap:anywhere}td code{overflow-wrap:normal;white-space:nowrap}
pre{white-space:pre-wrap;word-break:break-word;background:var(--soft);padding:8px;margin:4px 0;border-radius:4px;max-height:24em;overflow:auto}
nav{display:flex;flex-wrap:wrap;gap:4px 16px;margin:8px 0 4px}nav a{color:#0969da}
.cards{display:flex;flex-wrap:wrap;gap:8px;margin:12px 0}
.card{border:1px solid var(--line);border-radius:6px;padding:6px 12px;min-width:92px}
.card b{display:block;font-size:20px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;margin:4px 0 8px}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--soft);font-weight:600;white-space:nowrap}
td.n{text-align:right;white-space:nowrap}td.t{white-space:nowrap}
tr{border-bottom:1px solid var(--line)}table.ev td,table.tl td{border-bottom:0}
table.tl td:nth-child(-n+5),table.ev td:nth-child(-n+2){width:1%;white-space:nowrap}
.P{color:var(--pass);font-weight:600}.F{color:var(--fail);font-weight:600}.W{color:var(--warn);font-weight:600}
.s{display:inline-block;padding:0 6px;border-radius:10px;font-size:12px;border:1px solid var(--line);background:var(--soft)}
.s-DONE,.s-COMMITTED{color:var(--pass);border-color:var(--pass)}.s-DEAD,.s-ROLLBACK{color:var(--fail);border-color:var(--fail)}
.s-LEASED,.s-RUNNING,.s-VERIFYING{color:#0969da;border-color:#0969da}
.grid{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:0 24px}
@media (max-width:1180px){.grid{grid-template-columns:minmax(0,1fr)}}
svg.chart{width:100%;height:auto;max-height:300px;display:block}
svg.chart .axis{stroke:#8c959f;stroke-width:1}svg.chart .grid-line{stroke:#eaeef2}
svg.chart text{font-size:11px;fill:var(--muted)}
svg.chart polyline{fill:none;stroke:#0969da;stroke-width:1.5}
svg.chart .ok{fill:var(--pass)}svg.chart .bad{fill:var(--fail)}
.sq{display:inline-block;width:11px;height:11px;margin-right:2px;border-radius:2px;vertical-align:middle}
.sq.P{background:var(--pass)}.sq.F{background:var(--fail)}.sq.W{background:var(--warn)}
.controls{display:flex;flex-wrap:wrap;gap:12px;align-items:center;margin:4px 0 8px}
details.task{border:1px solid var(--line);border-radius:6px;margin:6px 0;padding:0 10px}
details.task>summary{cursor:pointer;padding:6px 0}
details.task.x{border-left:4px solid var(--fail)}
details.task[open]>summary{border-bottom:1px solid var(--line);margin-bottom:6px}
.only-failures details.task:not(.x){display:none}
details.fd>summary{cursor:pointer;color:var(--fail)}
.empty{color:var(--muted);font-style:italic}
@media print{
 body{font-size:10pt;color:#000}main{max-width:none;padding:0}
 nav,.controls{display:none}
 details.task{break-inside:avoid}h2{break-after:avoid}
 pre{max-height:none;overflow:visible}
 .sq,.s,svg.chart,details.task.x{-webkit-print-color-adjust:exact;print-color-adjust:exact}
}
"""


def render_report(data: ReportData) -> str:
    """The whole page, ready to write as UTF-8."""
    body = "".join([
        _header(data),
        _section("preflight", "Preflight pass rate", _chart(data.preflight_runs)),
        _section("checks", "Checks", _checks(data.checks)),
        _section("holders", "Leases and reservations", _holders(data)),
        _section("overrides", "Overrides and force-releases", _overrides(data)),
        _section("tasks", "Tasks", _tasks(data)),
    ])
    policy = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:;"
        f" script-src {_script_hash(ERROR_SCRIPT)} {_script_hash(PAGE_SCRIPT)}"
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{policy}\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        f"<title>pytest-maf report {_text(_time(data.now))}</title>"
        f"<script>{ERROR_SCRIPT}</script><style>{STYLE}</style></head>\n"
        f"<body><main>{body}</main><script>{PAGE_SCRIPT}</script></body></html>\n"
    )


def _script_hash(script: str) -> str:
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return f"'sha256-{digest}'"


def _text(value: object) -> str:
    """Store text as HTML text or attribute value: control and format characters shown as escapes,
    as a terminal shows them (an ESC, a bell or a right-to-left override neither hides nor reorders
    what follows), then HTML-escaped, quotes included."""
    return escape(printable(value), quote=True)


def _lines(value: object) -> str:
    """:func:`_text` of text that keeps its line breaks (failure details in a ``<pre>``)."""
    return "\n".join(_text(line) for line in str(value).split("\n"))


def _time(epoch_ms: int) -> str:
    """``2026-11-27 16:30:00`` (UTC): date and time apart, so a row can leave out a date shown above."""
    return iso_utc(epoch_ms, "seconds").replace("T", " ").removesuffix("Z")


def _relative(delta_ms: int) -> str:
    return relative_time(delta_ms) if delta_ms > 0 else f"expired {span(-delta_ms)} ago"


def _section(anchor: str, title: str, content: str) -> str:
    return f"<section id=\"{anchor}\" data-testid=\"{anchor}\"><h2>{title}</h2>{content}</section>\n"


def _table(header: Sequence[str], rows: Iterable[str], testid: str) -> str:
    head = "".join(f"<th>{name}" for name in header)
    return (
        f"<div class=\"scroll\"><table data-testid=\"{testid}\"><thead><tr>{head}</thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _result_class(row: Evidence) -> str:
    return "P" if row.result == "PASS" else ("F" if is_blocking_failure(row) else "W")


def _header(data: ReportData) -> str:
    window = f"changes since {_time(data.since)} UTC" if data.since is not None else "the whole history"
    cards = "".join(
        f"<div class=\"card\" data-testid=\"count-{state}\"><b>{data.tasks_by_state.get(state, 0)}</b>"
        f"<span class=\"s s-{state}\">{state}</span></div>"
        for state in TASK_STATES
    )
    links = "".join(
        f"<a href=\"#{anchor}\">{title}</a>"
        for anchor, title in (("preflight", "Pass rate"), ("checks", "Checks"), ("holders", "Leases and reservations"),
                              ("overrides", "Overrides"), ("tasks", f"Tasks ({data.tasks_in_window})"))
    )
    return (
        f"<header><h1>pytest-maf report</h1><div class=\"muted\">{_text(data.backend)} store"
        f" <code>{_text(data.location)}</code> at {_time(data.now)} UTC; {window}</div>"
        f"<div class=\"cards\">{cards}</div><nav>{links}</nav></header>\n"
    )


def _chart(runs: list[PreflightRun]) -> str:
    rated = [run for run in runs if run.pass_rate is not None]
    silent = len(runs) - len(rated)
    note = f" {silent} run(s) recorded no evidence and are not drawn." if silent else ""
    if not rated:
        return f"<p class=\"empty\" data-testid=\"no-preflight\">No preflight run in this window.{note}</p>"
    width, height, left, right, top, bottom = 960, 240, 44, 16, 12, 30
    first, last = rated[0].at, rated[-1].at
    spread = last - first

    def x(run: PreflightRun) -> float:
        share = 0.5 if spread == 0 else (run.at - first) / spread
        return round(left + share * (width - left - right), 1)

    def y(rate: float) -> float:
        return round(top + (1 - rate) * (height - top - bottom), 1)

    lines = "".join(
        f"<line class=\"grid-line\" x1=\"{left}\" x2=\"{width - right}\" y1=\"{y(level)}\" y2=\"{y(level)}\"/>"
        f"<text x=\"{left - 6}\" y=\"{y(level) + 4}\" text-anchor=\"end\">{round(level * 100)}%</text>"
        for level in (0, 0.25, 0.5, 0.75, 1)
    )
    radius = 4 if len(rated) <= 120 else 2
    points = " ".join(f"{x(run)},{y(run.pass_rate or 0)}" for run in rated)
    dots = "".join(
        f"<circle data-testid=\"pass-rate-point\" class=\"{'ok' if run.succeeded else 'bad'}\" cx=\"{x(run)}\""
        f" cy=\"{y(run.pass_rate or 0)}\" r=\"{radius}\"><title>{_text(run.task_id)}, {_time(run.at)}:"
        f" {run.passed} of {len(run.evidence)} checks passed ({run.state})</title></circle>"
        for run in rated
    )
    axis = (
        f"<line class=\"axis\" x1=\"{left}\" x2=\"{width - right}\" y1=\"{height - bottom}\" y2=\"{height - bottom}\"/>"
        f"<text x=\"{left}\" y=\"{height - 10}\">{_time(first)}</text>"
        + (f"<text x=\"{width - right}\" y=\"{height - 10}\" text-anchor=\"end\">{_time(last)}</text>" if spread else "")
    )
    latest = rated[-1]
    summary = (
        f"{len(rated)} run(s); the latest ({_text(latest.task_id)}, {_time(latest.at)} UTC) passed"
        f" {latest.passed} of {len(latest.evidence)} checks.{note}"
    )
    return (
        f"<p class=\"muted\">Share of each preflight run's checks that passed; a red point is a run that did not commit."
        f" {summary}</p><svg class=\"chart\" data-testid=\"pass-rate-chart\" viewBox=\"0 0 {width} {height}\""
        f" role=\"img\" aria-label=\"preflight pass rate over time\" xmlns=\"http://www.w3.org/2000/svg\">"
        f"{lines}{axis}<polyline points=\"{points}\"/>{dots}</svg>"
    )


def _checks(checks: dict[str, list[CheckResult]]) -> str:
    if not checks:
        return "<p class=\"empty\">No check has recorded evidence in this window.</p>"
    rows = []
    for verifier, results in checks.items():
        recent = results[-CHECK_HISTORY_LENGTH:]
        squares = "".join(
            f"<span class=\"sq {_result_class(result.evidence)}\" title=\"{_text(result.run)} {_time(result.at)}:"
            f" {result.evidence.result}\"></span>"
            for result in recent
        )
        latest = results[-1].evidence
        passed = sum(result.evidence.result == "PASS" for result in results)
        failure = next((result.evidence for result in reversed(results) if result.evidence.result != "PASS"), None)
        message = _first_line(failure.details.get("message", "")) if failure else ""
        rows.append(
            f"<tr data-testid=\"check\" data-check=\"{_text(verifier)}\"><td><code>{_text(verifier)}</code>"
            f"<td class=\"{_result_class(latest)}\">{latest.result}<td class=\"n\">{passed} of {len(results)}"
            f"<td class=\"t\">{squares}<td>{_text(message)}"
        )
    return _table(["Check", "Latest", "Passed", f"Last {CHECK_HISTORY_LENGTH} runs, oldest first", "Latest failure"],
                  rows, "checks-table")


def _holders(data: ReportData) -> str:
    leases = [
        f"<tr data-testid=\"lease\"><td><code>{_text(lease.task_id)}</code><td>{_text(lease.agent_id)}"
        f"<td class=\"n\">{lease.attempt}<td><span class=\"s s-{_text(lease.state)}\">{_text(lease.state)}</span>"
        f"<td class=\"t\">{_relative(lease.expires_in_ms)}"
        for lease in data.leases
    ]
    reservations = [
        f"<tr data-testid=\"reservation\"><td><code>{_text(item.pattern)}</code><td>{_text(item.agent_id)}"
        f"<td>{'exclusive' if item.exclusive else 'shared'}<td class=\"t\">{_relative(item.expires_in_ms)}"
        f"<td>{_code_or_blank(item.task_id)}<td>{_text(item.reason)}"
        for item in data.reservations
    ]
    return (
        "<div class=\"grid\"><div><h3>Leases</h3>"
        + (_table(["Task", "Agent", "Attempt", "State", "Expires"], leases, "leases-table") if leases
           else "<p class=\"empty\">No lease is held.</p>")
        + "</div><div><h3>Reservations</h3>"
        + (_table(["Pattern", "Agent", "Mode", "Expires", "Task", "Reason"], reservations, "reservations-table")
           if reservations else "<p class=\"empty\">No reservation is held.</p>")
        + "</div></div>"
    )


def _overrides(data: ReportData) -> str:
    if not data.overrides:
        return "<p class=\"empty\">No override or force-release in this window.</p>"
    rows = []
    for entry in data.overrides:
        if entry.kind == "override":
            what = "commit under the override"
            pairs = [pair for pair in _listed(entry.data.get("holders")) if len(_listed(pair)) == 2]
            whose = ", ".join(f"{holder} ({pattern})" for holder, pattern in pairs)
            paths = ", ".join(str(path) for path in _listed(entry.data.get("paths")))
        else:
            what, whose, paths = "force-release", str(entry.data.get("holder", "")), str(entry.data.get("pattern", ""))
        rows.append(
            f"<tr data-testid=\"override\"><td class=\"t\">{_time(entry.ts)}<td>{what}<td>{_text(entry.agent or '?')}"
            f"<td>{_text(whose)}<td><code>{_text(paths)}</code><td>{_text(entry.data.get('reason', ''))}"
        )
    return _table(["Time (UTC)", "What", "By", "Whose", "Paths", "Reason"], rows, "overrides-table")


def _tasks(data: ReportData) -> str:
    if not data.tasks:
        return "<p class=\"empty\">No task changed in this window.</p>"
    controls = (
        "<div class=\"controls\"><label><input type=\"checkbox\" id=\"only-failures\"> only tasks with a failure</label>"
        "<button type=\"button\" id=\"expand\">expand all</button><button type=\"button\" id=\"collapse\">collapse all</button>"
        "<span class=\"muted\">newest change first; times in UTC</span></div>"
    )
    shown = len(data.tasks)
    more = (
        f"<p class=\"m\" data-testid=\"tasks-left-out\">The {shown} most recently changed of {data.tasks_in_window}"
        " tasks; the rest are left out (--limit).</p>" if shown < data.tasks_in_window else ""
    )
    return controls + more + "".join(_task(history) for history in data.tasks)


def _task(history: TaskHistory) -> str:
    """One task, folded: its attempts' evidence, then its timeline. Kept terse: a report holds thousands."""
    task = history.task
    failures = sum(attempt.failed for attempt in history.attempts)
    tally = f" <span class=F>{failures} FAIL</span>" if failures else ""
    priority = f" priority {task.priority}," if task.priority != DEFAULT_PRIORITY else ""
    summary = (
        f"<summary><code>{_text(task.id)}</code> <span class=\"s s-{_text(task.state)}\">{_text(task.state)}</span>"
        f" <span class=m>{_text(task.kind)},{priority} attempt {task.attempts} of {task.max_attempts},"
        f" changed {_time(task.updated_at)}</span>{tally}</summary>"
    )
    recorded = {attempt.number for attempt in history.attempts}
    # At most the last SILENT_SHOWN attempts: a damaged count (2**63 - 1) must not fill the memory.
    silent = [str(n) for n in range(task.attempts, max(task.attempts - SILENT_SHOWN, 0), -1) if n not in recorded]
    rows = "".join(_attempt(attempt) for attempt in history.attempts)
    evidence = (
        f"<table class=ev><tr><th>Attempt<th>Result<th>Verifier<th>Details{rows}</table>" if rows else ""
    ) + (f"<p class=m>No evidence from attempt {', '.join(silent)}.</p>" if silent else "")
    return (
        f"<details class=\"task{' x' if history.has_failure else ''}\" data-task-id=\"{_text(task.id)}\">"
        f"{summary}{evidence}{_timeline(history)}</details>\n"
    )


def _attempt(attempt: Attempt) -> str:
    """A row per failed verifier with its details, then one row naming every verifier that passed."""
    rows = [
        f"<tr><td>{attempt.number}<td class={_result_class(row)}>{row.result}<td><code>{_text(row.verifier)}</code>"
        f"<td>{_failure(row)}"
        for row in attempt.evidence if row.result != "PASS"
    ]
    passed = " ".join(f"<code>{_text(row.verifier)}</code>" for row in attempt.evidence if row.result == "PASS")
    if passed:
        rows.append(f"<tr><td>{attempt.number}<td class=P>PASS<td>{passed}")
    return "".join(rows)


def _failure(row: Evidence) -> str:
    message = str(row.details.get("message", "")) or f"{row.verifier} failed"
    rest = {key: value for key, value in row.details.items() if key != "message"}
    full = message + ("\n\n" + json.dumps(rest, indent=1, sort_keys=True, ensure_ascii=False) if rest else "")
    if len(full) > DETAIL_LIMIT:
        full = full[:DETAIL_LIMIT] + f"\n... {len(full) - DETAIL_LIMIT} more characters (maf evidence list --json)"
    return (
        f"<details class=fd data-testid=failure-detail><summary>{_text(_first_line(message))}</summary>"
        f"<pre>{_lines(full)}</pre></details>"
    )


def _timeline(history: TaskHistory) -> str:
    """The events that moved the task, one row each; a move that follows in the same instant (commit,
    then done) shares its row, and a time or attempt the row above already showed is left out."""
    rows: list[list[str]] = []
    shown_time, shown_attempt = "", ""
    for event in history.timeline:
        data: dict[str, Any] = event.data
        state = _text(data.get("to", ""))
        moment, attempt = _time(event.ts), _text(data.get("attempt", ""))
        if event.kind in FOLLOWING_KINDS and rows and moment == shown_time:
            rows[-1][1] += f" + {_text(event.kind)}"
            rows[-1][2] = state
            continue
        when = "" if moment == shown_time else (moment[11:] if moment[:10] == shown_time[:10] else moment)
        note = ", ".join(f"{key}: {value}" for key, value in data.items() if key not in HIDDEN_FIELDS)
        rows.append([when, _text(event.kind), state, _text(data.get("agent", "")),
                     "" if attempt == shown_attempt else attempt, _text(note)])
        shown_time, shown_attempt = moment, attempt or shown_attempt
    if not rows:
        return ""
    for cells in rows:
        while cells and not cells[-1]:  # a row may end early: its border is the row's own
            cells.pop()
    body = "".join("<tr>" + "".join(f"<td>{cell}" for cell in cells) for cells in rows)
    return f"<table class=tl><tr><th>Time<th>Event<th>State<th>Agent<th>Attempt<th>Note{body}</table>"


def _listed(value: object) -> list[Any]:
    """A stored list, or nothing when the row holds something else (stored data is read, not trusted)."""
    return value if isinstance(value, list) else []


def _code_or_blank(value: str | None) -> str:
    return f"<code>{_text(value)}</code>" if value else ""


def _first_line(text: object, limit: int = 160) -> str:
    return cut(str(text).strip().splitlines()[0] if str(text).strip() else "", limit)
