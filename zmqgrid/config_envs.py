"""The worker setting `python_envs`: names of the worker's other interpreters and their paths (docs/architecture.md,
"Worker: interpreters per worker"), checked at load so a bad entry is one line, not a failure at the first task."""
from __future__ import annotations

import json
import os
import re
from typing import Any

from .errors import ConfigError
from .model import PYTHON_ENV_PATTERN

MAX_PYTHON_ENVS = 16   # Register.python_envs takes 16
_NAME = re.compile(PYTHON_ENV_PATTERN)
FORMS = ('a JSON object of names to interpreter paths, as {"py39": "/opt/py39/bin/python"} '
         '(ZMQGRID_PYTHON_ENVS: that object, or py39=/opt/py39/bin/python,scrapy=/srv/venvs/scrapy/bin/python)')


def parse_text(text: str) -> Any:
    """`python_envs` as the environment gives it: a JSON object, or NAME=PATH pairs separated by commas."""
    text = text.strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except ValueError:
            return text   # refused below, shown as given
    pairs = [part.strip() for part in text.split(",") if part.strip()]
    if not all("=" in pair for pair in pairs):
        return text
    return {name.strip(): path.strip() for name, _, path in (pair.partition("=") for pair in pairs)}


def check_python_envs(value: Any, source: str, show: Any) -> dict[str, str]:
    """The entries of `python_envs`, each name matched and each path an existing executable; else a ConfigError
    naming the entry and what is allowed."""
    if not isinstance(value, dict) or len(value) > MAX_PYTHON_ENVS:
        raise ConfigError(f"{source}: python_envs = {show(value)} is not allowed",
                          f"expected {FORMS}, at most {MAX_PYTHON_ENVS} entries")
    for name, path in value.items():
        if not _NAME.fullmatch(name):
            raise ConfigError(f"{source}: python_envs name {show(name)} is not allowed",
                              "expected 1-48 of A-Z a-z 0-9 _ . - starting with a letter or digit")
        if not isinstance(path, str) or not os.path.isabs(path):
            raise ConfigError(f"{source}: python_envs {name} = {show(path)} is not allowed",
                              "expected the absolute path of a Python interpreter, as /opt/py39/bin/python")
        if not os.path.isfile(path) or not os.access(path, os.X_OK):
            raise ConfigError(f"{source}: python_envs {name} = {show(path)} is not an executable file",
                              "give the path of an installed Python interpreter (its bin/python)")
    return dict(value)
