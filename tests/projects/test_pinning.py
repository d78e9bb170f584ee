"""A task names a project and the master pins it to one version when it takes the Submit (docs/architecture.md,
Projects, "Pinning at submit"): the latest then, or the version named; a later push changes nothing for a queued
task; an unknown project or version refuses the whole Submit with nothing queued; a pinned version cannot be
removed; a schedule pins at each firing. While no online worker runs projects, such a task waits, saying so."""
from __future__ import annotations

import json
import time

import pytest

from zmqgrid.client import build_spec
from zmqgrid.errors import ProtocolError, RemoteError, SubmitRefused, UsageError
from zmqgrid.master.handlers import Handlers
from zmqgrid.master.projects import Projects
from zmqgrid.model import compact_spec, validate_task_spec
from zmqgrid.protocol import Control, Error, Submit, decode
from zmqgrid.store.project_store import ProjectStore, folder_of

from ..helpers import Harness, db_query, run_cli, wait_until
from ..master.test_submit_turn import answers, handlers_on
from .test_push import project

pytestmark = pytest.mark.timeout(120)


def spider(root, body: str):
    return project(root / "myspider", {"myspider/__init__.py": "", "myspider/crawl.py": body})


def ledger_spec(h: Harness, task_id: str) -> dict:
    """The spec the ledger holds for a task (what a worker will be given and `tasks show` shows)."""
    return h.client().task(task_id)["spec"]


def task_count(h: Harness) -> int:
    return db_query(h.db, "SELECT count(*) FROM tasks")[0][0]


