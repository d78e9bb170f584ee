"""Fixtures: every one builds real parts (processes, sockets, SQLite files) and stops what it started."""
from __future__ import annotations

import compileall
import os
import shutil
import sys
from pathlib import Path

import pytest

from .helpers import REPO, SUITE_KEYS, Harness


def pytest_configure(config):
    """Compile the package's and the tests' bytecode once, before any process starts: the suite starts about a
    thousand Python processes (masters, workers, their pool children, CLI runs), each importing the package, and
    where PYTHONDONTWRITEBYTECODE is set none of them keeps what it compiled, so each would compile every module
    again (about 0.15 s of CPU a process). They read bytecode that exists; the caches are git-ignored."""
    if sys.dont_write_bytecode and "PYTEST_XDIST_WORKER" not in os.environ:   # once, in the controlling process
        for package in ("zmqgrid", "tests"):
            compileall.compile_dir(REPO / package, quiet=1)   # writes even so; a read-only tree just keeps none


@pytest.fixture(scope="session", autouse=True)
def _suite_keys():
    yield
    shutil.rmtree(SUITE_KEYS, ignore_errors=True)   # made only by the secured suite (TEST_WITH_CURVE=1)


def pytest_collection_modifyitems(config, items):
    """TEST_WITH_CURVE=1 runs every cluster secured; tests that speak raw frames without keys cannot take part."""
    if os.environ.get("TEST_WITH_CURVE") == "1":
        skip = pytest.mark.skip(reason="raw sockets without keys: runs open only")
        for item in items:
            if "open_wire" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def harness(tmp_path: Path):
    h = Harness(tmp_path)
    yield h
    h.stop()


def start_cluster(harness: Harness) -> Harness:
    harness.start_master()
    harness.start_worker("w1")
    harness.start_worker("w2")
    harness.wait_online(harness.client(), "w1", "w2")
    return harness


@pytest.fixture
def cluster(harness: Harness):
    """A running master and two workers (w1, w2), both online."""
    return start_cluster(harness)


@pytest.fixture
def secured_harness(tmp_path: Path):
    """A harness with CURVE on (keys for the master, an admin client and workers w1..w4)."""
    h = Harness(tmp_path, secured=True)
    yield h
    h.stop()


@pytest.fixture(params=["open", "curve"])
def any_cluster(request, tmp_path: Path):
    """The `cluster` of two workers, run open and again with CURVE on (cases that must hold both ways)."""
    h = Harness(tmp_path, secured=request.param == "curve")
    try:
        yield start_cluster(h)
    finally:
        h.stop()


@pytest.fixture(scope="module")
def shared_cluster(request, tmp_path_factory):
    """The `cluster` of two workers, one for every test of the module that takes it: for tests that kill, pause and
    reconfigure nothing and read only the tasks they submitted (the ledger holds the module's other tasks too)."""
    h = Harness(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    try:
        yield start_cluster(h)
    finally:
        h.stop()


@pytest.fixture(scope="module", params=["open", "curve"])
def shared_any_cluster(request, tmp_path_factory):
    """`any_cluster` shared as `shared_cluster` is (the open one is `shared_cluster` itself)."""
    if request.param == "open":
        yield request.getfixturevalue("shared_cluster")
        return
    h = Harness(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1] + "-curve"), secured=True)
    try:
        yield start_cluster(h)
    finally:
        h.stop()
