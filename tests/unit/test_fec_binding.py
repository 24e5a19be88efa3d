"""The FEC binding (kcpvpn._engine.testing.FecEncoder / FecDecoder): shards out,
datagrams back exactly once, losses within the parity budget repaired."""

import itertools
import random
import struct
import threading

import pytest

from kcpvpn import errors
from kcpvpn._engine import testing as e


def datagrams(n, size=200, start=0):
    return [
        struct.pack("<I", start + i) + bytes([(start + i) % 251]) * (size - 4) for i in range(n)
    ]


def encode(enc, dgrams, flush=False):
    shards = []
    for d in dgrams:
        shards.extend(enc.encode(d))
    if flush:
        shards.extend(enc.flush_partial())
    return shards


def feed(dec, shards):
    out = []
    for s in shards:
        out.extend(dec.input(s))
    return out


def test_wire_format_of_a_data_shard():
    enc = e.FecEncoder(10, 3)
    (shard,) = enc.encode(b"hello")
    assert shard == struct.pack("<IBBH", 0, 0xF1, 0, 5) + b"hello"
    assert e.FEC_HEADER_LEN == 6 and e.FEC_OVERHEAD == 8
    assert enc.has_partial()


def test_full_group_emits_parity_and_round_trips():
    enc, dec = e.FecEncoder(10, 3), e.FecDecoder(10, 3)
    data = datagrams(10)
    shards = encode(enc, data)
    assert len(shards) == 13
    assert [struct.unpack_from("<I", s)[0] for s in shards] == list(range(13))
    assert all(s[4] == 0xF2 and s[5] == 10 for s in shards[10:])
    assert feed(dec, shards) == data
    st = dec.stats()
    assert (st["data_received"], st["parity_received"], st["recovered"], st["stale"]) == (
        10,
        3,
        0,
        3,
    )


@pytest.mark.parametrize("lost", [1, 2, 3])
def test_every_loss_pattern_within_parity_is_repaired(lost):
    data = datagrams(10, size=300)
    shards = encode(e.FecEncoder(10, 3), data)
    for gone in itertools.combinations(range(13), lost):
        dec = e.FecDecoder(10, 3)
        got = feed(dec, [s for i, s in enumerate(shards) if i not in gone])
        assert sorted(got) == sorted(data), gone
        assert dec.stats()["recovered"] == sum(1 for i in gone if i < 10)


def test_too_many_losses_deliver_only_what_arrived():
    data = datagrams(10)
    shards = encode(e.FecEncoder(10, 3), data)
    dec = e.FecDecoder(10, 3)
    got = feed(dec, shards[4:])  # 4 data shards lost, 3 parity cannot repair that
    assert got == data[4:]
    assert dec.stats()["recovered"] == 0


def test_rapid_fec_partial_group_repairs_a_lost_datagram():
    enc = e.FecEncoder(10, 3)
    (data_shard,) = enc.encode(b"ping")
    parity = enc.flush_partial()
    # Before any loss report, one datagram is protected as if 10% were lost:
    # 3 parity shards (all four lost: 0.01%, within the 0.02% allowed).
    assert len(parity) == 3 and not enc.has_partial()
    assert all(p[5] == 1 for p in parity)  # "this group had 1 data shard"
    assert enc.flush_partial() == []
    dec = e.FecDecoder(10, 3)
    assert dec.input(parity[1]) == [b"ping"]
    assert feed(dec, [data_shard] + parity) == []  # not delivered twice
    assert enc.stats()["partial_groups"] == 1


def test_random_losses_and_reordering_deliver_each_datagram_once():
    rng = random.Random(7)
    enc, dec = e.FecEncoder(10, 3), e.FecDecoder(10, 3, max_open_groups=16)
    data = datagrams(500, size=120)
    wire = []
    for i in range(0, 500, 10):
        group = encode(enc, data[i : i + 10])
        for _ in range(rng.randint(0, 3)):
            group.pop(rng.randrange(len(group)))
        wire.extend(group)
    for i in range(len(wire)):  # local reordering
        j = min(len(wire) - 1, i + rng.randrange(8))
        wire[i], wire[j] = wire[j], wire[i]
    got = feed(dec, wire)
    stale = dec.stats()["stale"]
    # Replays: recent shards are duplicates, ones of long-gone groups stale.
    assert feed(dec, wire[-20:] + wire[:50]) == []
    assert sorted(got) == sorted(data)
    assert dec.stats()["duplicates"] == 20
    assert dec.stats()["stale"] == stale + 50


def test_malformed_shards_raise_value_error_and_are_counted():
    dec = e.FecDecoder(10, 3)
    bad = [
        b"",
        b"\x00" * 5,
        struct.pack("<IBBH", 0, 0x51, 0, 0),
        struct.pack("<IBBH", 0, 0xF1, 0, 9) + b"x",
    ]
    for b in bad:
        with pytest.raises(errors.PacketError, match="FEC"):
            dec.input(b)
    assert dec.stats()["malformed"] == len(bad)


@pytest.mark.parametrize("ds,ps", [(0, 3), (10, 0), (250, 10)])
def test_bad_shard_counts_are_refused(ds, ps):
    with pytest.raises(errors.InvalidParameter, match="data shards"):
        e.FecEncoder(ds, ps)
    with pytest.raises(errors.InvalidParameter, match="data shards"):
        e.FecDecoder(ds, ps)


def test_oversize_datagram_and_bad_window_are_refused():
    with pytest.raises(errors.InvalidParameter, match="max_datagram"):
        e.FecEncoder(10, 3, max_datagram=100).encode(b"x" * 101)
    with pytest.raises(errors.InvalidParameter, match="max_open_groups"):
        e.FecDecoder(10, 3, max_open_groups=0)


def test_shared_between_threads():
    enc = e.FecEncoder(4, 2)
    out = []
    lock = threading.Lock()

    def work(k):
        for d in datagrams(100, size=50, start=k * 1000):
            shards = enc.encode(d)
            with lock:
                out.extend(shards)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert enc.stats()["data_shards"] == 400 and len(out) == 600
    got = feed(e.FecDecoder(4, 2), out)
    assert sorted(got) == sorted(sum((datagrams(100, 50, k * 1000) for k in range(4)), []))
