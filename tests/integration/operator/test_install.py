"""Install and run as an operator would: the systemd units checked by
systemd-analyze, then `make install` of the wheel into a fresh virtualenv
(paths moved to a scratch directory), both daemons started from the
installed units' ExecStart as an unprivileged user holding only the units'
capabilities (setpriv), a tunnel between two lab namespaces, `make uninstall`.

The wheel is $KCPVPN_WHEEL when set (CI passes `make wheel`'s manylinux one),
else one built here with the host's toolchain."""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from kcpvpn_lab.vpn import ping, status_when

ROOT = Path(__file__).resolve().parents[3]
UNITS = sorted((ROOT / "packaging" / "systemd").glob("kcpvpn-*@.service"))
USER = "nobody"  # any unprivileged account will do; the units name their own


def directives(unit: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out[key] = value
    return out


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_units_verify_and_are_hardened(unit, tmp_path):
    assert len(UNITS) == 2
    # An instance of the template, its ExecStart pointing at a kcpvpn that exists here.
    kcpvpn = Path(sys.executable).parent / "kcpvpn"
    inst = tmp_path / unit.name.replace("@.", "@site.")
    inst.write_text(unit.read_text().replace("/usr/local/bin/kcpvpn", str(kcpvpn)))
    r = subprocess.run(
        ["systemd-analyze", "verify", str(inst)], capture_output=True, text=True, timeout=60
    )
    # Unknown keys and bad values are warnings with status 0: none may appear.
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    r = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=30", str(inst)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr  # exposure at most 3.0 ("OK")
    d = directives(unit)
    assert d["User"] == "kcpvpn" and d["NoNewPrivileges"] == "yes"
    assert d["AmbientCapabilities"] == d["CapabilityBoundingSet"] == "CAP_NET_ADMIN CAP_NET_RAW"
    assert d["ExecReload"] == "/bin/kill -HUP $MAINPID" and d["Restart"] == "on-failure"
    mode = "server" if "server" in unit.name else "client"
    assert d["ExecStart"] == f"/usr/local/bin/kcpvpn {mode} --config /etc/kcpvpn/%i.toml"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    given = os.environ.get("KCPVPN_WHEEL")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("wheel")
    maturin = Path(sys.executable).parent / "maturin"
    subprocess.run(
        [str(maturin), "build", "--release", "--strip", "-q", "-o", str(out)],
        cwd=ROOT,
        check=True,
        timeout=900,
    )
    (found,) = out.glob("kcpvpn-*.whl")
    return found


def test_wheel_is_abi3_manylinux_with_runtime_dependencies_only(wheel):
    assert "-cp311-abi3-manylinux" in wheel.name, wheel.name
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    required = [
        line.split(":", 1)[1].strip()
        for line in text.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    names = sorted(r.split(">")[0].split("=")[0].split(" ")[0] for r in required)
    assert names == ["prometheus-client", "pyroute2", "rich", "typer"], required


def _setpriv(unit: Path, instance: str) -> list[str]:
    """The unit's ExecStart as its User with only its capabilities: what
    systemd would run, less the sandbox that needs systemd itself."""
    d = directives(unit)
    caps = ",".join("+" + c.removeprefix("CAP_").lower() for c in d["AmbientCapabilities"].split())
    assert d["CapabilityBoundingSet"] == d["AmbientCapabilities"]
    pw = pwd.getpwnam(USER)
    # /dev/net/tun as udev leaves it on systemd hosts (0666: creating a device
    # still needs CAP_NET_ADMIN), in a mount namespace of the daemon's own so
    # this machine's node stays as it is.
    tun = "mount -t tmpfs -o mode=755 tmpfs /dev/net && mknod -m 666 /dev/net/tun c 10 200"
    return [
        "unshare", "--mount", "--propagation", "private",
        "sh", "-c", f'{tun} && exec "$@"', "sh",
        "setpriv", "--reuid", str(pw.pw_uid), "--regid", str(pw.pw_gid), "--clear-groups",
        "--inh-caps", f"-all,{caps}", "--ambient-caps", f"-all,{caps}",
        "--bounding-set", f"-all,{caps}", "--no-new-privs",
        "--", *shlex.split(d["ExecStart"].replace("%i", instance)),
    ]  # fmt: skip


def _capabilities(pid: int) -> tuple[int, str]:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(status["Uid"].split()[1]), status["CapEff"].strip()


@pytest.mark.netns
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_make_install_then_a_tunnel_as_an_unprivileged_user(wheel, topo, transport):
    """Fake TCP too: its raw sockets need no more than the units' CAP_NET_RAW."""
    base = Path(tempfile.mkdtemp(prefix="kcpvpn-install-", dir="/var/tmp"))
    try:
        _install_and_run(wheel, topo, base, tcp=transport == "tcp")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _install_and_run(wheel: Path, topo, base: Path, tcp: bool) -> None:
    base.chmod(0o755)  # the daemon's user must reach the virtualenv
    paths = {
        "PREFIX": base / "opt",
        "BINDIR": base / "bin",
        "UNITDIR": base / "units",
        "CONFDIR": base / "etc",
    }
    paths["UNITDIR"].mkdir()
    env = dict(
        os.environ,
        **{k: str(v) for k, v in paths.items()},
        DAEMON_USER=USER,
        CREATE_USER="no",
    )
    make = ["make", "--no-print-directory", "-C", str(ROOT)]
    r = subprocess.run(
        [*make, "install", f"WHEEL={wheel}"], env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout + r.stderr
    kcpvpn = paths["BINDIR"] / "kcpvpn"
    assert kcpvpn.resolve() == (paths["PREFIX"] / "bin" / "kcpvpn").resolve()
    units = {u.name: u for u in paths["UNITDIR"].iterdir()}
    assert sorted(units) == ["kcpvpn-client@.service", "kcpvpn-server@.service"]
    server_unit, client_unit = units["kcpvpn-server@.service"], units["kcpvpn-client@.service"]
    assert directives(server_unit)["ExecStart"] == (
        f"{kcpvpn} server --config {paths['CONFDIR']}/%i.toml"
    )
    assert directives(server_unit)["User"] == USER

    # Configuration as the operations doc says: the daemon's user owns it, mode 600.
    pw = pwd.getpwnam(USER)
    run = base / "run"
    run.mkdir()
    os.chown(run, pw.pw_uid, pw.pw_gid)  # RuntimeDirectory= does this under systemd
    conf = paths["CONFDIR"]
    secret = "installed-and-unprivileged"
    transport = "tcp = true\n" if tcp else ""
    (conf / "hq.toml").write_text(
        f'port = 4000\nsecret = "{secret}"\nlocal-ip = "192.168.88.1"\n'
        f'assignable-ips = "192.168.88.0/24"\nstatus-socket = "{run}/server.sock"\n' + transport
    )
    (conf / "site.toml").write_text(
        f'ip = "{topo.server.address}"\nport = 4000\nsecret = "{secret}"\n'
        f'client-id = "site-1"\nstatus-socket = "{run}/client.sock"\n' + transport
    )
    for f in conf.glob("*.toml"):
        os.chown(f, pw.pw_uid, pw.pw_gid)
        f.chmod(0o600)

    srv = topo.server.popen(_setpriv(server_unit, "hq"), name="kcpvpn-server")
    status_when(f"{run}/server.sock", lambda d: d["mode"] == "server", timeout=30)
    cli = topo.client(1).popen(_setpriv(client_unit, "site"), name="kcpvpn-client")
    doc = status_when(f"{run}/client.sock", lambda d: d["state"] == "connected", timeout=30)
    assert doc["ip"] == "192.168.88.2"
    ping(topo.client(1), "192.168.88.1", count=5)
    ping(topo.server, "192.168.88.2", count=3)
    if tcp:  # the tunnel ran over fake TCP, not UDP
        ep = status_when(f"{run}/server.sock", lambda d: True)["endpoint"]
        assert ep["tcp_syns_in"] >= 1, ep
    # Really unprivileged: the user's uid, and only the units' two capabilities.
    for proc in (srv, cli):
        assert _capabilities(proc.pid) == (pw.pw_uid, "0000000000003000"), proc.log()
    r = subprocess.run(
        [str(kcpvpn), "status", "--socket", f"{run}/server.sock"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0 and "site-1" in r.stdout, r.stdout + r.stderr
    assert cli.stop() == 0, cli.log()
    assert srv.stop() == 0, srv.log()
    assert "stopped (exit status 0)" in srv.log()

    r = subprocess.run([*make, "uninstall"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not paths["PREFIX"].exists() and not kcpvpn.is_symlink()
    assert list(paths["UNITDIR"].iterdir()) == []
    assert (conf / "hq.toml").exists(), "configuration (secrets) stays"
    assert f"kept {conf}" in r.stdout
