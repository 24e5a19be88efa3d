"""Sub-commands from other packages (entry point group `kcpvpn.commands`): the
product finds them in installed metadata and imports one only to run it. The
lab plugs in this way (`kcpvpn lab`); the product never imports it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kcpvpn import cli

ROOT = Path(__file__).resolve().parents[2]

# Fails any import of the lab from inside the product (and records it, in case
# something swallows the ImportError), and hides the lab's package metadata when
# asked: "the lab is not installed" without uninstalling it from the shared venv.
PRELUDE = textwrap.dedent(
    """
    import importlib.abc, importlib.metadata, sys
    attempts = []

    class NoLab(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "kcpvpn_lab":
                attempts.append(name)
                raise ImportError(f"the product imported {name}")
            return None

    sys.meta_path.insert(0, NoLab())
    if HIDE_LAB:
        real = importlib.metadata.entry_points

        def entry_points(**kw):
            return importlib.metadata.EntryPoints(
                ep for ep in real(**kw) if not (ep.dist and ep.dist.name == "kcpvpn-lab")
            )

        importlib.metadata.entry_points = entry_points

    def run_kcpvpn(*argv):
        from kcpvpn import cli

        sys.argv = ["kcpvpn", *argv]
        try:
            cli.main()
        except SystemExit as e:
            return e.code or 0
        return 0
    """
)


def run_python(body: str, hide_lab: bool = False) -> subprocess.CompletedProcess:
    code = f"HIDE_LAB = {hide_lab}\n" + PRELUDE + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "120", "PATH": "/usr/bin:/bin", "KCPVPN_KEY": ""},
    )


def lab_installed() -> bool:
    return "lab" in {ep.name for ep in metadata.entry_points(group="kcpvpn.commands")}


def test_the_product_runs_without_importing_the_lab():
    r = run_python(
        """
        import kcpvpn.cli, kcpvpn.server, kcpvpn.client, kcpvpn.supervisor, kcpvpn.status
        codes = [run_kcpvpn(*a) for a in (["-h"], ["server", "-h"], ["client", "-h"], ["-V"])]
        print("codes", codes)
        print("attempts", attempts)
        print("loaded", sorted(m for m in sys.modules if m.startswith("kcpvpn_lab")))
        """
    )
    assert r.returncode == 0, r.stderr
    assert "codes [0, 0, 0, 0]" in r.stdout, r.stdout + r.stderr
    assert "attempts []" in r.stdout and "loaded []" in r.stdout, r.stdout
    if lab_installed():  # listed from its metadata alone
        assert "lab" in r.stdout and "kcpvpn-lab" in r.stdout, r.stdout


def test_no_file_of_the_product_names_the_lab_or_its_emulator():
    product = [ROOT / "daemon" / "kcpvpn", ROOT / "daemon" / "crates", ROOT / "daemon" / "fuzz"]
    product_files = [ROOT / "pyproject.toml", ROOT / "daemon" / "Cargo.toml"]
    for top in product:
        product_files += [
            p
            for p in top.rglob("*")
            if p.is_file()
            and p.suffix in (".py", ".pyi", ".rs", ".toml", ".sh")
            and not {"target", "corpus", "artifacts"} & set(p.relative_to(top).parts)
        ]
    assert len(product_files) > 30
    for p in product_files:
        text = p.read_text(errors="replace")
        if p.name == "pyproject.toml":  # ruff's import sorting may know the lab's name
            text = text.split("[tool.ruff", 1)[0]
        assert "kcpvpn_lab" not in text, p
        assert "emulator" not in text.lower(), p


@pytest.mark.skipif(not lab_installed(), reason="the lab is not installed (make build)")
def test_kcpvpn_lab_help_works():
    exe = Path(sys.executable).parent / "kcpvpn"  # the console script, as a user runs it
    argv = (
        [str(exe)]
        if exe.exists()
        else [sys.executable, "-c", "import kcpvpn.cli; kcpvpn.cli.main()"]
    )
    env = {"COLUMNS": "120", "PATH": "/usr/bin:/bin"}
    for args, expect in (
        (["lab", "-h"], ["Usage: kcpvpn lab ", "demo", "bench-emulator", "clean"]),
        (["lab", "--help"], ["Usage: kcpvpn lab "]),
        (["lab", "demo", "-h"], ["Usage: kcpvpn lab demo ", "--clients", "--duration"]),
        (["lab", "up", "-h"], ["Usage: kcpvpn lab up ", "--delay-ms"]),
    ):
        r = subprocess.run(argv + args, capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        for text in expect:
            assert text in r.stdout, (args, text, r.stdout)
    lab = Path(sys.executable).parent / "kcpvpn-lab"  # the lab's own script takes -h too
    if lab.exists():
        r = subprocess.run([str(lab), "-h"], capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 0 and "Usage: kcpvpn-lab " in r.stdout, r.stdout + r.stderr


def test_without_the_lab_lab_is_an_unknown_command():
    r = run_python(
        """
        print("help", run_kcpvpn("-h"))
        print("lab", run_kcpvpn("lab", "-h"))
        print("attempts", attempts)
        """,
        hide_lab=True,
    )
    assert "help 0" in r.stdout and "lab 2" in r.stdout, r.stdout + r.stderr
    assert "No such command 'lab'" in r.stderr, r.stderr
    assert "Plugins" not in r.stdout and "kcpvpn-lab" not in r.stdout, r.stdout
    assert "attempts []" in r.stdout


@pytest.mark.skipif(not lab_installed(), reason="the lab is not installed (make build)")
def test_a_plugin_that_cannot_load_gets_a_clear_error():
    # The lab's metadata is there but its code cannot be imported (a broken install).
    r = run_python(
        """
        print("lab", run_kcpvpn("lab", "demo", "-h"))
        print("srv", run_kcpvpn("server", "-h"))
        """
    )
    assert "lab 1" in r.stdout and "srv 0" in r.stdout, r.stdout + r.stderr
    assert "kcpvpn lab: the command from kcpvpn-lab" in r.stderr, r.stderr
    assert "failed to load: ImportError: the product imported kcpvpn_lab" in r.stderr
    assert "reinstall that package or uninstall it" in r.stderr
    assert "Traceback" not in r.stderr


# --- the mechanism, with plugins of a made-up package on sys.path -------------------------------


def fake_package(tmp_path: Path, monkeypatch, entry_points: str, module: str) -> None:
    """An installed distribution `kcpvpn-fake-plugin` whose code is `fakeplug_<id>.py`."""
    dist = tmp_path / "kcpvpn_fake_plugin-1.2.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: kcpvpn-fake-plugin\nVersion: 1.2\n"
        "Summary: Greets people, for the plugin tests\n"
    )
    (dist / "entry_points.txt").write_text(f"[kcpvpn.commands]\n{entry_points}\n")
    (tmp_path / f"{MOD}.py").write_text(textwrap.dedent(module))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, MOD, raising=False)


MOD = "fakeplug_kcpvpn_tests"

PLUGIN = """
    import typer

    app = typer.Typer(no_args_is_help=True, help="Greeting commands.")

    @app.command()
    def greet(name: str = "world") -> None:
        '''Say hello.'''
        print(f"hello {name}")

    @app.command()
    def part() -> None:
        print("bye")

    single = typer.Typer()

    @single.command()
    def shout(word: str) -> None:
        print(word.upper())

    command = typer.main.get_command(single)
    server = app
    not_a_command = 42
"""


def invoke(*args):
    return CliRunner().invoke(cli.app, list(args), env={"COLUMNS": "120", "KCPVPN_KEY": ""})


def test_a_typer_app_becomes_a_sub_command(tmp_path, monkeypatch):
    fake_package(tmp_path, monkeypatch, f"hello = {MOD}:app", PLUGIN)
    r = invoke("-h")
    assert r.exit_code == 0, r.output
    assert "hello" in r.output and "Greets people, for the plugin tests" in r.output
    assert "kcpvpn-fake-plugin 1.2" in r.output
    assert MOD not in sys.modules  # listing it imported nothing
    r = invoke("hello", "greet", "--name", "kcpvpn")
    assert r.exit_code == 0, r.output
    assert "hello kcpvpn" in r.output
    r = invoke("hello", "-h")  # -h of the root reaches the plugin's commands
    assert r.exit_code == 0, r.output
    assert "hello [OPTIONS] COMMAND" in r.output and "greet" in r.output and "part" in r.output
    assert invoke("hello", "greet", "-h").exit_code == 0


def test_a_click_command_becomes_a_sub_command(tmp_path, monkeypatch):
    fake_package(tmp_path, monkeypatch, f"shout = {MOD}:command", PLUGIN)
    r = invoke("shout", "quiet")
    assert r.exit_code == 0, r.output
    assert "QUIET" in r.output


def test_built_in_commands_win_over_plugins(tmp_path, monkeypatch):
    fake_package(tmp_path, monkeypatch, f"server = {MOD}:server", PLUGIN)
    r = invoke("server", "-h")
    assert r.exit_code == 0, r.output
    assert "--assignable-ips" in r.output and "greet" not in r.output
    assert MOD not in sys.modules


def test_a_wrong_entry_point_is_named(tmp_path, monkeypatch):
    fake_package(
        tmp_path,
        monkeypatch,
        f"number = {MOD}:not_a_command\nmissing = {MOD}:nothing_here",
        PLUGIN,
    )
    r = invoke("number")
    assert r.exit_code == 1
    assert "is a int, not a typer.Typer or a click command" in r.output, r.output
    r = invoke("missing", "x")
    assert r.exit_code == 1
    assert f"({MOD}:nothing_here) failed to load: AttributeError" in r.output, r.output
    assert invoke("status", "-h").exit_code == 0  # the rest of kcpvpn is unaffected
