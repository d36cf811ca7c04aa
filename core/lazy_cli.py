"""Commands whose module is imported only when they run (or show their own help).

``rapport --help`` lists every command with its one-line help. Importing each command's
module for that would import the models, services and GraphQL types behind it (about a
second). A plugin returns instead, from ``rapport_cli_commands``, a declaration::

    lazy_command("loyalty", "plugins.loyalty.cli:loyalty_group",
                 "The loyalty programme: expiry and tier jobs, the report.")

The top-level help shows the declared help; running ``rapport loyalty ...`` (or
``rapport loyalty --help``) imports ``plugins.loyalty.cli`` and hands over to the real
command. The declared help must be the first paragraph of the real command's help (a test
compares them: tests/core/test_cli_start.py).
"""

from __future__ import annotations

import importlib
from typing import Any

import click


class LazyCommand(click.Command):
    """Stands for the command at ``target`` (``"module:attribute"``) under ``name``."""

    def __init__(self, name: str, target: str, help: str, hidden: bool = False) -> None:
        super().__init__(name, help=help, hidden=hidden, add_help_option=False)
        module, _, attribute = target.partition(":")
        if not module or not attribute:
            raise ValueError(f"a lazy command's target is 'module:attribute', not {target!r}")
        self.target = target
        self._command: click.Command | None = None

    def load(self) -> click.Command:
        """The real command (its module is imported on the first call)."""
        if self._command is None:
            module, _, attribute = self.target.partition(":")
            command = getattr(importlib.import_module(module), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self.target} is not a click command")
            self._command = command
        return self._command

    # Running, completing or describing the command: the real one does it.
    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        return self.load().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        return self.load().invoke(ctx)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        return self.load().main(*args, **kwargs)

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return self.load().get_params(ctx)

    def get_usage(self, ctx: click.Context) -> str:
        return self.load().get_usage(ctx)

    def get_help(self, ctx: click.Context) -> str:
        return self.load().get_help(ctx)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return self.load().parse_args(ctx, args)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[Any]:
        return self.load().shell_complete(ctx, incomplete)

    def to_info_dict(self, ctx: click.Context) -> dict[str, Any]:
        return self.load().to_info_dict(ctx)

    def __repr__(self) -> str:
        state = "" if self._command is None else " (loaded)"
        return f"<LazyCommand {self.name} -> {self.target}{state}>"


def lazy_command(name: str, target: str, help: str, hidden: bool = False) -> click.Command:
    """A command listed as ``name`` with ``help`` whose module loads when it runs."""
    return LazyCommand(name, target, help, hidden)
