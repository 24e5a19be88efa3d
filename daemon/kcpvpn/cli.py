"""The `kcpvpn` command line.

    kcpvpn server --port 1235 --local-ip 192.168.88.1 --assignable-ips 192.168.88.0/24
    kcpvpn client --ip vpn.example.com --port 1235 --client-id site-1
    kcpvpn lab ...            (sub-commands of other installed packages: see plugins.py)

The flags come from config.FLAGS, so the command line, the --config file keys
and the README list one set. Everything is validated before anything is
created; a bad setting prints what is wrong and exits with status 2.
"""

from __future__ import annotations

import inspect
import logging
import os
import resource
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from . import __version__
from .config import (
    PANEL_GENERAL,
    ConfigError,
    Flag,
    default_of,
    field_type,
    flags_for,
    load_config,
)
from .plugins import PluginGroup

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}

app = typer.Typer(
    cls=PluginGroup,  # adds the sub-commands other packages register (entry points)
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings=CONTEXT,
    help="kcpvpn: a VPN for bad links (KCP + Reed-Solomon FEC + AEAD over UDP).",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kcpvpn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            callback=_version,
            is_eager=True,
            metavar="",
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """kcpvpn: a VPN for bad links (KCP + Reed-Solomon FEC + AEAD over UDP)."""


# --------------------------------------------------------------------------
# server / client, generated from the flag table
# --------------------------------------------------------------------------


def _option(mode: str, flag: Flag) -> tuple[Any, Any, Any]:
    """(annotation, typer.Option, default) for one flag."""
    kind = field_type(mode, flag.field)
    default = default_of(mode, flag)
    # Unset values stay None so that a --config file can supply them; port 0
    # means "not given" and required-ness is checked by validation.
    unset = default is None or default == "" or flag.field == "port"
    show: bool | str = not unset
    if (mode, flag.field) == ("server", "ip"):
        show = "all addresses"
    if unset:
        default = None
    ann = kind | None if default is None else kind
    names = flag.names
    if flag.off_switch:
        names = (f"{names[0]}/{flag.off_switch}", *names[1:])
    opt = typer.Option(
        *names,
        help=flag.help_for(mode),
        rich_help_panel=flag.panel,
        hidden=flag.hidden,
        envvar=flag.envvar,
        show_envvar=flag.envvar is not None,
        metavar=flag.metavar if flag.metavar is not None else ("" if kind is bool else "N"),
        show_default=show,
    )
    return ann, opt, default


def _make_command(mode: str) -> Callable[..., None]:
    flags = flags_for(mode)

    def command(ctx: typer.Context, **params: Any) -> None:
        config_file = params.pop("config")
        given: dict[str, Any] = {}
        for flag in flags:
            source = ctx.get_parameter_source(flag.field)
            if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
                value = params[flag.field]
                given[flag.field] = (not value) if flag.negates else value
        try:
            loaded = load_config(mode, given, config_file=config_file)  # type: ignore[arg-type]
        except ConfigError as e:
            for line in e.problems:
                typer.echo(f"kcpvpn {mode}: error: {line}", err=True)
            raise typer.Exit(2) from None
        global _reload
        _reload = lambda: load_config(mode, given, config_file=config_file).config  # type: ignore[arg-type]  # noqa: E731
        raise typer.Exit(_run_daemon(mode, loaded))

    parameters = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    ]
    annotations: dict[str, Any] = {"ctx": typer.Context, "return": None}
    for flag in flags:
        ann, opt, default = _option(mode, flag)
        annotations[flag.field] = Annotated[ann, opt]
        parameters.append(
            inspect.Parameter(
                flag.field,
                inspect.Parameter.KEYWORD_ONLY,
                default=default,
                annotation=annotations[flag.field],
            )
        )
    config_ann = Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="TOML file with the same keys as the flags; flags override it",
            rich_help_panel=PANEL_GENERAL,
            metavar="FILE",
            show_default=False,
        ),
    ]
    annotations["config"] = config_ann
    parameters.append(
        inspect.Parameter(
            "config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=config_ann
        )
    )
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = annotations
    command.__name__ = mode
    return command


# Reads the configuration again as the command line gave it (SIGHUP).
_reload: Callable[[], Any] | None = None


def _run_server(config: Any) -> int:
    from . import server  # imported late: it loads the native engine

    return server.run(config, reload=_reload)


def _run_client(config: Any) -> int:
    from . import client

    return client.run(config)


# What each command runs once the configuration is valid (tests replace these).
RUN: dict[str, Callable[[Any], int]] = {"server": _run_server, "client": _run_client}


