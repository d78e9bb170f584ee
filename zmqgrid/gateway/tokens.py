"""The gateway's bearer tokens: a local file holding each token's sha256, name and role, never the token itself."""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, UsageError
from .routing import TOKEN_ROLES, Role

TOKEN_PREFIX = "zg_"
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class Token:
    name: str
    role: str
    sha256: str
    created_at: float


class TokenStore:
    """`http_tokens.json`: {"tokens": [{name, role, sha256, created_at}, ...]}, mode 0600.

    Read again whenever the file's modification time or size changes, so `http tokens revoke` takes effect at the
    next request of a running gateway.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._seen: tuple[int, int] | None = None
        self._by_digest: dict[str, Token] = {}

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def tokens(self) -> list[Token]:
        stamp = self._stamp()
        if stamp != self._seen:
            self._by_digest = {t.sha256: t for t in self._read()} if stamp else {}
            self._seen = stamp
        return list(self._by_digest.values())

    def is_open(self) -> bool:
        """No token: every caller is admin (allowed on loopback only, or with --insecure)."""
        return not self.tokens()

    def role_of(self, token: str) -> Role | None:
        """The role of a presented token, or None if it is not in the store."""
        self.tokens()
        found = self._by_digest.get(digest(token))
        return Role.named(found.role) if found else None

    def _read(self) -> list[Token]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return [Token(str(t["name"]), str(t["role"]), str(t["sha256"]), float(t["created_at"]))
                    for t in data["tokens"] if t["role"] in TOKEN_ROLES]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"token store {self.path} cannot be read ({e})",
                              "fix or remove the file; make tokens with: python main.py http tokens create NAME") from None

    def _write(self, tokens: list[Token]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"tokens": [t.__dict__ for t in tokens]}, indent=1)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".http_tokens.")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(body)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._seen = None

    def create(self, name: str, role: str) -> str:
        """A new token for `name` with `role`; returns the token (shown once, stored only as its sha256)."""
        if not _NAME.fullmatch(name):
            raise UsageError(f"token name {name!r} is not allowed", "use 1-64 of A-Z a-z 0-9 _ . : -")
        if role not in TOKEN_ROLES:
            raise UsageError(f"role {role!r} is unknown", f"allowed: {', '.join(TOKEN_ROLES)}")
        tokens = self.tokens() if self.path.exists() else []
        if any(t.name == name for t in tokens):
            raise UsageError(f"a token named {name!r} exists", f"revoke it first: python main.py http tokens revoke {name}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self._write(tokens + [Token(name, role, digest(token), round(time.time(), 3))])
        return token

    def revoke(self, name: str) -> Token:
        tokens = self.tokens()
        found = next((t for t in tokens if t.name == name), None)
        if found is None:
            raise UsageError(f"no token named {name!r}", "list them with: python main.py http tokens list")
        self._write([t for t in tokens if t.name != name])
        return found
