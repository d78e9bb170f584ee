"""Making a worker's copy of a version from its download (zmqgrid.projects.fetch and cache, on real files): the
download hashes the chunks it writes while they come in order, the copy takes that hash or reads the file for it,
and every member is checked before the first file is written."""
from __future__ import annotations

import hashlib
import io
import itertools
import json
import tarfile

import pytest

from zmqgrid.projects.cache import Damaged, ProjectCache
from zmqgrid.projects.fetch import Download
from zmqgrid.projects.messages import ProjectData, ProjectFetch
from zmqgrid.projects.pack import pack

from .test_push import project


def answer(archive: bytes, version: str, ask: ProjectFetch) -> ProjectData:
    """What the master answers to `ask`: the archive's bytes from its offset."""
    return ProjectData(ask.req_id, version, ask.offset, len(archive), archive[ask.offset:ask.offset + ask.length])


def download(cache: ProjectCache, archive: bytes, version: str, order) -> Download:
    """The whole archive in chunks of 1,000 bytes, each window's answers given in the order `order` picks."""
    asked: list[ProjectFetch] = []
    d = Download(version, cache.part(version), itertools.count(1), asked.append, chunk_bytes=1000)
    d.pump(0.0)
    while not d.done:
        window, asked[:] = list(asked), []
        for ask in order(window):
            d.take(answer(archive, version, ask))
        d.pump(0.0)
    d.close()
    return d


@pytest.fixture
def packed(tmp_path):
    folder = project(tmp_path / "src", {"spider/__init__.py": "", "spider/crawl.py": "def run(): pass\n" * 300,
                                        "data/urls.txt": "https://example.com\n" * 200, "run.sh": "true\n"})
    (folder / "run.sh").chmod(0o755)
    result = pack(folder)
    archive = result.path.read_bytes()
    result.path.unlink()
    return archive, result.version


def test_a_download_answered_in_order_hands_the_copy_the_hash_of_what_it_wrote(tmp_path, packed):
    archive, version = packed
    cache = ProjectCache(tmp_path / "cache", 1 << 30)
    cache.clean()

    d = download(cache, archive, version, order=lambda window: window)

    assert len(archive) > 4 * 1000 and cache.part(version).read_bytes() == archive
    assert d.sha256 == version == hashlib.sha256(archive).hexdigest()
    cache.install(version, d.sha256)
    copy = cache.copy(version)
    assert (copy / "spider" / "crawl.py").read_text() == "def run(): pass\n" * 300
    assert (copy / "run.sh").stat().st_mode & 0o777 == 0o755 and (copy / "data/urls.txt").stat().st_mode & 0o777 == 0o644
    manifest = json.loads((tmp_path / "cache" / f"{version}.manifest").read_text())["files"]
    assert manifest["data/urls.txt"] == [20 * 200, hashlib.sha256(b"https://example.com\n" * 200).hexdigest()]
    cache.verify(version)
    assert not cache.part(version).exists()


def test_a_download_answered_out_of_order_leaves_the_hash_to_the_copy_which_reads_the_file(tmp_path, packed):
    archive, version = packed
    cache = ProjectCache(tmp_path / "cache", 1 << 30)
    cache.clean()

    d = download(cache, archive, version, order=lambda window: list(reversed(window)))

    assert cache.part(version).read_bytes() == archive and d.sha256 is None
    cache.install(version, d.sha256)
    cache.verify(version)
    assert sorted(p.name for p in (cache.copy(version)).iterdir()) == ["data", "run.sh", "spider"]


def test_a_hash_that_is_not_the_version_installs_nothing(tmp_path, packed):
    archive, version = packed
    cache = ProjectCache(tmp_path / "cache", 1 << 30)
    cache.clean()
    cache.part(version).write_bytes(archive)

    with pytest.raises(Damaged, match="does not match its version"):
        cache.install(version, hashlib.sha256(b"other bytes").hexdigest())

    assert list((tmp_path / "cache").iterdir()) == []


def test_every_member_is_checked_before_the_first_file_is_written(tmp_path):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("spider/ok.py", "../evil.py"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"x=1"))
    archive = out.getvalue()
    version = hashlib.sha256(archive).hexdigest()   # the master's archive, true to its version, and malicious
    cache = ProjectCache(tmp_path / "state" / "cache", 1 << 30)
    cache.clean()
    cache.part(version).write_bytes(archive)

    with pytest.raises(Damaged, match=r"'\.\./evil\.py' is refused: '\.\.' in its path"):
        cache.install(version, version)

    assert list((tmp_path / "state" / "cache").iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["cache"]