def _raise_nofile(cfg: Any, log: logging.Logger) -> None:
    """Raises the descriptor limit to its hard maximum: each client of a
    server holds two (its interface, the engine's copy), and the common
    default of 1024 would stop a server at about 500 clients."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-file limit above %d: %s", soft, e)
    need = 2 * getattr(cfg, "max_clients", 0) + 64
    if soft < need:
        log.warning(
            "the open-file limit (%d) allows about %d clients, fewer than --max-clients %d: "
            "raise it (LimitNOFILE= in the unit, ulimit -n)",
            soft,
            (soft - 64) // 2,
            cfg.max_clients,
        )


def _run_daemon(mode: str, loaded: Any) -> int:
    """Runs a daemon with its logging and metrics set up; its exit status.
    The first and the last log line say which daemon started and that it
    stopped, so a log (or the journal) shows every run's bounds."""
    from .errors import KcpvpnError
    from .observe import logs, metrics
    from .tun import InterfaceError

    cfg = loaded.config
    # A SIGHUP before the daemon's own handler is in place must not end it.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    logs.setup(cfg.log_level, cfg.log_format)
    log = logging.getLogger("kcpvpn")
    for w in loaded.warnings:
        log.warning("%s", w)
    log.info("kcpvpn %s %s starting (pid %d)", __version__, mode, os.getpid())
    _raise_nofile(cfg, log)
    code = 1
    try:
        if cfg.metrics:
            metrics.start(cfg.metrics)
        code = RUN[mode](cfg) or 0
    except (OSError, InterfaceError, KcpvpnError) as e:
        # Start-up failures (port in use, no /dev/net/tun, ...): one line
        # that names what failed, not a traceback.
        typer.echo(f"kcpvpn {mode}: error: {e}", err=True)
        code = 1
    finally:
        metrics.stop()
        log.info("stopped (exit status %d)", code)
    return code


_SERVER_HELP = """Run the server (alias: s): gives each client an address and an interface.

Example: [bold]KCPVPN_KEY=... kcpvpn server --port 1235 --local-ip 192.168.88.1
--assignable-ips 192.168.88.0/24[/bold]"""
_CLIENT_HELP = """Run a client (alias: c): connects and sets up the interface it is given.

Example: [bold]KCPVPN_KEY=... kcpvpn client --ip vpn.example.com --port 1235
--client-id site-1[/bold]"""

for _mode, _alias, _help in (("server", "s", _SERVER_HELP), ("client", "c", _CLIENT_HELP)):
    _cmd = _make_command(_mode)
    app.command(_mode, help=_help, cls=TyperCommand)(_cmd)
    app.command(_alias, help=f"Alias of `kcpvpn {_mode}`.", hidden=True)(_cmd)


@app.command("genkey")
def genkey_cmd() -> None:
    """Print a new private key for identity mode and, labelled KCPVPN_KEY=, a new
    random secret (set the same secret on every side). The output as a whole is a
    valid --private-key-file (keep it mode 600).

    Example: [bold](umask 077; kcpvpn genkey > server.key); kcpvpn pubkey < server.key[/bold]"""
    from .keys import generate_private_key, random_secret

    typer.echo("# private key (identity mode: --private-key-file; keep it secret)")
    typer.echo(generate_private_key())
    typer.echo("# a new random secret for KCPVPN_KEY, the same on every side:")
    typer.echo(f"KCPVPN_KEY={random_secret()}")


@app.command("pubkey")
def pubkey_cmd() -> None:
    """Read a private key on stdin and print its public key (for the server's
    [[peer]] list, or a client's --server-public-key)."""
    import sys

    from .keys import key_line, public_key_of

    try:
        typer.echo(public_key_of(key_line(sys.stdin.read(), "stdin")))
    except ValueError as e:
        typer.echo(f"kcpvpn pubkey: error: {e}", err=True)
        raise typer.Exit(2) from None


@app.command("status")
def status_cmd(
    socket_path: Annotated[
        str | None,
        typer.Option("--socket", "-s", help="Status socket of the daemon (default: all found)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON")] = False,
) -> None:
    """The figures of running daemons once: sessions, RTT, retransmissions, FEC repairs
    (`kcpvpn top` for a live view)."""
    from . import status as st
    from .status_view import render

    paths = [socket_path] if socket_path else st.find_sockets()
    if not paths:
        typer.echo(
            f"kcpvpn status: no daemon found (no socket in {st.RUN_DIR}); "
            "pass --socket PATH if it uses --status-socket",
            err=True,
        )
        raise typer.Exit(1)
    code = 0
    for p in paths:
        try:
            doc = st.read(p)
        except (OSError, ValueError) as e:
            typer.echo(f"kcpvpn status: {p}: {st.read_problem(p, e)}", err=True)
            code = 1
            continue
        if as_json:
            import json

            typer.echo(json.dumps(doc, indent=2))
        else:
            render(doc, p)
    raise typer.Exit(code)


@app.command("top")
def top_cmd(
    sockets: Annotated[
        list[str] | None,
        typer.Option(
            "--socket",
            "-s",
            help="Status socket of a daemon; repeat for more (default: every one found "
            "in /run/kcpvpn, looked up at each refresh)",
            metavar="PATH",
        ),
    ] = None,
    interval: Annotated[
        float,
        typer.Option(
            "--interval", "-n", min=0.2, max=60, metavar="SECONDS", help="Seconds between refreshes"
        ),
    ] = 1.0,
) -> None:
    """Live view of every daemon on this host: per session RTT, throughput up and down,
    loss, parity per FEC group, retransmissions and FEC repairs, with sparklines.
    Keys: q quit, s sort by the next column, r reverse."""
    from .observe import top

    raise typer.Exit(top.run(sockets or [], interval=interval))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
