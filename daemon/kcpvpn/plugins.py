"""Sub-commands from other installed packages.

Every entry point of the group `kcpvpn.commands` becomes `kcpvpn NAME ...`.
A package declares one in its pyproject.toml:

    [project.entry-points."kcpvpn.commands"]
    NAME = "package.module:app"      # a typer.Typer, or a command typer built

Listing them (`kcpvpn -h`) reads installed metadata only: a plugin's code is
imported when its own command runs, never for `kcpvpn server`, `client` or
`-h`, so a slow or broken plugin cannot get in their way. A built-in command
wins over a plugin of the same name. Without any plugin, `kcpvpn NAME` is an
unknown command (exit status 2).
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

GROUP = "kcpvpn.commands"
PANEL = "Plugins"


def discover() -> dict[str, metadata.EntryPoint]:
    """name → entry point, for every installed package (the first of a name wins)."""
    found: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=GROUP):
        found.setdefault(ep.name, ep)
    return found


def _origin(ep: metadata.EntryPoint) -> str:
    dist = ep.dist
    return f"{dist.name} {dist.version}" if dist is not None else ep.value


class _Placeholder(TyperCommand):
    """Stands for a plugin in help listings; replaced by the real command when run."""

    def __init__(self, ep: metadata.EntryPoint) -> None:
        summary = (
            (ep.dist.metadata.get_all("Summary") or [None])[0] if ep.dist is not None else None
        )
        super().__init__(
            name=ep.name,
            help=f"{summary or ep.value} (from {_origin(ep)})",
            add_help_option=False,
        )
        self.entry_point = ep
        self.rich_help_panel = PANEL

    def load(self) -> Any:
        """The plugin's command, or a clear exit when its package cannot provide one."""
        ep = self.entry_point
        what = f"kcpvpn {ep.name}: the command from {_origin(ep)} ({ep.value})"
        try:
            obj = ep.load()
        except Exception as e:
            typer.echo(
                f"{what} failed to load: {type(e).__name__}: {e}; "
                "reinstall that package or uninstall it",
                err=True,
            )
            raise typer.Exit(1) from None
        if isinstance(obj, typer.Typer):
            return typer.main.get_command(obj)
        if callable(getattr(obj, "make_context", None)) and callable(getattr(obj, "invoke", None)):
            return obj
        typer.echo(
            f"{what} is a {type(obj).__name__}, not a typer.Typer or a click command; "
            "that package's entry point is wrong",
            err=True,
        )
        raise typer.Exit(1)


class PluginGroup(TyperGroup):
    """The root `kcpvpn` group: built-in commands plus the plugins found by `discover()`."""

    _plugins: dict[str, _Placeholder] | None = None

    def _placeholders(self) -> dict[str, _Placeholder]:
        if self._plugins is None:
            found = discover().items()
            self._plugins = {n: _Placeholder(ep) for n, ep in found if n not in self.commands}
        return self._plugins

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *sorted(self._placeholders())]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        # Built-ins first: `kcpvpn server` never looks at installed metadata.
        return super().get_command(ctx, cmd_name) or self._placeholders().get(cmd_name)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, cmd, rest = super().resolve_command(ctx, args)
        if isinstance(cmd, _Placeholder):
            cmd = cmd.load()
        return name, cmd, rest
