"""The crypto binding (kcpvpn._engine.testing): packet protection, secret stretching
and the handshake, driven from Python exactly as bytes in, bytes out."""

import threading

import pytest

from kcpvpn import errors
from kcpvpn._engine import testing as e

KEY = bytes(range(32))
PSK = bytes([0x42]) * 32
NOW = 1_750_000_000_000
KINDS = ["aes", "aes-128", "chacha20", "none"]


@pytest.mark.parametrize("kind", KINDS)
def test_seal_open_round_trip(kind):
    s, o = e.Sealer(kind, KEY, 0x01020304), e.Opener(kind, KEY)
    for i in range(3):
        msg = bytes([i]) * (100 + i)
        d = s.seal(msg)
        assert len(d) == len(msg) + 16 + 16  # header and tag (`none` is authenticated too)
        assert e.peek_header(d) == (3, 0x01020304, i)
        if kind != "none":
            assert msg not in d
        assert o.open(d) == msg
    assert s.counter == 3
    assert s.stats()["sealed"] == 3 and o.stats()["opened"] == 3


def test_close_message_type():
    s, o = e.Sealer("aes", KEY, 1), e.Opener("aes", KEY)
    assert o.open_message(s.seal(b"", msg_type=4)) == (4, 0, b"")
    with pytest.raises(errors.Malformed, match="message type"):
        s.seal(b"", msg_type=1)


def test_replay_is_refused():
    s, o = e.Sealer("chacha20", KEY, 1), e.Opener("chacha20", KEY)
    d = s.seal(b"once")
    assert o.open(d) == b"once"
    with pytest.raises(errors.Replayed, match="replayed"):
        o.open(d)
    assert o.stats()["replays"] == 1


def test_tampering_and_wrong_key_fail_authentication():
    s = e.Sealer("aes", KEY, 1)
    d = bytearray(s.seal(b"payload"))
    d[20] ^= 1
    o = e.Opener("aes", KEY)
    with pytest.raises(errors.AuthenticationFailed, match="authentication failed"):
        o.open(bytes(d))
    with pytest.raises(errors.AuthenticationFailed, match="authentication failed"):
        e.Opener("aes", bytes(32)).open(s.seal(b"x"))
    assert o.stats()["auth_failures"] == 1


def test_truncated_and_bad_type():
    o = e.Opener("aes", KEY)
    with pytest.raises(errors.Truncated, match="truncated"):
        o.open(b"\x03" + bytes(20))
    with pytest.raises(errors.Malformed, match="message type"):
        o.open(b"\x09" + bytes(40))
    assert e.peek_header(b"\x03" + bytes(10)) is None
    assert e.peek_header(b"\x01" + bytes(40)) is None


def test_cipher_names():
    assert e.cipher_name("AES") == "aes"
    with pytest.raises(errors.UnsupportedCipher, match="no longer supported.*chacha20"):
        e.Sealer("salsa20", KEY, 1)
    with pytest.raises(errors.UnsupportedCipher, match="unknown cipher"):
        e.Opener("rot13", KEY)
    with pytest.raises(errors.InvalidParameter, match="32 bytes"):
        e.Sealer("aes", b"short", 1)


def test_stretch_secret_known_answer_and_releases_gil():
    # Same value as the reference C library's argon2id_hash_raw(t=3, m=65536,
    # p=1, b"correct horse", salt b"kcpvpn/psk/v2/kcpvpn" (the default network
    # name), 32 bytes).
    ticks = []
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            ticks.append(1)
            stop.wait(0.001)

    t = threading.Thread(target=spin)
    t.start()
    try:
        k = e.stretch_secret(b"correct horse")
    finally:
        stop.set()
        t.join()
    assert k.hex() == "27e7d409f231220b73163398bc4c7db04b5ad68fd980b0259b9baeb5cb42e2c7"
    assert len(ticks) > 1, "another Python thread must run while stretching"


def wishes(**kw):
    d = {"client_id": "alice", "mtu": 1400, "ip_mode": 0, "fec": (10, 3), "cipher": "aes"}
    d.update(kw)
    return d


CONFIG = {
    "tap": False,
    "mtu": 1400,
    "full_frame_mtu": 1400,
    "server_ip": "10.8.0.1",
    "client_ip": "10.8.0.2",
    "prefixlen": 24,
    "fec": (10, 3),
    "udp_mtu": 1300,
    "keepalive": 15,
}


