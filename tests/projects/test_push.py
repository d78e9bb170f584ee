"""Pushing a project to a real master: stored durably and named by its content, listed, shown and removed;
limits, hostile archives and non-admin keys refused with one line, nothing kept of a refused push."""
from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from zmqgrid.errors import ProjectNotFound, RemoteError
from zmqgrid.projects.messages import ProjectChunk, ProjectFetch, ProjectPush

from ..helpers import Harness, db_query, run_cli

pytestmark = pytest.mark.timeout(90)


def project(root, files: dict[str, bytes | str]):
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def archives(h: Harness) -> list[str]:
    return sorted(p.name for p in (h.dir / "ledger.db.projects").iterdir())


def test_a_push_is_stored_by_version_listed_shown_kept_across_a_restart_and_removed(harness, tmp_path):
    folder = project(tmp_path / "myspider", {"myspider/__init__.py": "", "myspider/crawl.py": "def run(u): return u\n",
                                             "requirements.txt": "", "data/big.bin": bytes(range(256)) * 14_000})
    harness.start_master()
    client = harness.client()
    first = client.push_project(folder)
    assert first["name"] == "myspider" and first["have"] is False and first["files"] == 4
    assert first["sent_bytes"] == first["size"] > 3 * (1 << 20)   # several chunks of 1 MiB
    stored = harness.dir / "ledger.db.projects" / f"{first['version']}.tar"
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == first["version"]
    # acknowledged only once the index row is committed
    assert db_query(harness.db, "SELECT name, version, files FROM projects") == [("myspider", first["version"], 4)]

    project(folder, {"myspider/crawl.py": "def run(u): return u * 2\n"})
    second = client.push_project(folder)
    assert second["version"] != first["version"]
    assert [r["version"] for r in client.projects("myspider")] == [second["version"], first["version"]]

    harness.kill(harness.master)   # SIGKILL: what was acknowledged is on disk
    harness.start_master()
    client = harness.client()
    listed = client.projects()
    assert [(r["name"], r["version"], r["versions"]) for r in listed] == [("myspider", second["version"], 2)]

    assert client.remove_project("myspider", first["version"][:8])["removed"] == [first["version"]]
    assert [r["version"] for r in client.projects("myspider")] == [second["version"]]
    assert client.remove_project("myspider")["removed"] == [second["version"]]
    with pytest.raises(ProjectNotFound, match="no project 'myspider'"):
        client.projects("myspider")
    harness.kill(harness.master)
    harness.start_master()   # at the latest at a start, archives no row names are deleted
    assert archives(harness) == []


