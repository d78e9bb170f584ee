"""The environments of projects (zmqgrid.projects.envs): real virtualenvs built offline with uv and with venv + pip
from a wheel the test makes and ships in the project, named by relative path in requirements.txt. Nothing reaches
an index: installs run with `--no-index`, and the tests that need an index that never answers get one on 127.0.0.1.
uv comes with the test extras (pyproject.toml), so its path is tested wherever the suite runs."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import psutil
import pytest

from zmqgrid.projects.envfiles import FINDER_MODULE, env_python, scripts_dir
from zmqgrid.projects.envkey import requirements_key
from zmqgrid.projects.envs import Environments
from zmqgrid.projects.installer import find_uv, tail_of
from zmqgrid.worker.proctree import is_gone

from ..helpers import wait_until

pytestmark = pytest.mark.timeout(120)
OFFLINE = ("--no-index",)


def make_wheel(dest: Path, name: str, version: str, code: str) -> Path:
    """A pure-Python wheel made by hand (a zip with METADATA, WHEEL and RECORD): no build backend, no network."""
    dest.mkdir(parents=True, exist_ok=True)
    dist = f"{name}-{version}"
    path = dest / f"{dist}-py3-none-any.whl"
    files = {f"{name}/__init__.py": code,
             f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: zmqgrid-tests\nRoot-Is-Purelib: true\n"
                                        "Tag: py3-none-any\n"}
    record = []
    with zipfile.ZipFile(path, "w") as z:
        for member, text in files.items():
            data = text.encode()
            z.writestr(zipfile.ZipInfo(member, date_time=(2020, 1, 1, 0, 0, 0)), data)   # same content, same bytes
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{member},sha256={digest},{len(data)}")
        record.append(f"{dist}.dist-info/RECORD,,")
        z.writestr(zipfile.ZipInfo(f"{dist}.dist-info/RECORD", date_time=(2020, 1, 1, 0, 0, 0)),
                   "\n".join(record) + "\n")
    return path


def copy_of(folder: Path, requirements: str, wheels: dict[str, str] | None = None) -> Path:
    """A project copy as the worker's cache holds one: code, wheels under wheels/, a requirements.txt."""
    (folder / "spider").mkdir(parents=True)
    (folder / "spider" / "__init__.py").write_text("")
    for name, code in (wheels or {}).items():
        make_wheel(folder / "wheels", name, "1.0", code)
    (folder / "requirements.txt").write_text(requirements)
    return folder


def run_in(result, code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(result.python), "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})


class SilentIndex:
    """A package index on 127.0.0.1 that accepts connections and never answers: an installer asking it hangs
    until it is killed. `accepted` counts the connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/simple/"
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent_index():
    index = SilentIndex()
    yield index
    index.close()


def processes_under(path: Path) -> list[int]:
    """The pids of processes whose command line names `path` (an installer building there)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(path) in part for part in proc.info["cmdline"] or ()):
            found.append(proc.pid)
    return found


def test_uv_is_there_for_the_tests():
    assert find_uv() is not None, "uv is in the test extras: pip install -e '.[test]'"


