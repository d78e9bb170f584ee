"""The `python main.py` command line: one click group; every ZmqgridError becomes one line and an exit code."""
from __future__ import annotations

import importlib
import sys

import click

from ..errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, ZmqgridError
from . import hints

# Raised by click 8.2 and later for a group run without a command (click 8.1 prints the help and exits 0 itself).
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


# Each command's module, imported only when that command runs (or when --help lists them all): a worker's start
# then loads what `distribute` needs, not the dashboard's textual or the key store's sqlite_utils.
COMMANDS = {name: f"{__name__}.{name}" for name in
            ("distribute", "submit", "tasks", "devices", "schedules", "alerts", "projects", "dashboard", "keys", "db",
             "http")}


class LazyGroup(click.Group):
    """A group whose commands live in the modules that `COMMANDS` names (click's lazy-loading pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        return getattr(importlib.import_module(module), cmd_name) if module else None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="zmqgrid")
def cli() -> None:
    """zmqgrid: a brokerless distributed task system on ZeroMQ.

    \b
    Start everything on this machine:   python main.py distribute --mode standalone
    Submit a task and wait for it:      python main.py submit --shell "echo hi" --wait
    """


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (no tracebacks for user mistakes)."""
    try:
        result = cli.main(args=argv, prog_name="main.py", standalone_mode=False)
    except ZmqgridError as e:
        click.echo("error: " + hints.line(e), err=True)
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        return EXIT_INTERRUPTED
    except _NO_ARGS_IS_HELP as e:   # a group given no command: its help, as `--help` prints it
        click.echo(e.ctx.get_help())
        return EXIT_OK
    except click.ClickException as e:
        # click ends some messages with a full stop ("is not one of 'a', 'b'."): the hint follows after "; "
        message = e.format_message().replace("\n", " ").removesuffix(".")
        ctx = getattr(e, "ctx", None)
        hint = f"; see: python {ctx.command_path} --help" if ctx is not None else ""
        click.echo(f"error: {message}{hint}", err=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
