"""One store object shared: by threads (one at a time in a transaction, so each write is whole), and by
the children forked after it was opened (multiprocessing's "fork" start, a forked test runner: nothing a
child writes is lost, no reply reaches the wrong process, a child's close leaves its parent's store
working), on both backends."""

from __future__ import annotations

import multiprocessing
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from backends import BACKENDS, backend_param, backend_store
from pytest_maf import tasks
from pytest_maf.audit import task_violations
from pytest_maf.errors import StoreError, UsageError
from pytest_maf.store import open_store

no_fork = pytest.mark.skipif(sys.platform == "win32", reason="no fork on Windows")
CHILDREN = 3
TASKS_EACH = 150
PEEKS = 20
JOIN_S = 60
THREADS = 4
CYCLES_EACH = 60


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", [backend_param(backend) for backend in BACKENDS])
def test_threads_sharing_one_store_each_write_whole(backend: str, tmp_path: Path) -> None:
    failures: list[str] = []

    def agent(number: int) -> None:
        for _ in range(CYCLES_EACH):
            try:
                tasks.add_task(store)
                claim = tasks.claim_next_task(store, f"agent-{number}", 60_000, start=True)
                assert claim is not None  # every thread adds before it claims: one is READY
                tasks.complete_task(store, claim.task_id, f"agent-{number}", claim.attempt, [("check", "PASS", None)])
            except Exception as error:  # noqa: BLE001 - collected: the test fails on any
                failures.append(f"{type(error).__name__}: {error}")

    with backend_store(backend, tmp_path) as store:
        threads = [threading.Thread(target=agent, args=(number,)) for number in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=JOIN_S)
        assert not any(thread.is_alive() for thread in threads)
        states = sorted({task.state for task in tasks.list_tasks(store)})
        count = len(tasks.list_tasks(store))
        violations = task_violations(store.read(lambda transaction: transaction.events()))

    # before: "cannot start a transaction within a transaction", one thread's rollback undoing another's
    # transaction, RUNNING tasks left without a lease; on PostgreSQL, leases granted to the wrong agent
    assert failures == []
    assert (count, states) == (THREADS * CYCLES_EACH, ["DONE"])
    assert violations == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", [backend_param(backend) for backend in BACKENDS])