def test_a_copy_without_requirements_runs_with_the_given_interpreter(tmp_path):
    (tmp_path / "copy").mkdir()
    result = Environments(tmp_path / "envs").for_copy(tmp_path / "copy")
    assert result.ok and result.python == Path(sys.executable) and result.env_dir is None
    assert result.zmqgrid_importable
    assert result.environ({"PATH": "/usr/bin"}) == {"PATH": "/usr/bin"}
    assert not (tmp_path / "envs").exists()   # nothing built, nothing written


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_an_env_is_built_offline_from_a_wheel_shipped_in_the_project_and_sees_only_its_packages(tmp_path, installer):
    # Given a project whose requirements.txt names a wheel inside it by relative path
    copy = copy_of(tmp_path / "v1", "./wheels/zgdemo-1.0-py3-none-any.whl\n", {"zgdemo": "VALUE = 'from the wheel'\n"})
    # When its environment is built
    result = Environments(tmp_path / "envs", installer=installer, install_args=OFFLINE).for_copy(copy)
    # Then the project's package imports with the env's interpreter, which is inside the env
    assert result.ok, result.error_text()
    assert result.built and result.env_dir is not None and result.python == env_python(result.env_dir)
    assert result.env_dir.parent == tmp_path / "envs" / result.key
    assert (result.env_dir.parent / "current").read_text() == result.env_dir.name
    done = run_in(result, "import zgdemo, zmqgrid.worker.pypool, zmqgrid; print(zgdemo.VALUE); "
                          "print(zmqgrid.__file__)", tmp_path)
    assert done.returncode == 0, done.stderr
    value, zmqgrid_file = done.stdout.splitlines()
    assert value == "from the wheel"
    # zmqgrid is the worker's own (a pool child must speak its worker's protocol), reached through the finder
    import zmqgrid
    assert zmqgrid_file == zmqgrid.__file__ and result.zmqgrid_importable
    assert any(p.endswith("site-packages") and p.startswith(str(result.env_dir)) for p in result.sys_path)
    # and the worker's other packages are not there: click is the worker's, not the project's
    leaked = run_in(result, "import click", tmp_path)
    assert leaked.returncode != 0 and "No module named 'click'" in leaked.stderr
    # a shell task gets the env activated
    env = result.environ({"PATH": "/usr/bin", "PYTHONHOME": "/x"})
    assert env["VIRTUAL_ENV"] == str(result.env_dir) and "PYTHONHOME" not in env
    assert env["PATH"].split(os.pathsep) == [str(scripts_dir(result.env_dir)), "/usr/bin"]
    shell = subprocess.run("python -c 'import zgdemo, sys; print(sys.prefix)'", shell=True, env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert shell.stdout.strip() == str(result.env_dir), shell.stderr


def _spawned_child(queue, sys_path):
    import sys as child_sys
    child_sys.path[:] = sys_path
    import zgdemo
    import zmqgrid.worker.pypool
    queue.put((child_sys.prefix, zgdemo.V, zmqgrid.worker.pypool.__file__))


def test_a_spawned_pool_child_runs_in_the_env_when_handed_its_sys_path(tmp_path):
    # multiprocessing's spawn gives a child its parent's sys.path: a pool child started from the env's interpreter
    # must put the env's own (EnvResult.sys_path) back before it imports the project's packages
    copy = copy_of(tmp_path / "v1", "./wheels/zgdemo-1.0-py3-none-any.whl\n", {"zgdemo": "V = 'env'\n"})
    result = Environments(tmp_path / "envs", install_args=OFFLINE).for_copy(copy)
    assert result.ok, result.error_text()
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")
    ctx.set_executable(str(result.python))   # process-wide in multiprocessing: put back below
    try:
        queue = ctx.Queue()
        child = ctx.Process(target=_spawned_child, args=(queue, list(result.sys_path)))
        child.start()
        prefix, value, pypool = queue.get(timeout=60)
        child.join(timeout=30)
    finally:
        ctx.set_executable(sys.executable)
    import zmqgrid.worker.pypool
    assert (prefix, value, pypool) == (str(result.env_dir), "env", zmqgrid.worker.pypool.__file__)


def test_versions_with_the_same_requirements_share_one_env_and_other_requirements_get_their_own(tmp_path):
    envs = Environments(tmp_path / "envs", install_args=OFFLINE)
    first = envs.for_copy(copy_of(tmp_path / "v1", "./wheels/zgdemo-1.0-py3-none-any.whl\n", {"zgdemo": "V = 1\n"}))
    assert first.ok and first.built, first.error_text()
    # another version of the project (other code, the same requirements and wheel): the same env, not built again
    second_copy = copy_of(tmp_path / "v2", "./wheels/zgdemo-1.0-py3-none-any.whl\n", {"zgdemo": "V = 1\n"})
    (second_copy / "spider" / "crawl.py").write_text("def run(): pass\n")
    second = envs.for_copy(second_copy)
    assert second.ok and not second.built and second.env_dir == first.env_dir
    # a worker started anew (another Environments on the same folder) finds it too
    again = Environments(tmp_path / "envs", install_args=OFFLINE).for_copy(second_copy)
    assert again.ok and not again.built and again.env_dir == first.env_dir and again.zmqgrid_importable
    # the same wheel name rebuilt with other content is other requirements: its own env
    third = envs.for_copy(copy_of(tmp_path / "v3", "./wheels/zgdemo-1.0-py3-none-any.whl\n", {"zgdemo": "V = 3\n"}))
    assert third.ok and third.built and third.key != first.key
    assert run_in(third, "import zgdemo; print(zgdemo.V)", tmp_path).stdout.strip() == "3"
    assert run_in(first, "import zgdemo; print(zgdemo.V)", tmp_path).stdout.strip() == "1"
    assert sorted(p.name for p in (tmp_path / "envs").iterdir()) == sorted([first.key, third.key])


def test_concurrent_callers_of_one_env_wait_for_the_one_build(tmp_path):
    copy = copy_of(tmp_path / "v1", "./wheels/zgdemo-1.0-py3-none-any.whl\n", {"zgdemo": "V = 1\n"})
    envs = [Environments(tmp_path / "envs", install_args=OFFLINE) for _ in range(3)]   # as three workers would
    results = [None] * 3
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, envs[i].for_copy(copy))) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=100)
    assert all(r is not None and r.ok for r in results), results
    assert [r.built for r in results].count(True) == 1
    assert len({r.env_dir for r in results}) == 1
    assert [p.name for p in results[0].env_dir.parent.glob("build-*")] == ["build-1"]


