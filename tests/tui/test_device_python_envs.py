"""The dashboard's device detail lists a worker's python envs (docs/architecture.md, "Worker: interpreters per
worker"): a line each, with the version its interpreter answered and its path, peer text escaped."""
from __future__ import annotations

import time

from zmqgrid.tui.screens.detail import device_fields

from .data import device


def test_the_device_detail_has_a_line_per_python_env_with_its_version_and_escaped_text():
    row = device("crawler-01")
    row["python_envs"] = [{"name": "py39", "version": "3.9.18", "executable": "/opt/py39/bin/python"},
                          {"name": "evil", "version": "3.11\x1b[31m", "executable": "/x\n/y"}]
    fields = dict(device_fields(row, time.time()))
    assert fields["python env py39"] == "Python 3.9.18 · /opt/py39/bin/python"
    evil = fields["python env evil"]
    assert "\x1b" not in evil and "\n" not in evil and evil.startswith("Python 3.11")


def test_a_device_without_python_envs_has_no_such_line():
    assert not [label for label, _ in device_fields(device("crawler-01"), time.time()) if label.startswith("python env")]
