"""Every command of the CLI explains itself (--help text), and README.md documents every command path."""
from __future__ import annotations

import re

import click
import pytest

from zmqgrid.cli import cli

from .helpers import REPO

pytestmark = pytest.mark.timeout(30)

README = REPO / "README.md"


def command_paths(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> dict[str, click.Command]:
    """Every command and subcommand below `group`, by its path ("tasks list"), hidden ones left out."""
    paths: dict[str, click.Command] = {}
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        path = (*prefix, name)
        paths[" ".join(path)] = command
        if isinstance(command, click.Group):
            paths.update(command_paths(command, path))
    return paths


PATHS = command_paths()


def test_the_cli_has_the_commands_of_the_contract():
    assert {"distribute", "submit", "tasks", "tasks list", "tasks show", "tasks logs", "tasks cancel",
            "devices", "devices list"} <= set(PATHS)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_every_command_has_help_text(path):
    command = PATHS[path]
    assert (command.help or "").strip(), f"`{path}` has no help text (a docstring)"
    assert command.get_short_help_str().strip(), f"`{path}` has no short help"


@pytest.mark.xfail(not README.exists(), reason="README.md is not written yet", strict=False)
@pytest.mark.parametrize("path", sorted(PATHS))
def test_every_command_path_appears_in_the_readme(path):
    text = README.read_text(encoding="utf-8")
    assert re.search(r"\b" + r"\s+".join(map(re.escape, path.split())) + r"\b", text), \
        f"README.md never mentions `{path}`"


@pytest.mark.parametrize("path", sorted(p for p, c in PATHS.items() if not isinstance(c, click.Group)))
def test_every_command_shows_an_example_and_explains_every_option(path):
    command = PATHS[path]
    assert f"python main.py {path}" in (command.help or ""), f"`{path}` --help has no example"
    for option in command.params:
        if isinstance(option, click.Option) and not option.hidden:
            assert (option.help or "").strip(), f"`{path}` {'/'.join(option.opts)} has no description"


@pytest.mark.parametrize("path", ["tasks show", "tasks logs", "tasks cancel", "tasks requeue"])
def test_the_help_examples_name_a_task_by_a_prefix_that_is_unique_in_practice(path):
    # The ids of one batch share their first 12 or so digits: "3f2a" would name them all.
    refs = re.findall(r"python main\.py " + path + r" ([0-9a-f]{4,})\b", PATHS[path].help or "")
    assert refs and all(len(ref) >= 14 for ref in refs), refs


def test_the_readme_and_the_design_name_a_task_by_a_prefix_that_is_unique_in_practice():
    # As in --help: an example a reader copies must not teach that 8 digits tell tasks apart.
    refs = [ref for doc in (README, REPO / "docs" / "architecture.md")
            for ref in re.findall(r"tasks (?:show|logs|cancel|requeue) ([0-9a-f]{4,})\b", doc.read_text("utf-8"))]
    assert refs and all(len(ref) >= 14 for ref in refs), refs
