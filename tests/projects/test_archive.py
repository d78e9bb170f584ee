"""The normalised archive (same files, same version) and the checks every archive passes before it is kept or
unpacked: no path out of the root, no link, device or FIFO, no more files than allowed."""
from __future__ import annotations

import io
import os
import tarfile

import pytest

from zmqgrid.errors import UsageError
from zmqgrid.projects.archive import ArchiveRefused, check_archive
from zmqgrid.projects.pack import collect, pack


def project(root, files: dict[str, str]):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def tar_of(*members: tarfile.TarInfo, data: bytes = b"x") -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
    out.seek(0)
    return out


def member(name: str, kind: bytes = tarfile.REGTYPE, **attrs) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, 1 if kind == tarfile.REGTYPE else 0
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def test_the_same_files_give_the_same_version_whatever_their_times_and_what_is_ignored(tmp_path):
    a = project(tmp_path / "a", {"spider/__init__.py": "", "spider/crawl.py": "def run(): pass\n",
                                 "data/urls.txt": "https://example.com\n"})
    first = pack(a)
    os.utime(a / "spider" / "crawl.py", (1, 1))
    project(a, {".git/HEAD": "ref", "spider/__pycache__/crawl.cpython-311.pyc": "x", "old.pyc": "x",
                "venv/pyvenv.cfg": "home = /usr", "venv/lib/site.py": "", "secrets/token": "t",
                "notes.log": "l", ".zmqgridignore": "# local only\nsecrets/\n*.log\n"})
    second = pack(a)
    b = project(tmp_path / "b", {"data/urls.txt": "https://example.com\n", "spider/crawl.py": "def run(): pass\n",
                                 "spider/__init__.py": ""})
    third = pack(b)
    try:
        assert first.version == third.version and len(first.version) == 64
        # .zmqgridignore itself is part of the project: the version moves, the ignored files are not in it
        assert second.version != first.version
        with tarfile.open(second.path) as tar:
            names = tar.getnames()
        assert names == [".zmqgridignore", "data/urls.txt", "spider/__init__.py", "spider/crawl.py"]
    finally:
        for packed in (first, second, third):
            packed.path.unlink()


def test_a_changed_file_or_executable_bit_gives_a_new_version(tmp_path):
    a = project(tmp_path / "a", {"run.sh": "echo hi\n"})
    versions = [pack(a)]
    (a / "run.sh").chmod(0o755)
    versions.append(pack(a))
    (a / "run.sh").write_text("echo ho\n")
    versions.append(pack(a))
    try:
        assert len({p.version for p in versions}) == 3
        with tarfile.open(versions[1].path) as tar:
            assert tar.getmember("run.sh").mode == 0o755
    finally:
        for packed in versions:
            packed.path.unlink()


def test_a_link_inside_the_folder_is_packed_as_what_it_points_to_and_one_out_of_it_is_refused(tmp_path):
    a = project(tmp_path / "a", {"real/x.txt": "x"})
    (a / "alias").symlink_to("real")
    assert [rel for rel, _ in collect(a)] == ["alias/x.txt", "real/x.txt"]
    (a / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(UsageError, match="is a link out of the project folder"):
        collect(a)
    (a / "passwd").unlink()
    (a / "real" / "loop").symlink_to("..")
    with pytest.raises(UsageError, match="links back to a folder that holds it"):
        collect(a)


def test_a_missing_file_a_file_or_an_empty_folder_is_refused_with_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    project(tmp_path / "ignored", {"__pycache__/a.pyc": "x"})
    (tmp_path / "file.py").write_text("")
    for folder, says in (("nope", "does not exist"), ("file.py", "is not a folder"),
                         ("empty", "has nothing to pack"), ("ignored", "has nothing to pack")):
        with pytest.raises(UsageError, match=says) as refused:
            collect(tmp_path / folder)
        assert "\n" not in str(refused.value)


@pytest.mark.parametrize("bad, rule", [
    (member("../evil.py"), "'..' in its path"),
    (member("spider/../../evil.py"), "'..' in its path"),
    (member("/etc/cron.d/evil"), "an absolute path"),
    (member("C:/evil"), "an absolute path"),
    (member("a\\..\\evil"), "an absolute path"),
    (member("./a/./b"), "an empty or '.' part"),
    (member("a\x1b[2Jb"), "a control character"),
    (member("link", tarfile.SYMTYPE, linkname="/etc/passwd"), "a symbolic link"),
    (member("inside", tarfile.SYMTYPE, linkname="ok.py"), "a symbolic link"),
    (member("hard", tarfile.LNKTYPE, linkname="ok.py"), "a hard link"),
    (member("dev", tarfile.CHRTYPE, devmajor=1, devminor=3), "a character device"),
    (member("blk", tarfile.BLKTYPE), "a block device"),
    (member("fifo", tarfile.FIFOTYPE), "a FIFO"),
    (member("suid", mode=0o4755), "a setuid, setgid or sticky mode"),
    (member("ok.py"), "a name that is there twice"),
])
def test_an_archive_member_out_of_the_rules_refuses_the_whole_archive(bad, rule):
    with pytest.raises(ArchiveRefused, match=rule.replace("(", r"\(")):
        check_archive(tar_of(member("ok.py"), bad), max_files=10)


def test_an_archive_of_allowed_members_is_counted_and_one_with_too_many_files_refused():
    archive = tar_of(member("a.py"), member("pkg", tarfile.DIRTYPE), member("pkg/b.py"))
    assert check_archive(archive, max_files=2) == 2
    archive.seek(0)
    with pytest.raises(ArchiveRefused, match=r"more files than max_project_files \(1\) allows"):
        check_archive(archive, max_files=1)
    with pytest.raises(ArchiveRefused, match="not an uncompressed tar archive"):
        check_archive(io.BytesIO(b"\x1f\x8b" + b"\x00" * 2000), max_files=1)
