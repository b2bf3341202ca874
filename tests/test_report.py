"""`maf report --html`: what the page says about a store with known contents, its size, its safety
with hostile store text, its output rules, and how it renders in a real browser (Debian's chromium)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterator

import pytest

from backends import store_rows
from pytest_maf.clock import ManualClock
from pytest_maf.report import gather_report
from pytest_maf.report_html import render_report
from pytest_maf.store import Store
from pytest_maf.values import parse_duration
from report_store import (
    FORCE_REASON, HOSTILE_ID, HOSTILE_MESSAGE, LINT_MESSAGE, MINUTE, OVERRIDE_REASON, PREFLIGHT_RUNS,
    build_known_store, build_many_tasks, verify,
)
from tools import required_tool
from workspace import isolated_env, maf_command

from pytest_maf import tasks

CHROMIUM_TIMEOUT_S = 60


# The page's contents, read as plain data and as rendered text.


def test_the_report_holds_what_the_store_holds(store: Store, clock: ManualClock, tmp_path: Path) -> None:
    build_known_store(store, clock, tmp_path / "agent-mail")
    data = gather_report(store)

    assert [run.pass_rate for run in data.preflight_runs] == [1.0, 2 / 3, 2 / 3, 1.0]
    assert [run.succeeded for run in data.preflight_runs] == [True, False, False, True]
    assert [result.evidence.result for result in data.checks["store.schema"]] == [
        run["store.schema"] for run in PREFLIGHT_RUNS
    ]
    fix = next(history for history in data.tasks if history.task.id == "fix-login")
    assert [attempt.number for attempt in fix.attempts] == [2, 1]
    (lint,) = [row for row in fix.attempts[1].evidence if row.result == "FAIL"]
    assert (lint.verifier, lint.details["message"]) == ("lint", LINT_MESSAGE)
    assert [event.data["to"] for event in fix.timeline if "to" in event.data] == [
        "READY", "LEASED", "RUNNING", "VERIFYING", "ROLLBACK", "READY", "LEASED", "RUNNING", "VERIFYING", "COMMITTED", "DONE",
    ]
    assert [(lease.task_id, lease.agent_id, lease.state) for lease in data.leases] == [(HOSTILE_ID, "agent-b", "LEASED")]
    assert [(item.pattern, item.agent_id) for item in data.reservations] == [("app/**", "agent-b")]
    assert {event.kind: event.data["reason"] for event in data.overrides} == {
        "override": OVERRIDE_REASON, "force_release": FORCE_REASON,
    }

    page = render_report(data)
    assert page.count('data-testid="pass-rate-point"') == 4
    assert page.count('class="bad"') == 2  # the two runs that failed a check did not commit
    assert "docs/**" in page and "agent-a went quiet &amp; left docs locked" in page


def test_store_text_is_escaped_everywhere(store: Store, clock: ManualClock, tmp_path: Path) -> None:
    build_known_store(store, clock, tmp_path / "agent-mail")
    page = render_report(gather_report(store))

    assert "<img" not in page and "<b>prod" not in page and "document.title='pwned'</script>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in page
    assert "hotfix for &lt;b&gt;prod&lt;/b&gt; outage" in page
    assert page.count("<script>") == 2  # the page's own two, allowed by hash in its policy
    assert "script-src 'sha256-" in page and "default-src 'none'" in page



def test_control_and_bidi_characters_in_store_text_show_as_escapes(store: Store, clock: ManualClock) -> None:
    from pytest_maf import reservations

    hostile = "\x1b[31mred\x07 \u202egnp.exe"  # recolour, ring, and show "exe.png" for a file named "gnp.exe"
    tasks.add_task(store, task_id="odd")
    reservations.acquire(store, ["odd/**"], "agent-a", 10 * MINUTE, reason=hostile)
    verify(store, clock, "odd", "agent-a", [("unit", "FAIL", {"message": hostile + "\nsecond line"})])

    page = render_report(gather_report(store))

    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]", page)
    shown = "\\x1b[31mred\\x07 \\u202egnp.exe"
    assert page.count(shown) >= 3  # the reservation's reason, the failure's summary and its details
    assert f"{shown}\nsecond line" in page  # the details keep their line breaks


def test_odd_stored_rows_still_render(store: Store, clock: ManualClock, tmp_path: Path) -> None:
    build_known_store(store, clock, tmp_path / "agent-mail")
    store.write(lambda transaction: transaction.insert_reservation_event(
        "override", "agent-x", {"holders": 5, "paths": "app/x.py", "reason": ["not", "text"]}
    ))

    page = render_report(gather_report(store))

    assert page.count('data-testid="override"') == 3 and "[&#x27;not&#x27;, &#x27;text&#x27;]" in page


def test_since_keeps_the_window_and_what_is_held_now(store: Store, clock: ManualClock, tmp_path: Path) -> None:
    build_known_store(store, clock, tmp_path / "agent-mail")
    tasks.renew_lease(store, HOSTILE_ID, "agent-b", 1, 24 * 60 * MINUTE)
    clock.advance(3 * 60 * MINUTE)
    tasks.add_task(store, task_id="late")
    verify(store, clock, "late", "agent-d", [("unit", "PASS", {})])

    data = gather_report(store, parse_duration("--since", "1h"))

    # the task leased earlier still shows: a live lease is held now, whenever it began
    assert sorted(history.task.id for history in data.tasks) == sorted(["late", HOSTILE_ID])
    assert data.preflight_runs == [] and data.overrides == []
    assert [lease.task_id for lease in data.leases] == [HOSTILE_ID]
    assert "No preflight run in this window." in render_report(data)


def test_a_limit_lists_the_newest_tasks_and_still_charts_every_preflight(
    store: Store, clock: ManualClock, tmp_path: Path
) -> None:
    build_known_store(store, clock, tmp_path / "agent-mail")

    data = gather_report(store, limit=2)

    assert [history.task.id for history in data.tasks] == [HOSTILE_ID, "fix-login"]
    assert data.tasks_in_window == 6 and len(data.preflight_runs) == 4
    page = render_report(data)
    assert page.count("data-task-id=") == 2 and "The 2 most recently changed of 6 tasks" in page


def test_a_thousand_tasks_stay_under_a_megabyte(tmp_path: Path) -> None:
    from pytest_maf.store import open_store

    clock = ManualClock(1_700_000_000_000)
    with open_store(tmp_path / "runtime.db", create=True, clock=clock) as store:
        build_many_tasks(store, clock, 1_000)
        page = render_report(gather_report(store))
    assert page.count("data-task-id=") == 1_000
    assert page.count('data-testid=failure-detail') == 100  # every failure's details are there
    assert len(page.encode("utf-8")) < 1_000_000


# The command.


def maf(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*maf_command(), *args], cwd=tmp_path, capture_output=True, text=True,
        env=isolated_env(tmp_path / "home", env), timeout=120,
    )


@pytest.fixture
def known_db(tmp_path: Path) -> Path:
    from pytest_maf.store import open_store

    clock = ManualClock(1_700_000_000_000)
    path = tmp_path / ".maf" / "runtime.db"
    with open_store(path, create=True, clock=clock) as store:
        build_known_store(store, clock, tmp_path / "agent-mail")
    return path


def test_maf_report_writes_the_page_and_says_so(tmp_path: Path, known_db: Path) -> None:
    result = maf(tmp_path, "--db", str(known_db), "report", "--html", "out/report.html", "--json")

    assert result.returncode == 0, result.stderr
    told = json.loads(result.stdout)
    page = tmp_path / "out" / "report.html"
    assert told == {"path": "out/report.html", "bytes": page.stat().st_size, "tasks": 6}
    assert "fix-login" in page.read_text(encoding="utf-8")
    assert [path.name for path in page.parent.iterdir()] == ["report.html"]  # no temporary file left

    plain = maf(tmp_path, "report", "--output", "out/report.html", "--since", "2w", "--db", str(known_db))
    assert plain.returncode == 0 and plain.stdout.startswith("wrote out/report.html: 1 task(s), 0 preflight run(s)"), plain

    limited = maf(tmp_path, "--db", str(known_db), "report", "--html", "out/report.html", "--limit", "3", "--json")
    assert json.loads(limited.stdout)["tasks"] == 3


@pytest.mark.parametrize("target", ["runtime.db", "runtime.db-wal", "runtime.db.lock", "."])
def test_maf_report_never_writes_over_the_store(tmp_path: Path, known_db: Path, target: str) -> None:
    before, files = store_rows_of(known_db), sorted(path.name for path in known_db.parent.iterdir())
    result = maf(tmp_path, "--db", str(known_db), "report", "--html", str(known_db.parent / target))

    assert result.returncode == 2
    assert result.stderr.startswith("maf: error: ") and len(result.stderr.splitlines()) == 1
    assert store_rows_of(known_db) == before
    assert sorted(path.name for path in known_db.parent.iterdir()) == files  # no temporary file either


def store_rows_of(path: Path) -> list[str]:
    from pytest_maf.store import open_store

    with open_store(path) as store:
        return store_rows(store)


def test_a_failed_report_leaves_the_old_page_whole(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text("the report of yesterday", encoding="utf-8")

    missing = maf(tmp_path, "--db", str(tmp_path / "none.db"), "report", "--html", str(page))
    bad_since = maf(tmp_path, "--db", str(tmp_path / "none.db"), "report", "--html", str(page), "--since", "7y")

    assert missing.returncode == 2 and missing.stderr.startswith("maf: error: "), missing.stderr
    assert bad_since.returncode == 2 and "--since" in bad_since.stderr and "Traceback" not in bad_since.stderr
    assert page.read_text(encoding="utf-8") == "the report of yesterday"
    assert sorted(path.name for path in tmp_path.iterdir() if path.name != "home") == ["report.html"]



@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)], ids=["umask-022", "umask-027"])
def test_the_page_gets_the_mode_any_new_file_gets(tmp_path: Path, known_db: Path, umask: int, mode: int) -> None:
    import os
    import stat

    kept = tmp_path / "kept.html"
    kept.write_text("yesterday's", encoding="utf-8")
    kept.chmod(0o600)
    previous = os.umask(umask)  # the maf process inherits it
    try:
        written = maf(tmp_path, "--db", str(known_db), "report", "--html", "report.html")
        rewritten = maf(tmp_path, "--db", str(known_db), "report", "--html", "kept.html")
    finally:
        os.umask(previous)

    assert written.returncode == 0 and rewritten.returncode == 0, written.stderr + rewritten.stderr
    assert stat.S_IMODE((tmp_path / "report.html").stat().st_mode) == mode  # a CI artifact others can read
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600  # a page replaced keeps the mode it was given


def test_a_page_written_to_a_device_goes_through_it_and_leaves_it_in_place(tmp_path: Path, known_db: Path) -> None:
    link = tmp_path / "discard.html"
    link.symlink_to(os.devnull)

    written = maf(tmp_path, "--db", str(known_db), "report", "--html", str(link))

    assert written.returncode == 0, written.stderr
    assert link.is_symlink() and Path(os.devnull).is_char_device()  # written through, not replaced
    assert not list(tmp_path.glob(".discard.html.*"))  # no temporary file left beside it


def test_a_page_written_to_the_commands_own_stdout_lands_in_its_redirect_and_leaves_the_link(
    tmp_path: Path, known_db: Path
) -> None:
    own_stdout = tmp_path / "stdout-link"  # what /dev/stdout is: a link to this process's descriptor 1
    own_stdout.symlink_to("/proc/self/fd/1")
    captured = tmp_path / "captured.html"

    with captured.open("w") as redirect:  # `maf report --html /dev/stdout > captured.html`
        written = subprocess.run(
            [*maf_command(), "--db", str(known_db), "report", "--html", str(own_stdout)],
            cwd=tmp_path, env=isolated_env(tmp_path / "home"), stdout=redirect, stderr=subprocess.PIPE, text=True, timeout=60,
        )

    # Before: the link was replaced by a regular file holding the page (as root, /dev/stdout itself),
    # and the redirect got only the "wrote" line.
    assert written.returncode == 0, written.stderr
    assert own_stdout.is_symlink() and os.readlink(own_stdout) == "/proc/self/fd/1"
    page = captured.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")  # the page alone, whole
    assert written.stderr.startswith(f"wrote {own_stdout}: ")  # said beside it


def test_a_page_written_through_a_link_to_a_file_replaces_that_file_and_keeps_the_link(
    tmp_path: Path, known_db: Path
) -> None:
    (tmp_path / "reports").mkdir()
    latest = tmp_path / "reports" / "2026-11-29.html"
    latest.write_text("yesterday's page\n", encoding="utf-8")
    link = tmp_path / "latest.html"
    link.symlink_to("reports/2026-11-29.html")

    written = maf(tmp_path, "--db", str(known_db), "report", "--html", str(link))

    assert written.returncode == 0, written.stderr
    assert link.is_symlink() and latest.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_a_link_another_user_put_in_a_shared_folder_is_not_followed(tmp_path: Path, known_db: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("makes a link owned by another user: root only")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # as /tmp is
    precious = tmp_path / "bashrc"
    precious.write_text("export PATH\n", encoding="utf-8")
    planted = shared / "report.html"
    planted.symlink_to(precious)
    os.lchown(planted, 65534, 65534)  # another user's link

    refused = maf(tmp_path, "--db", str(known_db), "report", "--html", str(planted))

    assert refused.returncode == 2 and "is not followed" in refused.stderr
    assert precious.read_text(encoding="utf-8") == "export PATH\n" and planted.is_symlink()


# In a real browser.


def chromium() -> str:
    return required_tool("chromium", "chromium", "run the browser tests")


def run_chromium(tmp_path: Path, name: str, page: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """Chromium headless on ``page`` with a fresh profile of its own, within a deadline."""
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / f'profile-{name}'}",
        "--enable-logging=stderr", "--v=0", *options, page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=CHROMIUM_TIMEOUT_S)


class Element:
    def __init__(self, tag: str, attributes: dict[str, str]) -> None:
        self.tag = tag
        self.attributes = attributes
        self.children: list[Element] = []
        self.parts: list[str] = []

    def text(self) -> str:
        return "".join(self.parts) + "".join(child.text() for child in self.children)

    def walk(self) -> Iterator[Element]:
        yield self
        for child in self.children:
            yield from child.walk()

    def find(self, tag: str | None = None, **attributes: str) -> list[Element]:
        wanted = {key.replace("_", "-"): value for key, value in attributes.items()}
        return [
            element for element in self.walk()
            if (tag is None or element.tag == tag) and all(element.attributes.get(k) == v for k, v in wanted.items())
        ]


VOID_TAGS = {"meta", "input", "br", "img", "link", "hr", "source", "wbr", "area", "base", "col", "embed", "track"}


class DomReader(HTMLParser):
    """The browser's serialized DOM (every element closed) as a tree of :class:`Element`."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {key: value or "" for key, value in attrs})
        self.stack[-1].children.append(element)
        if tag not in VOID_TAGS:
            self.stack.append(element)

    def handle_endtag(self, tag: str) -> None:
        while len(self.stack) > 1 and self.stack.pop().tag != tag:
            pass

    def handle_data(self, data: str) -> None:
        self.stack[-1].parts.append(data)


