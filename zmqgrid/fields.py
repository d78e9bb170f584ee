"""Field specs of the wire schema: each says what type and bounds a value may have, and checks it.

`protocol` declares, per message kind, one spec per field (`Message.FIELDS`); `Message.from_body` runs them, so a
handler only ever sees values of the declared type and size. A spec's `check(value)` returns the value to use
(the same object unless a map held keys that are dropped) or raises `Bad`; containers add where in them it was,
and `from_body` turns it into the one `ProtocolError` naming message, field and what is allowed. Specs are
introspectable (`children()`, their bound attributes, `describe()`): the hostile-value fuzzer walks them.

Fast paths: `type(v) is int` (bool is an int, never a valid number here), one comparison chain per bound, and
containers that build a new list or map only when an item changed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

import msgpack

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# A task or device id, matched whole (fullmatch: `$` would also match before a final newline). The one
# definition: the schema, task specs (model), config and the PUB's device topics all use it.
ID_PATTERN = r"[A-Za-z0-9_.:-]{1,64}"
_SCALARS = frozenset({type(None), bool, int, float, str, bytes})
_NUMBERS = frozenset({type(None), bool, int, float})   # of a bounded size whatever their value


class Bad(Exception):
    """A value that does not fit its spec; `path` is filled in (innermost first) as it leaves containers."""

    def __init__(self, allowed: str, value: Any) -> None:
        super().__init__(allowed)
        self.allowed = allowed
        self.got = shown(value)
        self.path: list[str] = []

    def where(self) -> str:
        return "".join(reversed(self.path))


def shown(value: Any) -> str:
    """A peer's value as a refusal may show it: its type and size, or a repr cut short (escaped: no line breaks)."""
    kind = type(value).__name__
    if isinstance(value, (str, bytes)):
        return f"{kind} of {len(value)} characters" if len(value) > 40 else repr(value)
    if isinstance(value, (list, dict)):
        return f"{kind} of {len(value)} items"
    text = repr(value)
    return text if len(text) <= 40 else f"{kind} {text[:40]}..."


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_:-]{1,64}")


def _step(key: Any) -> str:
    """A map key as a step of a refusal's path: `.name` when plain, else `[shown key]` (escaped, cut short)."""
    return f".{key}" if type(key) is str and _PLAIN_KEY.fullmatch(key) else f"[{shown(key)}]"


class Spec:
    """Base of every field spec. `pure`: check() returns the very value it was given (containers skip copying)."""

    nullable = False
    pure = True

    def check(self, value: Any) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def children(self) -> dict[str, "Spec"]:
        """The specs inside this one, by role: "item" (List), "0", "1"... (Tuple), a Record's field names, and "*"
        and "*key" for a Record's other keys' values and names."""
        return {}

    def _null(self) -> str:
        return " or nil" if self.nullable else ""


class Int(Spec):
    def __init__(self, lo: int = INT64_MIN, hi: int = INT64_MAX, nullable: bool = False) -> None:
        self.lo, self.hi, self.nullable = lo, hi, nullable

    def check(self, value: Any) -> Any:
        if type(value) is int and self.lo <= value <= self.hi:
            return value
        if value is None and self.nullable:
            return None
        raise Bad(self.describe(), value)

    def describe(self) -> str:
        return f"an integer {self.lo}..{self.hi}{self._null()}"


class Float(Spec):
    """A finite number (an int is taken as one, and given as a float if `as_float`): NaN and infinities fail."""

    def __init__(self, lo: float, hi: float, nullable: bool = False, as_float: bool = False) -> None:
        self.lo, self.hi, self.nullable, self.as_float = lo, hi, nullable, as_float
        self.pure = not as_float

    def check(self, value: Any) -> Any:
        kind = type(value)
        if (kind is float or kind is int) and self.lo <= value <= self.hi:
            return float(value) if self.as_float and kind is int else value
        if value is None and self.nullable:
            return None
        raise Bad(self.describe(), value)

    def describe(self) -> str:
        return f"a finite number {self.lo:g}..{self.hi:g}{self._null()}"


class Text(Spec):
    """A string of min_len..max_len characters; `line`: no control characters (a one-line name shown to people)."""

    def __init__(self, max_len: int, min_len: int = 0, line: bool = False, pattern: str | None = None,
                 what: str = "", nullable: bool = False) -> None:
        self.max_len, self.min_len, self.line, self.nullable = max_len, min_len, line, nullable
        self.pattern = re.compile(pattern) if pattern else None
        self._match = self.pattern.fullmatch if self.pattern else None
        self.what = what

    def check(self, value: Any) -> Any:
        if type(value) is str and self.min_len <= len(value) <= self.max_len:
            if self._match is not None:
                if self._match(value):
                    return value
            elif not (self.line and _CONTROL.search(value)):
                return value
        elif value is None and self.nullable:
            return None
        raise Bad(self.describe(), value)

    def describe(self) -> str:
        if self.what:
            return self.what + self._null()
        size = f"at most {self.max_len}" if not self.min_len else f"{self.min_len}..{self.max_len}"
        return f"text of {size} characters{' without control characters' if self.line else ''}{self._null()}"


