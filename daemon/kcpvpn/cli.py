"""The `kcpvpn` command line."""

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.callback()
def _root() -> None:
    """kcpvpn: a VPN for bad links."""


def main() -> None:
    app()
