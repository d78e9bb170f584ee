"""The Python API is importable from the package itself (README, "From Python"), without slowing the modules that
do not need it."""
from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest

import zmqgrid
from zmqgrid import errors

from .helpers import REPO

pytestmark = pytest.mark.timeout(30)


def test_client_build_spec_every_error_and_the_version_come_from_the_package():
    from zmqgrid import Client, MasterUnavailable, TaskNotFound, ZmqgridError, build_spec
    from zmqgrid.client import Client as client_module_client
    assert Client is client_module_client and build_spec(shell="true")["kind"] == "shell"
    assert issubclass(TaskNotFound, ZmqgridError) and issubclass(MasterUnavailable, ZmqgridError)
    raised = {name for name, value in vars(errors).items()
              if isinstance(value, type) and issubclass(value, errors.ZmqgridError)}
    assert raised <= set(zmqgrid.__all__), raised - set(zmqgrid.__all__)
    assert all(getattr(zmqgrid, name) is getattr(errors, name) for name in raised)
    assert zmqgrid.__version__ == version("zmqgrid")
    with pytest.raises(AttributeError, match="no attribute 'Clinet'"):
        zmqgrid.Clinet   # noqa: B018


def test_the_readme_imports_the_api_from_the_package():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert "from zmqgrid import Client, build_spec" in text and "from zmqgrid.client import" not in text


def test_importing_a_module_of_the_package_does_not_import_the_client():
    # A worker's python pool child imports zmqgrid's modules: the client's imports (zmq, key files) are not its
    code = "import sys, zmqgrid.model, zmqgrid.protocol; print(sorted(m for m in ('zmq', 'zmqgrid.client') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=20)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done