class Id(Text):
    """A task or device id: 1-64 of A-Z a-z 0-9 _ . : - (model.validate_task_spec's charset). Generated ids are
    letters and digits only, which two str methods confirm faster than the regex."""

    def __init__(self, nullable: bool = False) -> None:
        super().__init__(64, 1, pattern=ID_PATTERN, what="an id of 1-64 of A-Z a-z 0-9 _ . : -",
                         nullable=nullable)

    def check(self, value: Any) -> Any:
        if type(value) is str and 0 < len(value) <= 64 and ((value.isascii() and value.isalnum())
                                                             or self._match(value)):
            return value
        return super().check(value)   # nil if nullable, else the refusal


class Bool(Spec):
    def __init__(self, nullable: bool = False) -> None:
        self.nullable = nullable

    def check(self, value: Any) -> Any:
        if type(value) is bool or (value is None and self.nullable):
            return value
        raise Bad(self.describe(), value)

    def describe(self) -> str:
        return "true or false" + self._null()


class Enum(Spec):
    def __init__(self, values: Iterable[str], nullable: bool = False) -> None:
        self.values, self.nullable = frozenset(values), nullable

    def check(self, value: Any) -> Any:
        if (type(value) is str and value in self.values) or (value is None and self.nullable):
            return value
        raise Bad(self.describe(), value)

    def describe(self) -> str:
        return "one of " + ", ".join(sorted(self.values)) + self._null()


class Value(Spec):
    """Any plain msgpack value (nil, bool, int, float, text, bytes, lists and maps of them) nested at most `depth`
    deep: what the ledger stores as packed bytes and shows as JSON without running out of stack."""

    def __init__(self, depth: int, nullable: bool = True, what: str = "", max_bytes: int | None = None) -> None:
        self.depth, self.nullable, self.what, self.max_bytes = depth, nullable, what, max_bytes

    def check(self, value: Any) -> Any:
        kind = type(value)
        if kind in _NUMBERS or (kind in _SCALARS or _plain(value, self.depth)) and (
                self.max_bytes is None or kind in (str, bytes) and len(value) * 4 + 5 <= self.max_bytes   # no pack
                or len(msgpack.packb(value, use_bin_type=True)) <= self.max_bytes):
            return value
        raise Bad(self.describe(), value)

    def describe(self) -> str:
        size = f", at most {self.max_bytes} bytes packed" if self.max_bytes is not None else ""
        return (f"{self.what or 'a msgpack value'} (nil, bool, number, text, bytes, lists and maps of them) nested "
                f"at most {self.depth} deep{size}")


def _plain(value: Any, depth: int) -> bool:
    """True if `value` is a list or map of plain values nested at most `depth` deep (recursion stops there)."""
    if depth <= 0:
        return False
    scalars = _SCALARS
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) not in scalars or (type(item) not in scalars and not _plain(item, depth - 1)):
                return False
        return True
    if kind is list:
        for item in value:
            if type(item) not in scalars and not _plain(item, depth - 1):
                return False
        return True
    return False


class Opaque(Spec):
    """Not checked here: another checker owns the value (`what` names it). Used for task specs only."""

    def __init__(self, what: str) -> None:
        self.what, self.nullable = what, True

    def check(self, value: Any) -> Any:
        return value

    def describe(self) -> str:
        return self.what


class List(Spec):
    def __init__(self, item: Spec, max_items: int, min_items: int = 0, nullable: bool = False) -> None:
        self.item, self.max_items, self.min_items, self.nullable = item, max_items, min_items, nullable
        self.pure, self.unchecked = item.pure, isinstance(item, Opaque)

    def check(self, value: Any) -> Any:
        if type(value) is not list or not self.min_items <= len(value) <= self.max_items:
            if value is None and self.nullable:
                return None
            raise Bad(self.describe(), value)
        if self.unchecked:
            return value
        check = self.item.check
        i = 0
        try:
            if self.pure:
                for i, item in enumerate(value):
                    check(item)
                return value
            out = []
            for i, item in enumerate(value):
                out.append(check(item))
            return out
        except Bad as e:
            e.path.append(f"[{i}]")
            raise

    def describe(self) -> str:
        size = f"at most {self.max_items}" if not self.min_items else f"{self.min_items}..{self.max_items}"
        return f"a list of {size} items, each {self.item.describe()}{self._null()}"

    def children(self) -> dict[str, Spec]:
        return {"item": self.item}