def test_a_failed_build_says_why_with_the_installers_last_lines_and_is_not_retried_until_a_rebuild(tmp_path):
    # Given requirements the index settings cannot satisfy: zgdemo from a links folder that is empty for now
    links = tmp_path / "links"
    links.mkdir()
    copy = copy_of(tmp_path / "v1", "zgdemo==1.0\n")
    envs = Environments(tmp_path / "envs", install_args=("--no-index", "--find-links", str(links)))
    # When its environment is built
    failed = envs.for_copy(copy)
    # Then it fails, naming the step and showing what the installer said about the requirement
    assert not failed.ok and not failed.remembered
    assert failed.reason == "uv pip install exited with code 1"
    assert "zgdemo" in failed.output and len(failed.output.splitlines()) <= 20
    folder = tmp_path / "envs" / failed.key
    assert not (folder / "current").exists() and list(folder.glob("build-*")) == []
    # and it is remembered: asked again (even by a worker started anew), it is not built again
    make_wheel(links, "zgdemo", "1.0", "V = 1\n")   # the index would now satisfy it
    (folder / "build.log").unlink()
    for again in (envs.for_copy(copy), Environments(tmp_path / "envs").for_copy(copy)):
        assert not again.ok and again.remembered and again.reason == failed.reason and again.output == failed.output
    assert not (folder / "build.log").exists()
    # until a rebuild is asked for
    rebuilt = envs.for_copy(copy, rebuild=True)
    assert rebuilt.ok and rebuilt.built, rebuilt.error_text()
    assert not (folder / "failed.json").exists()


def test_a_new_version_with_the_same_requirements_tries_a_failed_build_again(tmp_path):
    links = tmp_path / "links"
    links.mkdir()
    envs = Environments(tmp_path / "envs", install_args=("--no-index", "--find-links", str(links)))
    failed = envs.for_copy(copy_of(tmp_path / "v1", "zgdemo==1.0\n"))
    assert not failed.ok
    make_wheel(links, "zgdemo", "1.0", "V = 1\n")
    pushed = envs.for_copy(copy_of(tmp_path / "v2", "zgdemo==1.0\n"))   # a new push: another copy
    assert pushed.ok and pushed.built and pushed.key == failed.key, pushed.error_text()


def test_a_build_past_its_time_is_killed_with_its_installer_and_never_used(tmp_path, silent_index):
    # Given requirements that ask an index that never answers (on 127.0.0.1)
    copy = copy_of(tmp_path / "v1", f"--index-url {silent_index.url}\nzgslow==1.0\n")
    envs = Environments(tmp_path / "envs", timeout_s=3.0)
    # When the build runs past its time
    result = envs.for_copy(copy)
    # Then it fails saying so, and no installer process is left
    assert not result.ok and "took longer than its 3 s; uv pip install was killed" in result.reason
    assert silent_index.accepted   # it did reach the index, and waited on it
    folder = tmp_path / "envs" / result.key
    wait_until(lambda: not processes_under(folder), describe="no process left building in the env folder")
    assert not (folder / "current").exists() and list(folder.glob("build-*")) == []


def start_stuck_builder(tmp_path: Path, index: SilentIndex) -> tuple[subprocess.Popen, Path, Path]:
    """A worker process building an env, stuck in its install step (an index that never answers): the builder,
    the copy and the key's folder."""
    copy = copy_of(tmp_path / "v1", "zgdemo==1.0\n")
    root = tmp_path / "envs"
    code = ("import sys; from pathlib import Path; from zmqgrid.projects.envs import Environments; "
            "Environments(Path(sys.argv[1]), install_args=('--index-url', sys.argv[3])).for_copy(Path(sys.argv[2]))")
    builder = subprocess.Popen([sys.executable, "-c", code, str(root), str(copy), index.url],
                               cwd=Path(__file__).parents[2])
    try:
        wait_until(lambda: index.accepted, timeout_s=60, describe="the installer asking the index")
    except BaseException:
        for proc in psutil.Process(builder.pid).children(recursive=True):
            proc.kill()
        sigkill(builder)
        raise
    return builder, copy, next(root.iterdir())


