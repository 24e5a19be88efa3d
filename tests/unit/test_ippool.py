"""The server's address pool: CIDR and ranges, IPv4 and IPv6, exclusions,
exhaustion, client-chosen addresses and giving addresses back."""

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kcpvpn.ippool import IpPool, NoPool, PoolError, PoolExhausted, parse_pool_spec


def drain(pool: IpPool) -> list[str]:
    out = []
    while True:
        try:
            out.append(pool.allocate())
        except PoolExhausted:
            return out


# -- parsing ----------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, first, last",
    [
        ("192.168.0.0/24", "192.168.0.0", "192.168.0.255"),
        ("192.168.0.2-192.168.0.254", "192.168.0.2", "192.168.0.254"),
        (" 10.0.0.1 - 10.0.0.3 ", "10.0.0.1", "10.0.0.3"),
        ("10.0.0.7", "10.0.0.7", "10.0.0.7"),
        ("fd00::/120", "fd00::", "fd00::ff"),
        ("fd00::10-fd00::20", "fd00::10", "fd00::20"),
    ],
)
def test_parse_accepts_cidr_range_and_single(spec, first, last):
    r = parse_pool_spec(spec)
    assert r.address(r.first) == first
    assert r.address(r.last) == last


@pytest.mark.parametrize(
    "spec, words",
    [
        ("10.0.0.5-10.0.0.1", ["backwards", "10.0.0.1-10.0.0.5"]),
        ("10.0.0.1-fd00::1", ["mixes IPv4 and IPv6"]),
        ("192.168.0.5/24", ["host bits", "192.168.0.0/24"]),
        ("10.0.0.0/33", ["not a valid CIDR"]),
        ("banana", ["neither a CIDR nor a range"]),
        ("10.0.0.1-10.0.0.2-10.0.0.3", ["not a range"]),
        ("10.0.0.1-10.0.0.300", ["not an IPv4 or IPv6 address"]),
        ("", ["empty"]),
    ],
)
def test_parse_refuses_with_a_reason(spec, words):
    with pytest.raises(ValueError) as e:
        parse_pool_spec(spec)
    for w in words:
        assert w in str(e.value)


# -- allocation ----------------------------------------------------------------


def test_tun_cidr_skips_network_and_broadcast():
    pool = IpPool("192.168.88.0/29", tun_mode=True)
    got = drain(pool)
    assert got == [f"192.168.88.{i}" for i in range(1, 7)]
    assert pool.size == 6


def test_tap_cidr_is_used_as_written():
    pool = IpPool("192.168.88.0/30", tun_mode=False)
    assert drain(pool) == [f"192.168.88.{i}" for i in range(4)]


def test_tun_range_is_used_as_written_even_with_network_and_broadcast():
    pool = IpPool("10.1.0.255-10.1.1.0", tun_mode=True)
    assert drain(pool) == ["10.1.0.255", "10.1.1.0"]


@pytest.mark.parametrize("spec, n", [("10.0.0.0/31", 2), ("10.0.0.0/32", 1), ("fd00::/127", 2)])
def test_tiny_cidrs_have_no_network_or_broadcast_to_skip(spec, n):
    assert len(drain(IpPool(spec, tun_mode=True))) == n


def test_local_ip_inside_pool_is_taken_out():
    pool = IpPool("192.168.88.0/24", exclude=["192.168.88.1"], tun_mode=True)
    assert pool.allocate() == "192.168.88.2"
    assert pool.size == 253
    assert "server's own address" in pool.reserve("192.168.88.1")


def test_local_ip_outside_pool_changes_nothing():
    pool = IpPool("10.0.0.0/30", exclude=["192.168.1.1", None], tun_mode=True)
    assert drain(pool) == ["10.0.0.1", "10.0.0.2"]


def test_original_readme_example_local_is_network_address():
    # The original README: --local-ip 192.168.88.0 --assignable-ips 192.168.88.0/24
    pool = IpPool("192.168.88.0/24", exclude=["192.168.88.0"], tun_mode=True)
    got = drain(pool)
    assert got[0] == "192.168.88.1" and got[-1] == "192.168.88.254" and len(got) == 254


def test_exhaustion_says_so_and_release_refills_lowest_first():
    pool = IpPool("10.0.0.0/29", tun_mode=True)
    got = drain(pool)
    with pytest.raises(PoolExhausted) as e:
        pool.allocate()
    assert "exhausted" in str(e.value) and "10.0.0.0/29" in str(e.value)
    pool.release("10.0.0.5")
    pool.release("10.0.0.2")
    assert pool.allocate() == "10.0.0.2"
    assert pool.allocate() == "10.0.0.5"
    with pytest.raises(PoolExhausted):
        pool.allocate()
    assert pool.in_use == len(got)


def test_double_release_does_not_hand_an_address_out_twice():
    pool = IpPool("10.0.0.1-10.0.0.3", tun_mode=True)
    a = pool.allocate()
    pool.release(a)
    pool.release(a)
    pool.release("10.0.0.3")  # never handed out
    pool.release("not an address")
    assert drain(pool) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


