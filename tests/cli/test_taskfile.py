"""The task file's short path (zmqgrid/cli/taskfile.py): python lines that share their options are checked and sent
as a batch, and give exactly the specs, the errors and the Submits that building every line whole gives."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmqgrid.cli.taskfile import TaskFile
from zmqgrid.errors import UsageError
from zmqgrid.model import build_spec, compact_spec, factor_batch

# Valid lines drawn from a few option sets, so that many share theirs (the short path) and some differ in one;
# at most one bad line, with a fault in any part the short path checks or hands over.
FUNCTIONS = st.sampled_from(["zmqgrid.samples:noop", "tests.tasks:add"])
OPTIONS = st.fixed_dictionaries({}, optional={"retries": st.sampled_from([0, 2]), "tag": st.just(["linux"]),
                                              "name": st.just("job"), "priority": st.just(5)})
CALLS = st.fixed_dictionaries({}, optional={"args": st.one_of(st.lists(st.integers(-3, 3), max_size=2), st.none()),
                                            "kwargs": st.sampled_from([{"b": 1}, {}, None]),
                                            "id": st.sampled_from(["given-1", "given-2", None])})
DEEP = json.loads("[" * 40 + "1" + "]" * 40)   # nested past LIMITS.depth
FAULTS = st.sampled_from([{"args": "not a list"}, {"args": DEEP}, {"kwargs": [1]}, {"id": "bad id!"}, {"id": 7},
                          {"retries": -1}, {"python": "not a function"}, {"colour": "red"}])


@st.composite
def files(draw: st.DrawFn) -> list[dict]:
    shared = draw(st.lists(st.tuples(FUNCTIONS, OPTIONS), min_size=1, max_size=3))
    items = []
    for _ in range(draw(st.integers(1, 12))):
        if draw(st.integers(0, 9)) == 0:
            items.append({"shell": "echo hi", **draw(OPTIONS)})
        else:
            function, options = draw(st.sampled_from(shared))
            items.append({"python": function, **options, **draw(CALLS)})
    if draw(st.booleans()):
        at = draw(st.integers(0, len(items) - 1))
        items[at] = {**items[at], **draw(FAULTS)}
    return items


def whole(path: str, run: str, items: list[dict]) -> list[dict]:
    """What every line built whole gives (the reader without its short path)."""
    width = len(str(len(items)))
    specs = []
    for number, item in enumerate(items, 1):
        item = dict(item)
        item.setdefault("id", f"{run}-{number:0{width}d}")
        try:
            specs.append(build_spec(**item))
        except UsageError as e:
            raise UsageError(f"{path} line {number}: {e.message}", e.hint) from None
    return specs


def outcome(fn):
    try:
        return fn()
    except UsageError as e:
        return ("refused", e.message, e.hint)


@settings(max_examples=300, deadline=None)
@given(items=files(), batch_size=st.integers(1, 5))
def test_the_short_path_gives_the_specs_errors_and_submits_of_building_every_line_whole(tmp_path_factory, items,
                                                                                       batch_size):
    path = tmp_path_factory.mktemp("f") / "tasks.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in items))

    expected = outcome(lambda: whole(str(path), "run", items))
    got = outcome(lambda: TaskFile(str(path), "run"))

    if isinstance(expected, tuple):
        assert got == expected
        return
    specs = [spec for _, spec in got.lines]
    assert len(specs) == len(expected)
    for item, mine, theirs in zip(items, specs, expected):
        if "id" in item and item["id"] is None:   # a new id each time it is built: compare the rest
            mine, theirs = {**mine, "id": None}, {**theirs, "id": None}
        assert mine == theirs and list(mine) == list(theirs)
    chunks = [specs[i:i + batch_size] for i in range(0, len(specs), batch_size)]
    assert list(got.submits(batch_size)) == [factor_batch([compact_spec(s) for s in chunk]) for chunk in chunks]


def test_a_bad_line_after_many_that_share_their_options_is_named_as_building_it_whole_names_it(tmp_path):
    good = [{"python": "zmqgrid.samples:noop", "args": [i], "retries": 1} for i in range(50)]
    bad = {"python": "zmqgrid.samples:noop", "args": DEEP, "retries": 1}
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in [*good, bad, *good]))
    assert outcome(lambda: TaskFile(str(path), "run")) == outcome(lambda: whole(str(path), "run", [*good, bad, *good]))
    refused = outcome(lambda: TaskFile(str(path), "run"))
    assert refused[1].startswith(f"{path} line 51: ") and "nested" in refused[1], refused


@pytest.mark.parametrize("line", [' {"shell": "true"}', '{"shell": "true"}\t ', '{"shell": "true"} {}', '{"shell": "tr',
                                  '\u00a0{"shell": "true"}', '[1]', "nul", '{"shell": "true"}}', '"{}"',
                                  "[" * 100_000])
def test_a_line_is_read_as_json_loads_reads_it(tmp_path, line):
    path = tmp_path / "tasks.jsonl"
    path.write_text(line + "\n")
    try:
        item = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as e:
        expected = ("refused", f"{path} line 1: not valid JSON ({getattr(e, 'msg', 'nested too deep')})",
                    "one JSON object per line")
    else:
        expected = (outcome(lambda: whole(str(path), "run", [item])) if isinstance(item, dict) else
                    ("refused", f"{path} line 1: expected a JSON object, got {type(item).__name__}",
                     'e.g. {"shell": "echo hi"}'))
    got = outcome(lambda: TaskFile(str(path), "run"))
    assert (got if isinstance(got, tuple) else [spec for _, spec in got.lines]) == expected