def test_handshake_happy_path_and_keys_protect_packets():
    ini = e.HandshakeInitiator(PSK, wishes(), 77, NOW)
    resp = e.HandshakeResponder(PSK)
    req, pending = resp.read_init(ini.message, NOW + 500)
    assert req == {
        "client_id": "alice",
        "mtu": 1400,
        "ip_mode": 0,
        "ip": None,
        "fec": (10, 3),
        "cipher": "aes",
        "udp_mtu": 1350,
        "keepalive": 10,
        "sender_id": 77,
        "timestamp_ms": NOW,
    }
    assert pending.sender_id == 77
    m2, skeys = pending.accept(CONFIG, 9001)
    assert len(ini.message) >= len(m2)
    out = ini.read_response(m2)
    assert out["accepted"] and out["reason"] == ""
    assert out["config"] == CONFIG
    assert out["server_session_id"] == 9001
    assert out["send_key"] == skeys["recv_key"] and out["recv_key"] == skeys["send_key"]
    d = e.Sealer("aes", out["send_key"], 9001).seal(b"hello")
    assert e.Opener("aes", skeys["recv_key"]).open(d) == b"hello"
    with pytest.raises(errors.AlreadyUsed, match="already answered"):
        pending.refuse("again")
    assert resp.stats()["requests"] == 1


def test_handshake_wrong_psk_both_ways():
    resp = e.HandshakeResponder(PSK)
    ini = e.HandshakeInitiator(bytes(32), wishes(), 1, NOW)
    with pytest.raises(errors.AuthenticationFailed, match="authentication failed"):
        resp.read_init(ini.message, NOW)
    assert resp.stats()["auth_failures"] == 1
    # The client with PSK gets an answer from a server with another key.
    mine = e.HandshakeInitiator(PSK, wishes(), 1, NOW)
    _, pending = e.HandshakeResponder(bytes(32)).read_init(ini.message, NOW)
    m2, _ = pending.accept(CONFIG, 2)
    with pytest.raises(errors.AuthenticationFailed, match="server does not share our secret"):
        mine.read_response(m2)


def test_handshake_replay_stale_and_refusal():
    resp = e.HandshakeResponder(PSK, max_age_ms=60_000)
    ini = e.HandshakeInitiator(PSK, wishes(ip_mode=1, ip="fd00::5"), 3, NOW)
    req, pending = resp.read_init(ini.message, NOW)
    assert req["ip"] == "fd00::5"
    with pytest.raises(errors.ReplayedHandshake, match="replayed"):
        resp.read_init(ini.message, NOW + 1)
    late = e.HandshakeInitiator(PSK, wishes(), 3, NOW)
    with pytest.raises(errors.StaleHandshake, match="clock"):
        resp.read_init(late.message, NOW + 61_000)
    out = ini.read_response(pending.refuse("address fd00::5 is taken"))
    assert out["accepted"] is False and out["reason"] == "address fd00::5 is taken"
    assert out["send_key"] is None
    st = resp.stats()
    assert (st["requests"], st["replayed"], st["stale"]) == (1, 1, 1)


def test_handshake_ignores_and_rejects_junk():
    ini = e.HandshakeInitiator(PSK, wishes(), 5, NOW)
    assert ini.read_response(b"") is None
    assert ini.read_response(b"\x03" + bytes(40)) is None
    with pytest.raises(errors.Truncated, match="truncated"):
        ini.read_response(b"\x02\x00\x00\x00")
    resp = e.HandshakeResponder(PSK)
    with pytest.raises(errors.Truncated, match="truncated"):
        resp.read_init(b"\x01" + bytes(10), NOW)
    with pytest.raises(errors.Malformed, match="larger"):
        resp.read_init(b"\x01" + bytes(5000), NOW)


def test_handshake_payload_validation():
    with pytest.raises(errors.InvalidParameter, match="client id"):
        e.HandshakeInitiator(PSK, wishes(client_id="has space"), 1, NOW)
    with pytest.raises(errors.InvalidParameter, match="unknown key"):
        e.HandshakeInitiator(PSK, wishes(mtu2=5), 1, NOW)
    with pytest.raises(errors.InvalidParameter, match="missing key"):
        e.HandshakeInitiator(PSK, {"client_id": "x"}, 1, NOW)
    with pytest.raises(errors.InvalidParameter, match="not an IP address"):
        e.HandshakeInitiator(PSK, wishes(ip_mode=1, ip="nope"), 1, NOW)
    ini = e.HandshakeInitiator(PSK, wishes(), 1, NOW)
    _, pending = e.HandshakeResponder(PSK).read_init(ini.message, NOW)
    with pytest.raises(errors.InvalidParameter, match="prefix length"):
        pending.accept(dict(CONFIG, prefixlen=40), 2)
