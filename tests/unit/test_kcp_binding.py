"""The KCP binding (kcpvpn._engine.testing.Kcp): two endpoints exchanging datagrams
over a simulated lossy link with a simulated clock, plus error handling."""

import random

import pytest

from kcpvpn import errors
from kcpvpn._engine import testing as e


def run_link(a, b, messages, *, loss, seed, mode_flush, max_ms=600_000):
    """Sends `messages` a→b over a link dropping `loss` of datagrams both ways
    (20 ms one way, some reordering). Returns what b received."""
    rng = random.Random(seed)
    in_flight = []  # (deliver_at, seq, dst, datagram)
    seq = 0
    got = []
    queue = list(messages)
    now = 0

    def ship(src_to_dst, datagrams):
        nonlocal seq
        for d in datagrams:
            if rng.random() < loss:
                continue
            seq += 1
            in_flight.append((now + 20 + rng.randrange(10), seq, src_to_dst, d))

    while now < max_ms:
        in_flight.sort()
        while in_flight and in_flight[0][0] <= now:
            _, _, dst, d = in_flight.pop(0)
            (b if dst == "b" else a).input(d, now)
            if mode_flush:
                ship("a" if dst == "b" else "b", (b if dst == "b" else a).flush(now))
        while (m := b.recv()) is not None:
            got.append(m)
        while queue and a.wait_snd() < 128:
            a.send(queue.pop(0))
        ship("b", a.update(now))
        ship("a", b.update(now))
        if len(got) == len(messages) and a.wait_snd() == 0:
            return got
        nxt = min([a.check(now) - now, b.check(now) - now] + [t - now for t, *_ in in_flight])
        now += max(1, nxt)
    raise AssertionError(f"only {len(got)}/{len(messages)} delivered by {max_ms} ms")


@pytest.mark.parametrize("mode", ["normal", "fast", "fast2", "fast3"])
@pytest.mark.parametrize("loss", [0.0, 0.15])
def test_lossy_exchange_delivers_every_message_in_order(mode, loss):
    rng = random.Random(42)
    msgs = [rng.randbytes(rng.choice([1, 60, 1300, 1400, 4000, 9000])) for _ in range(120)]
    a, b = e.Kcp(0xABCD, mode, mtu=1350), e.Kcp(0xABCD, mode, mtu=1350)
    got = run_link(a, b, msgs, loss=loss, seed=7, mode_flush=(mode in ("fast", "fast3")))
    assert got == msgs
    s = a.stats()
    assert s["messages_sent"] == 120 and b.stats()["messages_recv"] == 120
    if loss:
        assert s["retransmits"] + s["fast_retransmits"] > 0
    assert s["srtt"] > 0 and s["rto"] >= (30 if mode in ("fast2", "fast3") else 100)
    assert not a.is_dead()


def test_flush_on_demand_returns_datagrams_at_once():
    a, b = e.Kcp(5), e.Kcp(5)
    a.send(b"ping")
    (d,) = a.flush(0)
    assert len(d) == 24 + 4 and e.Kcp.conv_of(d) == 5
    assert d[4] == 81  # push
    b.input(d, 1)
    assert b.peek_size() == 4 and b.recv() == b"ping" and b.recv() is None
    (ack,) = b.flush(1)
    assert ack[4] == 82
    a.input(ack, 30)
    assert a.wait_snd() == 0 and a.stats()["srtt"] == 30


def test_dead_link_detected_when_everything_is_dropped():
    a = e.Kcp(1, "fast3", dead_link=4)
    a.send(b"x")
    now = 0
    while not a.is_dead() and now < 100_000:
        a.update(now)  # every datagram is lost
        now = max(a.check(now), now + 1)
    assert a.is_dead()
    assert a.stats()["segments_sent"] == 4


def test_manual_mode_and_overrides():
    k = e.Kcp(1, "manual", nodelay=True, interval=15, resend=3, nc=False)
    assert k.conv == 1 and k.mss == 1376
    with pytest.raises(errors.InvalidParameter, match="all four"):
        e.Kcp(1, "manual", nodelay=True)
    with pytest.raises(errors.InvalidParameter, match='unknown KCP mode "turbo"'):
        e.Kcp(1, "turbo")
    with pytest.raises(errors.InvalidParameter, match="mtu=20 is out of range"):
        e.Kcp(1, mtu=20)
    with pytest.raises(errors.InvalidParameter, match="conv=-1"):
        e.Kcp(-1)
    assert e.Kcp(1, "fast", rcvwnd=128).max_message == 128 * 1376


def test_errors_are_value_errors_with_reasons():
    a, b = e.Kcp(1), e.Kcp(2)
    with pytest.raises(errors.InvalidParameter, match="larger than"):
        a.send(bytes(a.max_message + 1))
    a.send(b"hello")
    (d,) = a.flush(0)
    with pytest.raises(errors.Malformed, match="conversation"):
        b.input(d, 0)
    with pytest.raises(errors.Truncated, match="truncated"):
        e.Kcp(1).input(d[:27], 0)
    with pytest.raises(errors.Malformed, match="unknown KCP command"):
        e.Kcp(1).input(d[:4] + b"\x00" + d[5:], 0)
    assert b.stats()["input_errors"] == 1
    assert e.Kcp.conv_of(b"short") is None


def test_time_wraps_like_the_reference():
    # Python clocks exceed 32 bits: times are taken modulo 2**32.
    a, b = e.Kcp(9), e.Kcp(9)
    t = 2**32 - 10
    a.send(b"across the wrap")
    for d in a.flush(t):
        b.input(d, t + 20)
    for d in b.flush(t + 20):
        a.input(d, t + 40)
    assert b.recv() == b"across the wrap"
    assert a.wait_snd() == 0 and a.stats()["srtt"] == 40
    assert (a.check(t + 40) - (t + 40)) % 2**32 <= 30
