"""Issue "Tunnel end to end": one server, one client, TUN mode, in namespaces
joined by the lab's (unimpaired) emulated link. Real daemons, real devices."""

from __future__ import annotations

import signal
import time

import pytest

from kcpvpn_lab import iperf
from kcpvpn_lab.vpn import (
    client_address,
    connected_since,
    daemon_status,
    ping,
    read_status,
    start_client,
    start_server,
    status_path,
    wait_connected_again,
)

pytestmark = pytest.mark.netns

SERVER_FLAGS = ("--local-ip", "192.168.88.1", "--assignable-ips", "192.168.88.0/24")


def links(host) -> list[str]:
    return host.links()


@pytest.fixture
def tunnel(topo):
    srv = start_server(topo.server, *SERVER_FLAGS)
    cli = start_client(topo.client(1), topo.server)
    return topo, srv, cli


def test_ping_both_ways(tunnel):
    topo, srv, cli = tunnel
    ip = client_address(cli)
    assert ip == "192.168.88.2", "first address of the pool after network and --local-ip"
    assert "kvs0" in links(topo.server)
    assert "kvc0" in links(topo.client(1))
    ping(topo.client(1), "192.168.88.1")
    ping(topo.server, ip)


def _iperf(client_host, server_host, address: str, reverse: bool) -> dict:
    iperf.serve(server_host, "192.168.88.1")
    args = ["iperf3", "-c", address, "-t", "2", "-J"]
    if reverse:
        args.append("-R")
    r = client_host.run(args, timeout=40, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return iperf.report(r.stdout)


@pytest.mark.parametrize("reverse", [False, True], ids=["client-to-server", "server-to-client"])
def test_iperf3_tcp(tunnel, reverse):
    topo, srv, cli = tunnel
    res = _iperf(topo.client(1), topo.server, "192.168.88.1", reverse)
    received = res["end"]["sum_received"]["bytes"]
    assert received > 1_000_000, f"only {received} bytes crossed the tunnel"
    # Bulk data leaves in runs of equal-size datagrams: the sender batches them with UDP GSO.
    sender = srv if reverse else cli
    endpoint = read_status(status_path(sender))["endpoint"]
    assert endpoint["gso_messages"] > 0, endpoint


def test_jumbo_mtu_over_small_udp_mtu(topo):
    start_server(topo.server, *SERVER_FLAGS, "--vni-mtu", "9000", "--udp-mtu", "1350")
    start_client(topo.client(1), topo.server, "--vni-mtu", "9000", "--udp-mtu", "1350")
    # 8972 bytes of ICMP payload = a 9000-byte IP packet, never fragmented (-M do).
    ping(topo.client(1), "192.168.88.1", size=8972, extra=["-M", "do"])
    ping(topo.server, "192.168.88.2", size=8000, extra=["-M", "do"])


def test_mtu_is_the_smaller_of_both_sides(topo):
    start_server(topo.server, *SERVER_FLAGS, "--vni-mtu", "1400")
    start_client(topo.client(1), topo.server, "--vni-mtu", "9000")
    with topo.client(1).ipr() as ipr:
        mtu = ipr.get_links(ifname="kvc0")[0].get_attr("IFLA_MTU")
    assert mtu == 1400
    ping(topo.client(1), "192.168.88.1", size=1372, extra=["-M", "do"])


def test_wrong_key_is_reported_and_leaves_no_state(topo):
    srv = start_server(topo.server, *SERVER_FLAGS)
    cli = start_client(topo.client(1), topo.server, secret="not-the-servers-secret", wait=False)
    assert cli.wait(timeout=30) != 0
    assert "authentication failed" in cli.log(), cli.log()
    assert not any(n.startswith("kvs") for n in links(topo.server))
    assert not any(n.startswith("kvc") for n in links(topo.client(1)))
    assert srv.alive()
    assert "connected" not in srv.log().replace("disconnected", "")


def test_auto_reconnect_after_server_restart(topo):
    srv = start_server(topo.server, *SERVER_FLAGS, "--keepalive", "1")
    cli = start_client(topo.client(1), topo.server, "--auto-reconnect", "--keepalive", "1")
    ping(topo.client(1), "192.168.88.1")
    since = connected_since(cli)
    assert srv.stop() == 0
    srv2 = start_server(topo.server, *SERVER_FLAGS, "--keepalive", "1")
    wait_connected_again(cli, since, timeout=40)
    ping(topo.client(1), "192.168.88.1", count=5)
    assert srv2.alive() and cli.alive()


def test_client_address_change_keeps_the_session(tunnel):
    topo, srv, cli = tunnel
    c = topo.client(1)
    ping(c, "192.168.88.1")
    since = connected_since(cli)
    old = str(c.address)
    new = old.rsplit(".", 1)[0] + ".200"
    # The client's underlay address changes (a new uplink, or NAT rebinding):
    # the socket keeps its port. (Old address removed first: removing a primary
    # address also removes secondaries of its subnet.)
    c.run(["ip", "addr", "del", f"{old}/24", "dev", c.ifname])
    c.run(["ip", "addr", "add", f"{new}/24", "dev", c.ifname])
    ping(c, "192.168.88.1", count=5)
    assert srv.wait_for_log(f"moved to {new}", timeout=5), srv.log()
    assert connected_since(cli) == since, "the session must go on, not reconnect"


def test_sigterm_removes_interfaces(tunnel):
    topo, srv, cli = tunnel
    assert cli.stop() == 0
    assert "kvc0" not in links(topo.client(1))
    # The server hears the client's goodbye and releases its interface at once.
    deadline = time.monotonic() + 5
    while "kvs0" in links(topo.server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "kvs0" not in links(topo.server)
    srv.send_signal(signal.SIGTERM)
    assert srv.wait(timeout=10) == 0


def _syn_mss_across(topo, *flags: str) -> int:
    """Sends a SYN offering MSS 1460 into the client's tunnel (MTU 1400) and
    returns the MSS it carries when it comes out of the server's interface."""
    import socket

    from scapy.layers.inet import IP, TCP

    from kcpvpn_lab.probes import Capture

    start_server(topo.server, *SERVER_FLAGS, "--vni-mtu", "1400", *flags)
    cli = start_client(topo.client(1), topo.server, "--vni-mtu", "1400", *flags)
    syn = IP(src=client_address(cli), dst="192.168.88.1") / TCP(
        sport=40000, dport=9, flags="S", options=[("NOP", None), ("MSS", 1460)]
    )
    with Capture(topo.server, "kvs0") as cap:
        raw = topo.client(1).socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        try:
            raw.sendto(bytes(syn), ("192.168.88.1", 0))
        finally:
            raw.close()
        got = cap.wait_for(lambda d: d[:1] == b"\x45" and IP(d).haslayer(TCP), timeout=5)
    assert got is not None, "the SYN did not come out of the server's interface"
    pkt = IP(got)
    # The checksum must still be right after the rewrite.
    fixed = IP(bytes(pkt))
    del fixed[TCP].chksum
    assert IP(bytes(fixed))[TCP].chksum == pkt[TCP].chksum, "TCP checksum broken"
    return dict(pkt[TCP].options)["MSS"]


def test_mss_clamped_to_one_kcp_segment(topo):
    # --udp-mtu 1350: a KCP segment carries 1350 - 16 (header) - 16 (tag)
    # - 8 (FEC) - 24 (KCP) = 1286 bytes, of which the message's per-flow order
    # link takes 2 (protocol 3.5); below the 1400-byte MTU: a TCP segment that
    # fits it travels as one datagram.
    assert _syn_mss_across(topo) == 1286 - 2 - 40


def test_no_mss_clamp_leaves_syn_alone(topo):
    assert _syn_mss_across(topo, "--no-mss-clamp") == 1460


def test_port_in_use_is_a_clear_error(topo):
    first = start_server(topo.server, *SERVER_FLAGS)
    second = start_server(topo.server, *SERVER_FLAGS, wait=False)
    assert second.wait(timeout=20) == 1
    assert "cannot listen on" in second.log() and "Traceback" not in second.log(), second.log()
    assert first.alive()


@pytest.mark.parametrize("chosen", [None, "192.168.88.77"], ids=["pool", "client-chosen"])
def test_repeated_handshake_from_one_socket_keeps_one_session(topo, chosen):
    """When the server's answer is lost, the client tries again with a new
    initiation from the same socket: the server must end up with one session,
    not two interfaces and two addresses, and the client keeps its address
    (the one the pool gave it, or the one it chose)."""
    import secrets
    import socket

    from kcpvpn._engine import IP_MODES, testing
    from kcpvpn_lab.vpn import SECRET

    srv = start_server(topo.server, *SERVER_FLAGS)
    psk = testing.stretch_secret(SECRET.encode())
    payload = {
        "client_id": "",
        "mtu": 1500,
        "ip_mode": IP_MODES["client" if chosen else "server"],
        "ip": chosen,
        "fec": (10, 3),
        "cipher": "aes",
    }
    sock = topo.client(1).socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.settimeout(5)
        answers = []
        for _ in range(2):  # the first answer is "lost": read but ignored
            ini = testing.HandshakeInitiator(
                psk, payload, secrets.randbits(31) + 1, int(time.time() * 1000)
            )
            sock.sendto(ini.message, (str(topo.server.address), 4000))
            out = None
            while out is None:  # skip the old session's close message
                data, _ = sock.recvfrom(2048)
                out = ini.read_response(data)
            answers.append(out)
        assert all(a["accepted"] for a in answers), [a["reason"] for a in answers]
        want = chosen or "192.168.88.2"
        assert answers[0]["config"]["client_ip"] == answers[1]["config"]["client_ip"] == want
        # Nothing is set up before the client proves it has the keys.
        assert not [n for n in links(topo.server) if n.startswith("kvs")]
        # Its first datagram (a keepalive under the second answer's keys).
        last = answers[1]
        sealer = testing.Sealer("aes", last["send_key"], last["server_session_id"])
        sock.sendto(sealer.seal(b""), (str(topo.server.address), 4000))
    finally:
        sock.close()
    # One session, one interface; the first answer's session is forgotten.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        kvs = [n for n in links(topo.server) if n.startswith("kvs")]
        if len(kvs) == 1 and daemon_status(srv)["unconfirmed"] == 0:
            break
        time.sleep(0.1)
    assert len(kvs) == 1, kvs
    doc = daemon_status(srv)
    assert doc["unconfirmed"] == 0
    assert [c["ip"] for c in doc["clients"]] == [want]
    assert "forgetting its unconfirmed session" in srv.log()
