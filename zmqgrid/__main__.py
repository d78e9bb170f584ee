"""python -m zmqgrid: the same command line as main.py."""
import os
import sys

# A standalone master starts its workers with this package's root first on PYTHONPATH, so that they import this
# zmqgrid, installed or not, and hands over the user's own PYTHONPATH here. The interpreter has already read
# PYTHONPATH into sys.path: restoring it now keeps the root out of the environment of every task the worker runs.
_user_path = os.environ.pop("ZMQGRID_USER_PYTHONPATH", None)
if _user_path is not None:
    if _user_path:
        os.environ["PYTHONPATH"] = _user_path
    else:
        os.environ.pop("PYTHONPATH", None)

from .cli import main  # noqa: E402  (after the environment is settled: nothing below may read it earlier)

sys.exit(main())
