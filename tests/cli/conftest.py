"""The command line's tests share, per module, one master and one worker (w1) they speak to through the real CLI."""
from __future__ import annotations

import subprocess

import pytest

from ..helpers import Harness, run_cli


@pytest.fixture(scope="module")
def grid(request, tmp_path_factory):
    """A master and one untagged worker (w1, `GRID_CONCURRENCY` slots of the module, else 4) online, shared by the
    module's tests."""
    harness = Harness(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    try:
        harness.start_master()
        harness.start_worker("w1", concurrency=getattr(request.module, "GRID_CONCURRENCY", 4))
        harness.wait_online(harness.client(), "w1")
        yield harness
    finally:
        harness.stop()


@pytest.fixture
def cli(grid, tmp_path):
    """Run the CLI from a fresh empty directory against the module's master."""
    def run(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
        return run_cli(*args, "--master", grid.url, cwd=tmp_path, timeout_s=timeout_s)
    return run