class Tuple(Spec):
    """A fixed-length array, one spec per position (e.g. [task id, attempt]), given as a Python tuple: hashable, so
    a key goes into a set or a dict as it is."""

    pure = False   # a new tuple, never the list it was given

    def __init__(self, *items: Spec, what: str = "") -> None:
        self.items, self.what, self._pair = items, what, None
        if len(items) == 2 and isinstance(items[0], Id) and isinstance(items[1], Int):
            self._pair = (items[1].lo, items[1].hi)

    def check(self, value: Any) -> Any:
        if type(value) is not list or len(value) != len(self.items):
            raise Bad(self.describe(), value)
        pair = self._pair
        if pair is not None:   # [id, attempt]: the hot case (Heartbeat, Results.started), checked inline
            lo, hi = pair
            first, second = value
            if (type(second) is int and lo <= second <= hi and type(first) is str and 0 < len(first) <= 64
                    and first.isascii() and first.isalnum()):
                return first, second
        out, i = [], 0
        try:
            for i, (spec, item) in enumerate(zip(self.items, value)):
                out.append(spec.check(item))
        except Bad as e:
            e.path.append(f"[{i}]")
            raise
        return tuple(out)

    def describe(self) -> str:
        return self.what or "[" + ", ".join(s.describe() for s in self.items) + "]"

    def children(self) -> dict[str, Spec]:
        return {str(i): s for i, s in enumerate(self.items)}


class Record(Spec):
    """A map with known keys, each checked by its spec; `required` keys must be there. Unknown keys are dropped
    (`extra` None), or kept with their key checked by `extra_key` and value by `extra` (with no `fields`, a map of
    any keys); more than `max_keys` keys in all is refused."""

    pure = False

    def __init__(self, fields: dict[str, Spec], max_keys: int, required: Iterable[str] = (),
                 extra: Spec | None = None, extra_key: Spec | None = None, nullable: bool = False) -> None:
        self.fields, self.max_keys, self.required = fields, max_keys, tuple(required)
        self.extra, self.extra_key, self.nullable = extra, extra_key or Text(64, 1, line=True), nullable
        self._checks = {name: spec.check for name, spec in fields.items()}

    def check(self, value: Any) -> Any:
        if type(value) is not dict or len(value) > self.max_keys:
            if value is None and self.nullable:
                return None
            raise Bad(self.describe(), value)
        checks, out, key = self._checks, None, None
        try:
            for key, item in value.items():
                check = checks.get(key)
                if check is None:
                    if self.extra is None:
                        out = out if out is not None else dict(value)
                        del out[key]
                        continue
                    self.extra_key.check(key)
                    check = self.extra.check
                checked = check(item)
                if checked is not item:
                    out = out if out is not None else dict(value)
                    out[key] = checked
        except Bad as e:
            e.path.append(_step(key))
            raise
        for name in self.required:
            if name not in value:
                e = Bad(self.fields[name].describe(), None)
                e.got = "nothing (the key is missing)"
                e.path.append(f".{name}")
                raise e
        return value if out is None else out

    def describe(self) -> str:
        if not self.fields:
            return f"a map of at most {self.max_keys} keys ({self.extra_key.describe()}) to {self.extra.describe()}"
        return (f"a map of at most {self.max_keys} keys ({', '.join(self.fields)}"
                f"{', others as ' + self.extra.describe() if self.extra else ''}){self._null()}")

    def children(self) -> dict[str, Spec]:
        return {**self.fields, **({"*": self.extra, "*key": self.extra_key} if self.extra else {})}


def walk(spec: Spec, path: tuple = ()) -> Iterable[tuple[tuple, Spec]]:
    """Every spec inside `spec` (itself first) with its path of roles from `spec`: what a fuzzer enumerates."""
    yield path, spec
    for role, child in spec.children().items():
        yield from walk(child, (*path, role))


@dataclass(frozen=True)
class Field:
    """One field of a message: its name (the dataclass attribute) and its spec."""

    name: str
    spec: Spec


class Scalar(Spec):
    """One plain value: nil, bool, an int64, a finite float, or a one-line text of at most 4,096 characters."""

    _by_type = {int: Int(), float: Float(-1e300, 1e300), str: Text(4096, line=True)}

    def __init__(self) -> None:
        self.nullable = True

    def check(self, value: Any) -> Any:
        spec = self._by_type.get(type(value))
        try:
            if value is None or type(value) is bool or spec is not None and spec.check(value) is value:
                return value
        except Bad:
            pass
        raise Bad(self.describe(), value)

    def describe(self) -> str:
        return "nil, true/false, a 64-bit integer, a finite number or a one-line text of at most 4096 characters"


SCALAR = Scalar()