# -- client-chosen addresses ------------------------------------------------------


def test_reserve_ok_then_in_use_then_free_again():
    pool = IpPool("10.0.0.0/24", exclude=["10.0.0.1"], tun_mode=True)
    assert pool.reserve("10.0.0.50") is None
    assert "already in use" in pool.reserve("10.0.0.50")
    pool.release("10.0.0.50")
    assert pool.reserve("10.0.0.50") is None


@pytest.mark.parametrize(
    "ip, words",
    [
        ("10.0.1.1", ["outside", "10.0.0.0/24"]),
        ("fd00::1", ["outside"]),
        ("10.0.0.0", ["network address"]),
        ("10.0.0.255", ["broadcast address"]),
        ("10.0.0.1", ["server's own address"]),
        ("10.0.0.x", ["not an IPv4 or IPv6 address"]),
    ],
)
def test_reserve_refusals_say_why(ip, words):
    pool = IpPool("10.0.0.0/24", exclude=["10.0.0.1"], tun_mode=True)
    reason = pool.reserve(ip)
    assert reason is not None
    for w in words:
        assert w in reason


def test_allocate_skips_reserved_addresses_and_vice_versa():
    pool = IpPool("10.0.0.0/29", tun_mode=True)
    assert pool.reserve("10.0.0.1") is None
    assert pool.reserve("10.0.0.3") is None
    assert pool.allocate() == "10.0.0.2"
    assert pool.allocate() == "10.0.0.4"
    # A freed address below the high-water mark, then reserved by a client,
    # must not be handed out by allocate.
    pool.release("10.0.0.2")
    assert pool.reserve("10.0.0.2") is None
    assert pool.allocate() == "10.0.0.5"
    assert "in use" in pool.reserve("10.0.0.5")


# -- no pool -------------------------------------------------------------------


def test_no_pool_refuses_to_assign_with_advice():
    pool = IpPool(None)
    with pytest.raises(NoPool) as e:
        pool.allocate()
    assert "--local-ip" in str(e.value) and "--no-ip-configuration" in str(e.value)
    assert isinstance(e.value, PoolError)


def test_no_pool_accepts_any_free_address_of_either_family():
    pool = IpPool(None, exclude=["192.168.88.1"])
    assert pool.reserve("203.0.113.9") is None
    assert pool.reserve("2001:db8::9") is None
    assert pool.reserve("0.0.0.1") is None  # and ::1 is a different address
    assert pool.reserve("::1") is None
    assert "in use" in pool.reserve("203.0.113.9")
    assert "own address" in pool.reserve("192.168.88.1")
    pool.release("203.0.113.9")
    assert pool.reserve("203.0.113.9") is None


# -- IPv6 and size ---------------------------------------------------------------


def test_ipv6_cidr_skips_subnet_router_anycast_and_counts_right():
    pool = IpPool("fd00:1::/64", exclude=["fd00:1::1"], tun_mode=True)
    assert pool.allocate() == "fd00:1::2"
    assert pool.allocate() == "fd00:1::3"
    assert pool.size == 2**64 - 2
    assert "fd00:1::ffff" in pool
    assert "fd00:2::1" not in pool


def test_huge_ipv6_pool_is_never_materialised():
    # A /8 has 2**120 addresses: any per-address structure would never finish.
    pool = IpPool("fd00::/8", tun_mode=True)
    got = [pool.allocate() for _ in range(1000)]
    assert got[0] == "fd00::1" and got[-1] == "fd00::3e8"
    assert pool.reserve("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") is None
    assert pool.in_use == 1001


def test_ipv4_address_is_outside_an_ipv6_pool():
    pool = IpPool("::/96", tun_mode=False)
    assert "outside" in pool.reserve("0.0.0.5")


# -- model check -----------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["alloc", "reserve", "release"]), st.integers(0, 15)),
        max_size=60,
    ),
    tun=st.booleans(),
)
def test_pool_matches_a_simple_model(ops, tun):
    """Against a set-based model: allocate returns the lowest free address,
    never one in use or excluded; reserve and release behave as specified."""
    net = ipaddress.ip_network("10.9.8.0/28")
    local = "10.9.8.3"
    pool = IpPool(str(net), exclude=[local], tun_mode=tun)
    candidates = [str(a) for a in net]
    excluded = {local} | ({str(net[0]), str(net[-1])} if tun else set())
    used: set[str] = set()
    for op, i in ops:
        ip = candidates[i]
        if op == "alloc":
            free = [a for a in candidates if a not in used and a not in excluded]
            if free:
                got = pool.allocate()
                assert got == free[0]
                used.add(got)
            else:
                with pytest.raises(PoolExhausted):
                    pool.allocate()
        elif op == "reserve":
            reason = pool.reserve(ip)
            assert (reason is None) == (ip not in used and ip not in excluded)
            if reason is None:
                used.add(ip)
        else:
            pool.release(ip)
            used.discard(ip)
        assert pool.in_use == len(used)
