"""What a worker agrees to run: its allow-lists of task kinds (`allowed_kinds`) and of python modules
(`allowed_modules`), and whether it runs projects (`allow_projects`). A task outside them is never started: it ends
at once as failed, error type Forbidden."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Callable

from ..config import Config
from ..model import TASK_KINDS
from ..projects.messages import RUNS_PROJECTS_TAG
from ..protocol import NO_KIND_TAG
from .pyenvs import PythonEnv, advertised
from .results import AttemptResult

logger = logging.getLogger(__name__)


def runs_projects(config: Config) -> bool:
    """Inline python calls run in the worker's own process, which cannot take a copy's folder and path for one call."""
    return config.allow_projects and config.python_pool != "inline"


def advertised_tags(config: Config, envs: Mapping[str, PythonEnv] | None = None) -> list[str]:
    """The worker's tags plus one `no-kind:<kind>` per kind it refuses, so the master never sends it one,
    `runs projects` when it runs them (the master sends a task of a project only to a worker that says so), and
    `python env:NAME` per python env that runs."""
    return [*config.tags, *(NO_KIND_TAG + kind for kind in TASK_KINDS if kind not in config.allowed_kinds),
            *([RUNS_PROJECTS_TAG] if runs_projects(config) else []), *(env.tag for env in advertised(envs or {}))]


def refusal(task: dict, config: Config, envs: Mapping[str, PythonEnv] | None = None) -> str | None:
    """Why this worker refuses `task`, naming the kind or module and the setting; None when it may run it."""
    kind = task.get("kind")
    if kind not in config.allowed_kinds:
        return (f"this worker does not run {kind} tasks: allowed_kinds is {', '.join(config.allowed_kinds)} "
                "(--allow-kind)")
    wanted = task.get("python_env")
    if wanted and not ((env := (envs or {}).get(wanted)) is not None and env.version):
        return f"this worker has no python env {str(wanted)[:48]!r} (its config python_envs, read at its start)"
    if wanted and kind == "python" and config.python_pool == "inline":
        return "this worker runs python calls inline, in its own interpreter (python_pool inline), not in a python env"
    if task.get("project") and not runs_projects(config):
        return ("this worker does not run tasks of projects: " + ("allow_projects is false" if not
                config.allow_projects else "its python_pool is inline"))
    if kind == "python" and config.allowed_modules:
        function = task.get("function")
        module = function.partition(":")[0] if isinstance(function, str) else ""
        if not any(module == prefix or module.startswith(prefix + ".") for prefix in config.allowed_modules):
            return (f"this worker does not run python tasks from module {module!r}: allowed_modules is "
                    f"{', '.join(config.allowed_modules)} (--allow-module)")
    return None


def admit(tasks: list, config: Config, refuse: Callable[[AttemptResult], None],
          envs: Mapping[str, PythonEnv] | None = None) -> list[dict]:
    """The well-formed tasks of a Tasks message that this worker may run; each refused one is passed to
    `refuse` as its final result (failed, Forbidden), without anything being started."""
    runnable = []
    for task in tasks:
        if not (isinstance(task, dict) and "id" in task and "attempt" in task):
            continue
        reason = refusal(task, config, envs)
        if reason is None:
            runnable.append(task)
            continue
        logger.warning("refused task=%s attempt=%s: %s", task["id"], task["attempt"], reason)
        refuse(AttemptResult.refused(task["id"], task["attempt"], reason))
    return runnable