def test_the_same_content_gives_the_same_version_and_is_not_sent_again(harness, tmp_path):
    folder = project(tmp_path / "a", {"main.py": "print(1)\n", "lib/util.py": "X = 1\n"})
    harness.start_master()
    client = harness.client()
    first = client.push_project(folder)
    project(folder, {".git/HEAD": "ref: main", "lib/__pycache__/util.cpython-311.pyc": "x",
                     "env/pyvenv.cfg": "home = /usr/bin", "env/bin/python": "x"})
    again = client.push_project(folder)
    assert again["version"] == first["version"] and again["have"] is True and again["sent_bytes"] == 0
    # the same content under another name shares the one archive
    other = client.push_project(folder, name="b")
    assert other["have"] is True and other["version"] == first["version"]
    assert archives(harness) == [f"{first['version']}.tar"]
    assert {r["name"] for r in client.projects()} == {"a", "b"}

    done = run_cli("projects", "push", str(folder), "--master", harness.url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"a@{first['version'][:12]}\n" and "nothing sent" in done.stderr


def test_a_push_over_a_limit_is_refused_before_it_is_sent_naming_the_limit(tmp_path):
    h = Harness(tmp_path, env={"ZMQGRID_MAX_PROJECT_MB": "1", "ZMQGRID_MAX_PROJECT_FILES": "3"})
    try:
        h.start_master()
        client = h.client()
        big = project(tmp_path / "big", {"blob.bin": b"\x00" * (2 << 20)})
        with pytest.raises(RemoteError, match=r"over max_project_mb \(1 MiB\)") as refused:
            client.push_project(big)
        assert refused.value.code == "too_large"
        many = project(tmp_path / "many", {f"f{i}.py": "" for i in range(4)})
        with pytest.raises(RemoteError, match=r"project many of 4 files is over max_project_files \(3\)"):
            client.push_project(many)
        done = run_cli("projects", "push", str(big), "--master", h.url, cwd=tmp_path)
        assert done.returncode == 3 and done.stderr.count("\n") == 1 and "max_project_mb" in done.stderr
        assert client.projects() == [] and archives(h) == []
    finally:
        h.stop()


def hostile_archive(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(tarfile.TarInfo("ok.py"), io.BytesIO(b""))
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, linkname
        info.size = 3 if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(b"bad") if kind == tarfile.REGTYPE else None)
    return out.getvalue()


@pytest.mark.parametrize("name, kind, linkname, rule", [
    ("../../.bashrc", tarfile.REGTYPE, "", "'..' in its path"),
    ("/etc/cron.d/evil", tarfile.REGTYPE, "", "an absolute path"),
    ("escape", tarfile.SYMTYPE, "/etc/passwd", "a symbolic link"),
    ("tty", tarfile.CHRTYPE, "", "a character device"),
])
def test_a_hostile_archive_sent_past_the_client_is_refused_by_the_master_and_nothing_is_kept(
        harness, name, kind, linkname, rule):
    data = hostile_archive(name, kind, linkname)
    version = hashlib.sha256(data).hexdigest()
    harness.start_master()
    client = harness.client()
    upload = client.request(ProjectPush, "evil", version, len(data), 2)["upload"]
    with pytest.raises(RemoteError, match=rule) as refused:
        client.request(ProjectChunk, upload, 0, data)
    assert refused.value.code == "bad_request" and "\n" not in str(refused.value)
    assert client.projects() == [] and archives(harness) == []
    # an archive whose bytes are not its version is refused too
    upload = client.request(ProjectPush, "evil", "0" * 64, 3, 1)["upload"]
    with pytest.raises(RemoteError, match="does not match its version"):
        client.request(ProjectChunk, upload, 0, b"abc")
    assert archives(harness) == [] and harness.master.poll() is None


def test_a_missing_or_empty_folder_is_one_line_and_exit_3(harness, tmp_path):
    (tmp_path / "empty").mkdir()
    for folder, says in (("nope", "does not exist"), ("empty", "has nothing to pack")):
        done = run_cli("projects", "push", str(tmp_path / folder), "--master", harness.url, cwd=tmp_path)
        assert done.returncode == 3 and done.stdout == ""
        assert done.stderr.startswith("error: ") and says in done.stderr and done.stderr.count("\n") == 1


def test_under_curve_only_an_admin_key_pushes_or_removes_and_no_client_or_admin_key_fetches(tmp_path):
    h = Harness(tmp_path, secured=True)
    try:
        (tmp_path / "authorized" / "client.key").write_text((h.keys / "client.key").read_text())
        h.start_master()
        folder = project(tmp_path / "p", {"main.py": "print(1)\n"})
        admin = h.client()
        pushed = admin.push_project(folder)
        assert pushed["have"] is False
        client = h.client(curve=h.client_curve("client"))
        assert [r["name"] for r in client.projects()] == ["p"]   # reading is a client's right
        project(folder, {"main.py": "print(2)\n"})
        with pytest.raises(RemoteError, match="a client key may not send ProjectPush") as refused:
            client.push_project(folder)
        assert refused.value.code == "forbidden"
        with pytest.raises(RemoteError, match="a client key may not send Control project"):
            client.remove_project("p")
        for someone in (client, admin):   # only a worker key fetches, and only what its tasks pin
            with pytest.raises(RemoteError, match="key may not send ProjectFetch"):
                someone.request(ProjectFetch, pushed["version"], 0, 10, about="project")
        assert [r["version"] for r in admin.projects("p")] == [pushed["version"]]
        assert db_query(h.db, "SELECT pushed_by FROM projects")[0][0] != "open"
    finally:
        h.stop()
