"""An alert rule: what it matches and where it sends (docs/architecture.md, Alerts). Checked whole at add, so the
master never keeps a rule it could not deliver."""
from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import UsageError
from ..text import printable
from . import templates

TASK_EVENTS = ("failed", "timed_out", "quarantined")
DEVICE_EVENTS = ("offline", "revoked")
EVENTS = TASK_EVENTS + DEVICE_EVENTS
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,39}$")
TAG_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_PATTERN = 200
MAX_TARGET = 2048


def redact_url(url: str) -> str:
    """`scheme://host[:port]/…`: a chat webhook's token sits in its path or query, so no more is ever shown."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(a URL)"
    host = f"[{host}]" if ":" in host else host
    return printable(f"{parts.scheme}://{host}{port}/…", 120)


@dataclass(frozen=True)
class Rule:
    name: str
    events: frozenset
    tags: frozenset
    pattern: str | None
    kind: str          # webhook | command
    target: str        # the URL or the command line
    template: str      # a template name, or a custom template's JSON text
    created_at: float = 0.0

    def matches(self, event: str, name: str, tags: frozenset | set) -> bool:
        return (event in self.events and self.tags <= tags
                and (self.pattern is None or fnmatch.fnmatchcase(name, self.pattern)))

    def shown_target(self) -> str:
        return redact_url(self.target) if self.kind == "webhook" else printable(self.target, 60)

    def row(self) -> dict:
        """As kept in alert_rules."""
        return {"name": self.name, "events": ",".join(e for e in EVENTS if e in self.events),
                "tags": ",".join(sorted(self.tags)), "pattern": self.pattern, "kind": self.kind,
                "target": self.target, "template": self.template, "created_at": self.created_at}

    def view(self) -> dict:
        """What clients see: never the full webhook URL."""
        row = self.row()
        row["on"] = row.pop("events")
        template = self.template if self.template in templates.NAMES else "custom"
        return dict(row, target=self.shown_target(), template=template)

    @classmethod
    def from_row(cls, row: dict) -> Rule:
        return cls(row["name"], frozenset(filter(None, row["events"].split(","))),
                   frozenset(filter(None, (row["tags"] or "").split(","))), row["pattern"], row["kind"],
                   row["target"], row["template"], row["created_at"] or 0.0)


def _words(value: object, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, str):
        raise UsageError(f"alert: '{field}' must be a comma-separated text")
    return [w.strip() for w in value.split(",") if w.strip()]


def check_rule(params: dict, now: float) -> Rule:
    """A Control `alert` add's params as a Rule; UsageError naming the field and the value otherwise."""
    name = params.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise UsageError(f"alert name {printable(name, 64)!r} is not allowed; use 1-40 of A-Z a-z 0-9 _ . : - "
                         "starting with a letter or digit")
    events = _words(params.get("on"), "on")
    unknown = [e for e in events if e not in EVENTS]
    if not events or unknown:
        raise UsageError(f"alert {name!r}: event {printable(','.join(unknown), 64)!r} is unknown; allowed: "
                         f"{', '.join(EVENTS)}" if unknown else f"alert {name!r}: --on must name at least one "
                         f"event of {', '.join(EVENTS)}")
    # tags: a list, as every Control's `tags` (typed at decode); a comma text from an older client
    tags = params.get("tags") if isinstance(params.get("tags"), list) else _words(params.get("tags"), "tags")
    bad = [t for t in tags if not TAG_RE.match(t)]
    if bad:
        raise UsageError(f"alert {name!r}: tag {printable(bad[0], 64)!r} is not a tag (1-64 of A-Z a-z 0-9 _ . : -)")
    pattern = params.get("pattern") or None
    if pattern is not None and (not isinstance(pattern, str) or len(pattern) > MAX_PATTERN
                                or not pattern.isprintable()):
        raise UsageError(f"alert {name!r}: --name must be a printable glob of at most {MAX_PATTERN} characters")
    webhook, command = params.get("webhook"), params.get("command")
    if (webhook is None) == (command is None):
        raise UsageError(f"alert {name!r}: give one of --webhook URL or --command CMD")
    if webhook is not None:
        kind, target = "webhook", check_url(webhook)
    else:
        if not isinstance(command, str) or not command.strip() or len(command) > MAX_TARGET:
            raise UsageError(f"alert {name!r}: --command must be a non-empty command line of at most "
                             f"{MAX_TARGET} characters")
        kind, target = "command", command
    template = templates.check(params.get("template") or "json")
    return Rule(name, frozenset(events), frozenset(tags), pattern, kind, target, template, now)


def check_url(url: object) -> str:
    if not isinstance(url, str) or len(url) > MAX_TARGET:
        raise UsageError(f"--webhook must be an http or https URL of at most {MAX_TARGET} characters")
    try:
        parts = urlsplit(url)
        parts.port   # raises on a port that is not a number
    except ValueError as e:
        raise UsageError(f"--webhook {redact_url(url)}: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not url.isprintable() or " " in url:
        # the URL itself is not echoed: it may hold a token
        raise UsageError(f"--webhook is not an http or https URL with a host (scheme {printable(parts.scheme, 16)!r})",
                         "e.g. --webhook https://hooks.slack.com/services/...")
    return url


def dump_custom(document: object) -> str:
    """A custom template's document as the one line the rule keeps."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))
