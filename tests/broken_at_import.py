"""A task module whose import fails with an error that may pass next time (a service not reachable yet)."""
raise RuntimeError("cannot reach the configuration service at import time")


def f() -> None:
    return None