def test_a_task_pins_the_latest_version_or_the_one_named_and_a_later_push_changes_nothing(harness, tmp_path):
    harness.start_master()
    client = harness.client()
    folder = spider(tmp_path, "def run(u): return 1\n")
    v1 = client.push_project(folder)["version"]
    # When tasks name the project alone, by a version prefix, and by the full version
    latest, by_prefix, by_full = client.submit([build_spec(python="myspider.crawl:run", project="myspider"),
                                                build_spec(shell="true", project=f"myspider@{v1[:8]}"),
                                                build_spec(shell="true", project=f"myspider@{v1}")])
    # Then each holds the full version, in the ledger
    assert [ledger_spec(harness, i)["project"] for i in (latest, by_prefix, by_full)] == [f"myspider@{v1}"] * 3

    # When v2 is pushed while those are queued
    project(folder, {"myspider/crawl.py": "def run(u): return 2\n"})
    v2 = client.push_project(folder)["version"]
    assert v2 != v1
    # Then they keep v1, and a task submitted now gets v2; an older version may still be named
    assert ledger_spec(harness, latest)["project"] == f"myspider@{v1}"
    newer, older = client.submit([build_spec(shell="true", project="myspider"),
                                  build_spec(shell="true", project=f"myspider@{v1[:6]}")])
    assert ledger_spec(harness, newer)["project"] == f"myspider@{v2}"
    assert ledger_spec(harness, older)["project"] == f"myspider@{v1}"

    # The command line and a JSON-lines file take it the same way; `tasks show` shows what was pinned
    done = run_cli("submit", "--project", "myspider", "--shell", "true", "--master", harness.url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    shown = run_cli("tasks", "show", done.stdout.strip(), "--master", harness.url, cwd=tmp_path)
    assert f"myspider@{v2}" in shown.stdout, shown.stdout
    shown = run_cli("tasks", "show", done.stdout.strip(), "--json", "--master", harness.url, cwd=tmp_path)
    assert json.loads(shown.stdout)["spec"]["project"] == f"myspider@{v2}"
    lines = tmp_path / "tasks.jsonl"
    lines.write_text(json.dumps({"shell": "true", "project": f"myspider@{v1[:10]}"}) + "\n")
    done = run_cli("submit", "--file", str(lines), "--master", harness.url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert ledger_spec(harness, done.stdout.strip())["project"] == f"myspider@{v1}"


def test_a_task_in_a_project_waits_saying_no_worker_runs_projects_while_a_worker_that_does_not_runs_others(
        harness, tmp_path):
    harness.start_master()
    client = harness.client()
    client.push_project(spider(tmp_path, "def run(u): return 1\n"))
    harness.start_worker("w1", env={"ZMQGRID_ALLOW_PROJECTS": "false"})
    harness.wait_online(client, "w1")
    # When a task of the project is submitted first, then one without a project
    (pinned,) = client.submit(build_spec(shell="true", project="myspider"))
    (plain,) = client.submit(build_spec(shell="true"))
    # Then the worker runs the second and is never given the first, which says why it waits
    assert client.wait([plain], timeout_s=30)[plain]["state"] == "done"
    task = client.task(pinned)
    assert task["state"] == "queued" and task["attempt"] == 0
    assert "no online worker runs projects" in task["waiting"] and "myspider@" in task["waiting"]
    assert "allow_projects false" in task["waiting"]
    assert client.status()["stuck_tasks"] == 1


def test_an_unknown_project_or_version_refuses_the_whole_submit_and_nothing_is_queued(harness, tmp_path):
    harness.start_master()
    client = harness.client()
    version = client.push_project(spider(tmp_path, "def run(u): return 1\n"))["version"]
    absent = "0123456789abcdef" if not version.startswith("0123456789abcdef") else "fedcba9876543210"
    for ref, says in (("nosuch", "no project 'nosuch'"), (f"myspider@{absent}", "has no version")):
        # When one task of a batch names what the master does not hold
        with pytest.raises(SubmitRefused) as refused:
            client.submit([build_spec(shell="true", project="myspider"), build_spec(shell="true", project=ref)])
        # Then the Submit is refused whole, not_found, naming it and how to list what there is
        assert refused.value.code == "not_found" and says in refused.value.message
        assert "projects list" in refused.value.message or "projects show myspider" in refused.value.message
        assert refused.value.submitted == [] and task_count(harness) == 0
    done = run_cli("submit", "--project", "nosuch", "--shell", "true", "--master", harness.url, cwd=tmp_path)
    assert done.returncode == 3 and done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert "no project 'nosuch'" in done.stderr and "projects list" in done.stderr
    assert task_count(harness) == 0
    # A malformed name or version is refused by the client before anything is sent
    done = run_cli("submit", "--project", "my spider@12", "--shell", "true", "--master", harness.url, cwd=tmp_path)
    assert done.returncode == 3 and "task field 'project'" in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.parametrize("value, says", [
    ("", "NAME"), ("-x", "NAME"), ("x" * 65, "NAME"), ("x@12345", "6-64"), ("x@ABCDEF", "lowercase"),
    ("x@" + "a" * 65, "NAME"), ("x@abcdef\n", "NAME"), ("x@@abcdef", "NAME"), (7, "NAME or NAME@VERSION"),
    (["x"], "NAME or NAME@VERSION"),
], ids=repr)
def test_the_project_field_is_typed_and_bounded(value, says):
    with pytest.raises(ProtocolError, match="task field 'project'") as refused:
        validate_task_spec({"id": "t1", "kind": "shell", "command": "true", "project": value})
    assert says in refused.value.message
    with pytest.raises(UsageError, match="task field 'project'"):
        build_spec(shell="true", project=value)


def test_a_version_that_an_unfinished_task_pins_is_not_removed(harness, tmp_path):
    harness.start_master()
    client = harness.client()
    folder = spider(tmp_path, "def run(u): return 1\n")
    v1 = client.push_project(folder)["version"]
    project(folder, {"myspider/crawl.py": "def run(u): return 2\n"})
    v2 = client.push_project(folder)["version"]
    (task,) = client.submit(build_spec(shell="true", project=f"myspider@{v1[:8]}"))
    # When the pinned version, or the whole project, is to be removed
    for ref in (f"myspider@{v1[:12]}", "myspider"):
        done = run_cli("projects", "remove", ref, "--master", harness.url, cwd=tmp_path)
        # Then it is refused with one line naming the version and the tasks, and nothing is removed
        assert done.returncode == 3 and done.stderr.count("\n") == 1, done.stderr
        assert f"myspider@{v1[:12]} is pinned by 1 unfinished task" in done.stderr
        assert sorted(r["version"] for r in client.projects("myspider")) == sorted([v1, v2])
    # A version nothing pins goes; once the task has ended, so does the one it pinned
    assert client.remove_project("myspider", v2[:8])["removed"] == [v2]
    client.cancel([task])
    wait_until(lambda: client.task(task)["state"] == "cancelled", 20, "the task cancelled")
    assert client.remove_project("myspider", v1[:8])["removed"] == [v1]


def test_a_schedule_keeps_the_name_and_pins_the_latest_version_at_each_firing(harness, tmp_path):
    harness.start_master()
    client = harness.client()
    folder = spider(tmp_path, "def run(u): return 1\n")
    v1 = client.push_project(folder)["version"]
    # A schedule naming a project the master does not hold is refused
    with pytest.raises(RemoteError, match="no project 'nosuch'.*projects list") as refused:
        client.schedule_add("bad", "* * * * * *", build_spec(shell="true", project="nosuch"))
    assert refused.value.code == "bad_request" and client.schedules() == []
    client.schedule_add("crawl", "* * * * * *", build_spec(shell="true", project="myspider"))
    assert client.schedules()[0]["spec"]["project"] == "myspider"

    def fired() -> list[tuple[str, str]]:
        rows = db_query(harness.db, "SELECT id FROM tasks WHERE id LIKE 'sched-crawl-%' ORDER BY id")
        return [(row[0], ledger_spec(harness, row[0])["project"]) for row in rows]

    first = wait_until(fired, 20, "a firing")
    assert {pinned for _, pinned in first} == {f"myspider@{v1}"}
    project(folder, {"myspider/crawl.py": "def run(u): return 2\n"})
    v2 = client.push_project(folder)["version"]
    later = wait_until(lambda: [f for f in fired() if f[1] == f"myspider@{v2}"], 20, "a firing after the push")
    assert later and all(pinned == f"myspider@{v1}" for task_id, pinned in fired() if task_id < later[0][0])
    assert client.schedules()[0]["spec"]["project"] == "myspider"


# ------------------------------------------------------------------ within one turn of the master's loop

def handlers_with_projects(tmp_path, *versions: str):
    """A real board, ledger and project index (the master's parts, driven turn by turn), holding `versions` of
    myspider, pushed in that order."""
    store, board, handlers = handlers_on(tmp_path / "ledger.db")
    projects = handlers.projects = Projects(ProjectStore(store, folder_of(str(tmp_path / "ledger.db"))), 200, 10_000)
    for n, version in enumerate(versions):
        projects.store.stage_push("myspider", version, 10, 1, 1000.0 + n, "open")
    store.commit()
    return store, board, handlers


def send(handlers: Handlers, client: bytes, message) -> None:
    handlers.on_router(client, decode(message.encode()), time.monotonic(), time.time())


def test_a_refused_submit_leaves_the_other_submits_of_its_turn_as_they_would_be(tmp_path):
    v1 = "a" * 64
    store, board, handlers = handlers_with_projects(tmp_path, v1)
    specs = [compact_spec(build_spec(shell="true", project=ref)) for ref in ("myspider", "nosuch", "myspider",
                                                                              "myspider@" + "b" * 8, "myspider")]
    # When one turn holds client a's Submits (good, unknown project, good, unknown version) and one of client b
    for n, (client, spec) in enumerate(zip((b"a", b"a", b"a", b"a", b"b"), specs), 1):
        send(handlers, client, Submit(n, [spec], False))
    handlers.apply_submits(time.time())
    store.commit()
    # Then the two refused ones are answered not_found, every other is acknowledged with its task, pinned
    replies = answers(handlers, board)
    assert {n: type(m).__name__ for n, m in replies.items()} == {1: "Reply", 2: "Error", 3: "Reply", 4: "Error",
                                                                 5: "Reply"}
    assert "no project 'nosuch'" in replies[2].message and "has no version 'bbbbbbbb'" in replies[4].message
    assert {replies[n].code for n in (2, 4)} == {"not_found"}
    taken = [specs[n - 1]["id"] for n in (1, 3, 5)]
    assert [replies[n].data["ids"] for n in (1, 3, 5)] == [[i] for i in taken]
    assert set(board.tasks) == set(taken)
    assert db_query(store.path, "SELECT count(*) FROM tasks") == [(3,)]
    assert {board.tasks[i].need.project for i in taken} == {f"myspider@{v1}"}
    store.close()


def test_a_removal_and_submits_in_one_turn_never_leave_a_task_pinning_a_removed_version(tmp_path):
    v1, v2 = "a" * 64, "b" * 64
    store, board, handlers = handlers_with_projects(tmp_path, v1, v2)
    before = compact_spec(build_spec(shell="true", project=f"myspider@{v1[:6]}"))
    after = compact_spec(build_spec(shell="true", project="myspider"))
    # When one turn holds a Submit pinning v1, removals of v1 and of v2 (the latest), and a Submit of the latest
    send(handlers, b"a", Submit(1, [before], False))
    send(handlers, b"admin", Control(2, "project", {"op": "remove", "name": "myspider", "version": v1[:8]}))
    send(handlers, b"admin", Control(3, "project", {"op": "remove", "name": "myspider", "version": v2[:8]}))
    send(handlers, b"a", Submit(4, [after], False))
    handlers.apply_submits(time.time())
    store.commit()
    replies = answers(handlers, board)
    # Then v1 stays (the first task pins it), v2 goes, and the later Submit, which reads the ledger before the
    # removal's commit, pins v1, not the v2 that is going
    assert isinstance(replies[2], Error) and "pinned by 1 unfinished task" in replies[2].message
    assert replies[3].data["removed"] == [v2]
    assert [board.tasks[s["id"]].need.project for s in (before, after)] == [f"myspider@{v1}"] * 2
    assert db_query(store.path, "SELECT version FROM projects") == [(v1,)]
    # A turn later, the removal committed, the ledger alone says what there is
    assert handlers.projects.pin("myspider") == f"myspider@{v1}" and handlers.projects.dropping == {}
    store.close()