def dom_of(text: str) -> Element:
    reader = DomReader()
    reader.feed(text)
    reader.close()
    return reader.root


def store_environment(store: Store) -> tuple[list[str], dict[str, str]]:
    """How a `maf` process names ``store``: ``--db FILE``, or the PostgreSQL URL and schema."""
    if store.backend == "sqlite":
        return ["--db", store.location], {}
    return [], {"MAF_DATABASE_URL": store.url, "MAF_DATABASE_SCHEMA": store.schema}  # type: ignore[attr-defined]


def test_the_page_renders_in_a_browser_without_a_script_error(store: Store, clock: ManualClock, tmp_path: Path) -> None:
    chromium()
    build_known_store(store, clock, tmp_path / "agent-mail")
    options, env = store_environment(store)
    written = maf(tmp_path, *options, "report", "--html", "report.html", env=env)
    assert written.returncode == 0, written.stderr

    loaded = run_chromium(tmp_path, "dom", tmp_path / "report.html", "--virtual-time-budget=5000", "--dump-dom")

    assert loaded.returncode == 0, loaded.stderr[-2000:]
    console = [line for line in loaded.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert not [line for line in console if "Uncaught" in line or "Content Security Policy" in line], console
    dom = dom_of(loaded.stdout)
    (html,) = dom.find("html")
    assert html.attributes.get("data-report-ready") == "1"  # the page's script ran to its end
    assert "data-js-errors" not in html.attributes, html.attributes["data-js-errors"]
    assert dom.find("title")[0].text().startswith("pytest-maf report")  # no injected script renamed it

    (chart,) = dom.find("svg", data_testid="pass-rate-chart")
    points = chart.find("circle", data_testid="pass-rate-point")
    assert [point.attributes["class"] for point in points] == ["ok", "bad", "bad", "ok"]
    assert len({point.attributes["cy"] for point in points}) == 2  # 100% twice, two thirds twice

    failures = [element.text() for element in dom.find("details", data_testid="failure-detail")]
    assert any(LINT_MESSAGE in text for text in failures)
    assert any(HOSTILE_MESSAGE in text for text in failures)  # shown as text, not run
    assert dom.find("img") == [] and len(dom.find("script")) == 2
    (hostile,) = dom.find("details", data_task_id=HOSTILE_ID)
    assert HOSTILE_ID in hostile.find("summary")[0].text()
    (override,) = [row for row in dom.find("tr", data_testid="override") if "override" in row.text()]
    assert OVERRIDE_REASON in override.text()


def test_an_empty_store_renders_without_a_script_error(tmp_path: Path) -> None:
    from pytest_maf.store import open_store

    chromium()
    open_store(tmp_path / "runtime.db", create=True).close()
    assert maf(tmp_path, "--db", str(tmp_path / "runtime.db"), "report", "--html", "report.html").returncode == 0

    loaded = run_chromium(tmp_path, "empty", tmp_path / "report.html", "--virtual-time-budget=5000", "--dump-dom")

    (html,) = dom_of(loaded.stdout).find("html")
    assert html.attributes.get("data-report-ready") == "1" and "data-js-errors" not in html.attributes, html.attributes
    assert dom_of(loaded.stdout).find("p", data_testid="no-preflight")


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


@pytest.mark.parametrize("width", [1440, 1024])
def test_screenshots_at_desktop_and_laptop_widths(tmp_path: Path, known_db: Path, width: int) -> None:
    chromium()
    assert maf(tmp_path, "--db", str(known_db), "report", "--html", "report.html").returncode == 0
    shot = tmp_path / f"report-{width}.png"

    taken = run_chromium(
        tmp_path, f"shot-{width}", tmp_path / "report.html", "--hide-scrollbars",
        f"--screenshot={shot}", f"--window-size={width},900",
    )

    assert taken.returncode == 0, taken.stderr[-2000:]
    assert png_size(shot) == (width, 900)
    assert shot.stat().st_size > 20_000  # a page of text, tables and a chart; a blank one is a few hundred bytes



def test_at_laptop_width_no_id_is_broken_inside_a_word_and_nothing_widens_the_page(
    tmp_path: Path, known_db: Path
) -> None:
    from pytest_maf import reservations
    from pytest_maf.store import open_store

    chromium()
    with open_store(known_db) as store:  # a reason of one unbreakable word, as a careless script writes one
        reservations.acquire(store, ["logs/**"], "agent-d", 60 * MINUTE, reason="y" * 2_000)
    assert maf(tmp_path, "--db", str(known_db), "report", "--html", "report.html").returncode == 0
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    # the page as it is, plus a probe: the ids in table cells the layout wrapped over several lines,
    # and whether anything made the page wider than the window (the tables scroll in their own boxes)
    probe = (
        "<script>var w=[],r=document.documentElement;document.querySelectorAll('td code').forEach(function(c){"
        "if(c.getClientRects().length>1)w.push(c.textContent)});"
        "r.setAttribute('data-wrapped',w.join('|')||'none');"
        "r.setAttribute('data-too-wide',String(r.scrollWidth>window.innerWidth))</script>"
    )
    probed = tmp_path / "probed.html"
    probed.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page)
                      .replace("</body>", probe + "</body>"), encoding="utf-8")

    loaded = run_chromium(tmp_path, "wrap", probed, "--window-size=1024,900", "--virtual-time-budget=5000", "--dump-dom")

    (html,) = dom_of(loaded.stdout).find("html")
    assert html.attributes.get("data-wrapped") == "none"  # "env.variable" above "s" reads as two things
    assert html.attributes.get("data-too-wide") == "false"  # the leases beside it stay in view


def pdf_pages(path: Path) -> int:
    return len(re.findall(rb"/Type\s*/Page\b", path.read_bytes()))


def test_printing_unfolds_every_task(tmp_path: Path, known_db: Path) -> None:
    chromium()
    assert maf(tmp_path, "--db", str(known_db), "report", "--html", "report.html").returncode == 0
    page = tmp_path / "report.html"
    unfolded = tmp_path / "unfolded.html"  # what a reader who opened every fold would print
    unfolded.write_text(page.read_text(encoding="utf-8").replace("<details ", "<details open "), encoding="utf-8")

    for name in ("report", "unfolded"):
        printed = run_chromium(tmp_path, f"print-{name}", tmp_path / f"{name}.html", "--no-pdf-header-footer",
                               f"--print-to-pdf={tmp_path / f'{name}.pdf'}")
        assert printed.returncode == 0, printed.stderr[-2000:]

    assert pdf_pages(tmp_path / "report.pdf") == pdf_pages(tmp_path / "unfolded.pdf") > 2