def sigkill(builder: subprocess.Popen) -> None:
    os.kill(builder.pid, signal.SIGKILL)
    builder.wait(timeout=10)


def test_a_builder_killed_mid_build_leaves_nothing_used_and_the_next_build_succeeds(tmp_path, silent_index):
    # Given a worker building an env, stuck in its install step
    links = tmp_path / "links"
    make_wheel(links, "zgdemo", "1.0", "V = 1\n")
    builder, copy, folder = start_stuck_builder(tmp_path, silent_index)
    try:
        assert list(folder.glob("build-*")) == [folder / "build-1"]
        installer = psutil.Process(json.loads((folder / "installer.json").read_text())["pid"])
        assert installer.ppid() == builder.pid
        # (a worker starting beside a live builder leaves its installer alone)
        assert Environments(tmp_path / "envs").end_leftover_installers() == 0 and not is_gone(installer)
        # When the worker is SIGKILLed (its installer, in a session of its own, outlives it)
        sigkill(builder)
    finally:
        if builder.poll() is None:
            sigkill(builder)
    assert not is_gone(installer)
    # Then its half build is never used
    assert not (folder / "current").exists() and (folder / "build-1").is_dir()
    envs = Environments(tmp_path / "envs", install_args=("--no-index", "--find-links", str(links)))
    assert envs.state(copy) == "absent"
    # and the next build (same requirements, an index that answers) ends the installer left behind, removes the
    # half build and succeeds
    try:
        result = envs.for_copy(copy)
        assert is_gone(installer)
    finally:
        if not is_gone(installer):   # leave no process behind when the above fails
            installer.kill()
    assert result.ok and result.built and result.env_dir == folder / "build-2", result.error_text()
    assert not (folder / "build-1").exists() and not (folder / "installer.json").exists()
    assert run_in(result, "import zgdemo; print(zgdemo.V)", tmp_path).stdout.strip() == "1"


def test_a_worker_starting_ends_the_installer_a_killed_builder_left(tmp_path, silent_index):
    builder, copy, folder = start_stuck_builder(tmp_path, silent_index)
    installer = psutil.Process(json.loads((folder / "installer.json").read_text())["pid"])
    sigkill(builder)
    try:
        assert Environments(tmp_path / "envs").end_leftover_installers() == 1
        assert is_gone(installer) and not (folder / "installer.json").exists()
    finally:
        if not is_gone(installer):
            installer.kill()
    assert Environments(tmp_path / "envs").end_leftover_installers() == 0


def test_a_rebuild_of_a_ready_env_publishes_a_new_build_beside_the_one_in_use(tmp_path):
    copy = copy_of(tmp_path / "v1", "./wheels/zgdemo-1.0-py3-none-any.whl\n", {"zgdemo": "V = 1\n"})
    envs = Environments(tmp_path / "envs", install_args=OFFLINE)
    first = envs.for_copy(copy)
    second = envs.for_copy(copy, rebuild=True)
    assert first.ok and second.ok and second.built and second.env_dir != first.env_dir
    assert first.env_dir.is_dir()   # a task still running in it keeps its files
    assert envs.for_copy(copy).env_dir == second.env_dir
    third = envs.for_copy(copy, rebuild=True)
    assert not first.env_dir.exists() and second.env_dir.is_dir() and third.env_dir.name == "build-3"
    # a rebuild that fails leaves the ready build in use
    broken = Environments(tmp_path / "envs", install_args=("--no-index", "--no-binary", ":all:"))
    failed = broken.for_copy(copy, rebuild=True)
    assert not failed.ok and failed.reason.startswith("uv pip install exited with code")
    assert broken.for_copy(copy).env_dir == third.env_dir and broken.state(copy) == "ready"


def test_a_damaged_current_pointer_is_no_build(tmp_path):
    copy = copy_of(tmp_path / "v1", "./wheels/zgdemo-1.0-py3-none-any.whl\n", {"zgdemo": "V = 1\n"})
    first = Environments(tmp_path / "envs", install_args=OFFLINE).for_copy(copy)
    (first.env_dir.parent / "current").write_text("")   # a crash before the pointer's bytes reached the disk
    result = Environments(tmp_path / "envs", install_args=OFFLINE).for_copy(copy)
    assert result.ok and result.built and result.env_dir.name == "build-2"


