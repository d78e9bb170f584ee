"""Reading a config file: one JSON object of settings; every way it can be unreadable is a ConfigError naming it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ConfigError


def read_config_file(path: Path, label: str) -> dict[str, Any]:
    """The settings in the JSON file `path` (called `label` in errors), keys not checked yet."""
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) < len(keys):  # json.loads would silently keep the last one
            key = next(k for k in keys if keys.count(k) > 1)
            raise ConfigError(f'{label}: key "{key}" appears more than once', "keep one of them")
        return dict(pairs)

    try:
        # utf-8-sig: Windows editors save a byte-order mark that json.loads rejects
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{label}: config file not found", "check the path given to --config") from None
    except (OSError, UnicodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise ConfigError(f"{label}: cannot read config file ({reason})", "pass a readable UTF-8 JSON file") from None
    try:
        data = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{label}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})",
                          "fix the file: double-quoted keys and strings, no comments, no trailing commas") from None
    except RecursionError:   # json.loads recurses once per level: thousands of [ or { exhaust the stack
        raise ConfigError(f"{label}: nested too deeply to read", "a config file is one JSON object of plain "
                          "settings (numbers, strings, true/false, lists of strings)") from None
    if not isinstance(data, dict):
        kind = {list: "an array", str: "a string"}.get(type(data), "a single value")
        raise ConfigError(f"{label}: expected a JSON object of settings, got {kind}", 'write {"key": value, ...}')
    return data