def test_a_thread_waits_for_anothers_transaction_on_the_same_store_then_writes(backend: str, tmp_path: Path) -> None:
    inside, leave, written = threading.Event(), threading.Event(), threading.Event()

    def slow(transaction: object) -> None:
        inside.set()
        assert leave.wait(JOIN_S)

    def add() -> None:
        tasks.add_task(store, task_id="waited")
        written.set()

    with backend_store(backend, tmp_path, busy_timeout_s=0.2) as store:
        holder = threading.Thread(target=store.write, args=(slow,))
        holder.start()
        assert inside.wait(JOIN_S)
        waiter = threading.Thread(target=add)
        waiter.start()
        try:
            assert not written.wait(0.5)  # not inside the other's transaction, nor refused as busy
        finally:
            leave.set()
            holder.join(timeout=JOIN_S)
        waiter.join(timeout=JOIN_S)
        assert written.is_set()
        assert [task.id for task in tasks.list_tasks(store)] == ["waited"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", [backend_param(backend) for backend in BACKENDS])
@pytest.mark.parametrize("look", ["table_names", "schema_version", "check_schema_version", "user_version"])
def test_a_threads_look_at_the_schema_never_sees_anothers_unfinished_change(
    backend: str, look: str, tmp_path: Path
) -> None:
    inside, leave, looking_now = threading.Event(), threading.Event(), threading.Event()
    seen: list[object] = []

    def unfinished(transaction: Any) -> None:  # a schema change under way, then given up
        if backend == "sqlite":
            transaction.connection.execute("CREATE TABLE half_made (x)")
            transaction.connection.execute("PRAGMA user_version = 99")
        else:
            transaction._execute("CREATE TABLE half_made (x int)")
        inside.set()
        assert leave.wait(JOIN_S)
        raise RuntimeError("given up")

    def look_now() -> object:
        if look == "user_version":
            return store.pragma("user_version")[0][0] if backend == "sqlite" else store.schema_version()
        return getattr(store, look)()

    def looking() -> None:
        looking_now.set()
        seen.append(look_now())

    with backend_store(backend, tmp_path) as store:
        expected = look_now()
        changer = threading.Thread(target=lambda: pytest.raises(RuntimeError, store.write, unfinished))
        changer.start()
        assert inside.wait(JOIN_S)
        looker = threading.Thread(target=looking)
        looker.start()
        assert looking_now.wait(JOIN_S)
        looker.join(timeout=0.5)
        waited = looker.is_alive()  # the look waits for the other thread's transaction to end
        leave.set()
        changer.join(timeout=JOIN_S)
        looker.join(timeout=JOIN_S)

    # before, on SQLite: the look ran inside the other thread's transaction, and saw a table and a version
    # that never were (schema_version 99: "newer than this pytest-maf knows")
    assert waited and seen == [expected]


@pytest.mark.parametrize("backend", [backend_param(backend) for backend in BACKENDS])
@pytest.mark.parametrize("inner", ["write", "read"])
def test_the_store_used_from_inside_its_own_write_is_refused_and_the_write_stays_whole(
    backend: str, inner: str, tmp_path: Path
) -> None:
    refused: list[str] = []

    def outer(transaction: Any) -> None:
        transaction.insert_event("before", "note", {})
        try:
            if inner == "write":
                tasks.add_task(store, task_id="nested")
            else:
                tasks.list_tasks(store)
        except UsageError as error:
            refused.append(str(error))
        transaction.insert_event("before", "note", {"after": True})
        raise RuntimeError("the operation fails after all: none of it may stay")

    with backend_store(backend, tmp_path) as store:
        tasks.add_task(store, task_id="before")
        events_before = len(store.read(lambda transaction: transaction.events("before")))
        with pytest.raises(RuntimeError):
            store.write(outer)
        events_after = len(store.read(lambda transaction: transaction.events("before")))
        ids = sorted(task.id for task in tasks.list_tasks(store))

    # before: SQLite said "cannot start a transaction within a transaction" (as if damaged) and rolled the
    # outer write back, whose rest was then committed statement by statement; PostgreSQL committed it
    assert refused and "from inside one of its own operations" in refused[0]
    assert (events_after, ids) == (events_before, ["before"])


@no_fork
@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", [backend_param(backend) for backend in BACKENDS])
def test_what_forked_children_write_through_their_parents_store_is_all_there_after_the_parent_closes_it(
    backend: str, tmp_path: Path
) -> None:
    context = multiprocessing.get_context("fork")
    with backend_store(backend, tmp_path) as store:
        tasks.add_task(store, task_id="parent")  # its connection is open as the children are forked
        parent_closed, stop = context.Event(), context.Event()
        outcome = context.Queue()

        def child(number: int) -> None:
            if not parent_closed.wait(JOIN_S):
                outcome.put((number, -1, "the parent never closed its store"))
                return
            written = 0
            try:
                while written < TASKS_EACH or not stop.is_set():
                    tasks.add_task(store, task_id=f"child-{number}-{written}")
                    written += 1
            except Exception as error:  # noqa: BLE001 - reported to the parent, which fails the test
                outcome.put((number, written, f"{type(error).__name__}: {error}"))
                return
            outcome.put((number, written, "wrote"))

        children = [context.Process(target=child, args=(number,)) for number in range(CHILDREN)]
        for process in children:
            process.start()
        store.close()  # SQLite: the last close the parent knows of, with the children's writes to come
        parent_closed.set()
        for _ in range(PEEKS):  # as `maf task list` would, meanwhile: each close looks for other users
            with store.reopen() as peek:
                tasks.list_tasks(peek)
        stop.set()
        said = sorted(outcome.get(timeout=JOIN_S) for _ in children)
        for process in children:
            process.join(timeout=JOIN_S)
        with store.reopen() as later:
            ids = {task.id for task in tasks.list_tasks(later)}

    assert [(number, message) for number, _, message in said] == [(number, "wrote") for number in range(CHILDREN)]
    assert [process.exitcode for process in children] == [0] * CHILDREN
    expected = {"parent"} | {f"child-{number}-{each}" for number, written, _ in said for each in range(written)}
    # before: a child's connection took no SQLite lock while the parent's, inherited, stayed open in it, so
    # the last close deleted the WAL the children wrote to (writes lost, the database damaged); on
    # PostgreSQL, protocol errors on the shared socket
    assert ids == expected


@no_fork
@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", [backend_param(backend) for backend in BACKENDS])
def test_a_forked_childs_close_of_its_parents_store_leaves_the_parent_writing(backend: str, tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    with backend_store(backend, tmp_path) as store:
        tasks.add_task(store, task_id="before")

        def child() -> None:
            tasks.add_task(store, task_id="child")
            store.close()

        process = context.Process(target=child)
        process.start()
        process.join(timeout=JOIN_S)
        assert process.exitcode == 0

        tasks.add_task(store, task_id="after")  # before, on PostgreSQL: the child's close ended this session
        assert sorted(task.id for task in tasks.list_tasks(store)) == ["after", "before", "child"]


@no_fork
@pytest.mark.timeout(120)
def test_a_child_forked_while_the_checkpointer_was_being_woken_still_checkpoints(tmp_path: Path) -> None:
    """The parent's checkpointing thread may hold its wake-up event's lock at the fork: the child's writes
    must not wait on it for ever."""
    context = multiprocessing.get_context("fork")
    db = tmp_path / "runtime.db"
    with open_store(db, create=True) as store:
        for number in range(120):  # past a checkpoint's worth of WAL frames: the thread is started
            tasks.add_task(store, task_id=f"parent-{number}")
        wanted = store._checkpointer._wanted  # type: ignore[attr-defined]
        assert wanted is not None
        with wanted._cond:  # as the thread holds it, clearing the event, at the moment of the fork
            process = context.Process(target=lambda: [tasks.add_task(store) for _ in range(300)])
            process.start()
        process.join(timeout=JOIN_S)
        if process.exitcode is None:
            process.kill()
            process.join(timeout=JOIN_S)
        assert process.exitcode == 0  # before: the child hung at its first checkpoint


@no_fork
@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", [backend_param(backend) for backend in BACKENDS])
def test_a_child_forked_as_another_thread_writes_is_told_or_writes(backend: str, tmp_path: Path) -> None:
    """SQLite: the writing thread's connection cannot be closed in the child (its mutex may be held, its
    rollback would undo the parent's commit) and, open, it keeps the child's own from locking: the child
    is told so at once. PostgreSQL: the child writes on a connection of its own."""
    context = multiprocessing.get_context("fork")
    inside, leave = threading.Event(), threading.Event()
    outcome = context.Queue()

    def slow(transaction: Any) -> None:
        transaction.insert_event("before", "note", {})
        inside.set()
        assert leave.wait(JOIN_S)

    def child() -> None:
        try:
            tasks.add_task(store, task_id="child")
            outcome.put("wrote")
        except StoreError as error:
            outcome.put(str(error))

    with backend_store(backend, tmp_path, busy_timeout_s=5) as store:
        tasks.add_task(store, task_id="before")
        writer = threading.Thread(target=store.write, args=(slow,))
        writer.start()
        assert inside.wait(JOIN_S)
        process = context.Process(target=child)
        process.start()
        leave.set()
        writer.join(timeout=JOIN_S)
        said = outcome.get(timeout=JOIN_S)
        process.join(timeout=JOIN_S)
        ids = sorted(task.id for task in tasks.list_tasks(store))

    if backend == "sqlite":  # before: "stayed busy for 5.0 s" on every try, long after the parent's write ended
        assert "forked during a write" in said and ids == ["before"]
    else:
        assert said == "wrote" and ids == ["before", "child"]


@no_fork
@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", [backend_param(backend) for backend in BACKENDS])
def test_a_child_forked_inside_an_operation_neither_commits_nor_rolls_back_its_parents(
    backend: str, tmp_path: Path
) -> None:
    import os

    parent = os.getpid()
    readable, writable = os.pipe()

    def forking(transaction: Any) -> int:
        transaction.insert_event("before", "note", {"by": "the parent"})
        return os.fork()  # the child returns through the operation too

    with backend_store(backend, tmp_path) as store:
        tasks.add_task(store, task_id="before")
        try:
            child = store.write(forking)
            if os.getpid() != parent:
                os.write(writable, b"committed")
        except BaseException as error:
            if os.getpid() == parent:
                raise
            os.write(writable, f"{type(error).__name__}: {error}".encode()[:2000])
        finally:
            if os.getpid() != parent:
                os._exit(0)
        os.close(writable)
        os.waitpid(child, 0)
        said = os.read(readable, 4000).decode()
        os.close(readable)
        notes = [event for event in store.read(lambda transaction: transaction.events("before")) if event.kind == "note"]

    # before: the child committed the parent's transaction a second time (SQLite) or over its socket
    assert said.startswith("StoreError") and "forked inside an operation" in said
    assert len(notes) == 1  # the parent's, committed once