def test_the_env_follows_the_worker_when_zmqgrid_moves(tmp_path):
    copy = copy_of(tmp_path / "v1", "./wheels/zgdemo-1.0-py3-none-any.whl\n", {"zgdemo": "V = 1\n"})
    first = Environments(tmp_path / "envs", install_args=OFFLINE).for_copy(copy)
    finder = next(first.env_dir.glob(f"lib*/*/site-packages/{FINDER_MODULE}.py"))
    finder.write_text(finder.read_text().replace(str(Path(__file__).parents[2]), "/nowhere"))
    assert run_in(first, "import zmqgrid", tmp_path).returncode != 0
    # a worker starting on it writes where its zmqgrid is now
    again = Environments(tmp_path / "envs", install_args=OFFLINE).for_copy(copy)
    assert again.zmqgrid_importable and run_in(again, "import zmqgrid.worker.pypool", tmp_path).returncode == 0


def test_the_same_interpreter_by_another_path_shares_the_envs(tmp_path):
    copy = copy_of(tmp_path / "v1", "./wheels/zgdemo-1.0-py3-none-any.whl\n", {"zgdemo": "V = 1\n"})
    first = Environments(tmp_path / "envs", install_args=OFFLINE).for_copy(copy)
    link = tmp_path / "python-link"
    link.symlink_to(sys.executable)   # asked as another interpreter would be: it reports its own real path
    envs = Environments(tmp_path / "envs", python=str(link), install_args=OFFLINE)
    assert envs.state(copy) == "ready"
    again = envs.for_copy(copy)
    assert again.ok and not again.built and again.env_dir == first.env_dir
    plain = envs.for_copy(tmp_path / "no-requirements")
    # no env: the interpreter itself, asked for its own path
    assert plain.ok and plain.python == link and plain.env_dir is None
    assert any(p.endswith("site-packages") for p in plain.sys_path)


def test_an_interpreter_that_cannot_run_is_one_line(tmp_path):
    copy = copy_of(tmp_path / "v1", "zgdemo\n")
    result = Environments(tmp_path / "envs", python=str(tmp_path / "no-python")).for_copy(copy)
    assert not result.ok and result.reason.startswith(f"the interpreter {tmp_path / 'no-python'} cannot be run")


def test_the_key_covers_requirements_and_the_local_files_they_name_only(tmp_path):
    copy = copy_of(tmp_path / "v1", "-r base.txt\n./wheels/zgdemo-1.0-py3-none-any.whl  # ours\n./src/pkg\n"
                                    "requests==2.31 ; python_version >= '3.8'\n", {"zgdemo": "V = 1\n"})
    (copy / "base.txt").write_text("--constraint=pins.txt\n")
    (copy / "pins.txt").write_text("requests<3\n")
    (copy / "src" / "pkg").mkdir(parents=True)
    (copy / "src" / "pkg" / "setup.py").write_text("")
    key = requirements_key(copy)
    assert len(key) == 16 and int(key, 16) >= 0
    (copy / "spider" / "crawl.py").write_text("changed = True\n")   # code the requirements do not name
    (copy / "src" / "pkg" / "__pycache__").mkdir()
    (copy / "src" / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert requirements_key(copy) == key
    for named, content in (("pins.txt", "requests<2.32\n"), ("src/pkg/setup.py", "# edited\n"),
                           ("wheels/zgdemo-1.0-py3-none-any.whl", "not the same wheel")):
        before = requirements_key(copy)
        (copy / named).write_text(content)
        assert requirements_key(copy) != before, named
    # a path out of the copy is named, not read
    (copy / "requirements.txt").write_text("../outside.whl\n")
    before = requirements_key(copy)
    (tmp_path / "outside.whl").write_text("x")
    assert requirements_key(copy) == before


def test_the_installers_last_lines_are_bounded_one_line_each_and_hide_credentials(tmp_path):
    log = tmp_path / "build.log"
    lines = [f"line {i}" for i in range(100)] + [
        "Looking in indexes: https://alice:s3cret@pypi.example/simple",
        "ERROR: \x1b[31mboom\x1b[0m " + "x" * 1000, "", "   "]
    log.write_text("\n".join(lines))
    tail = tail_of(log).splitlines()
    assert len(tail) == 20 and tail[0] == "line 82"
    assert tail[-2] == "Looking in indexes: https://****@pypi.example/simple"
    assert tail[-1].startswith("ERROR: \\x1b[31mboom") and len(tail[-1]) <= 300 and tail[-1].endswith("…")
    assert tail_of(tmp_path / "missing.log") == ""
    assert json.dumps(tail)   # plain text, as a task's error carries it
