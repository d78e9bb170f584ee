"""The frame every benchmark tool runs in: bounded by `--deadline`, ended cleanly by Ctrl-C or SIGTERM, one line for
any error, every child stopped by its PID, and the temporary folder kept only when it helps."""
from __future__ import annotations

import argparse
import shutil
import signal
from pathlib import Path
from typing import Callable

from .processes import stop_all
from .report import progress


class DeadlineExceeded(Exception):
    pass


def guarded(a: argparse.Namespace, tmp: Path, body: Callable[[], None], cleanup: Callable[[], None] = lambda: None,
            kept: str = "logs and ledger") -> int:
    """Run body(): `--deadline` ends it (exit 2), so do Ctrl-C and SIGTERM (130); any other error is reported in one
    line (1). Then `cleanup()` and everything started is stopped by PID, and `tmp` is kept on failure or `--keep`,
    else removed. Returns the exit code."""
    def on_alarm(*_: object) -> None:
        raise DeadlineExceeded(f"the benchmark did not finish within --deadline {a.deadline:g}s")

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(max(1, int(a.deadline)))
    code = 0
    try:
        body()
    except DeadlineExceeded as e:
        progress(f"error: {e}")
        code = 2
    except KeyboardInterrupt:
        progress("interrupted")
        code = 130
    except Exception as e:  # report, clean up, fail
        progress(f"error: {type(e).__name__}: {e}")
        code = 1
    finally:
        signal.alarm(0)
        cleanup()
        stop_all()
        if a.keep or code:
            progress(f"kept {tmp} ({kept})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return code
