"""The server's pool of client addresses (`--assignable-ips`).

A pool is a CIDR (``192.168.0.0/24``, ``fd00::/64``) or an inclusive range
(``192.168.0.2-192.168.0.254``). Addresses are handled as integers and handed
out lowest-free-first without ever materialising the pool, so a /64 costs no
more memory than a /30: only addresses in use (and freed ones below the
high-water mark) are stored.
"""

from __future__ import annotations

import heapq
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class PoolError(Exception):
    """The pool cannot give an address; the message is meant for the client."""


class PoolExhausted(PoolError):
    pass


class NoPool(PoolError):
    pass


@dataclass(frozen=True)
class PoolRange:
    """A parsed `--assignable-ips`: first..last inclusive, as integers."""

    spec: str
    version: int
    first: int
    last: int
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None  # set for CIDR specs

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def address(self, value: int) -> str:
        cls = ipaddress.IPv4Address if self.version == 4 else ipaddress.IPv6Address
        return str(cls(value))


def parse_address(text: str) -> IPAddress:
    """An IPv4 or IPv6 address; ValueError with a readable message otherwise."""
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from None


def parse_pool_spec(spec: str) -> PoolRange:
    """Parses a CIDR or an ``a-b`` range. Raises ValueError saying what is
    wrong and what a correct value looks like."""
    text = spec.strip()
    example = "write a CIDR such as 192.168.0.0/24 or a range such as 192.168.0.2-192.168.0.254"
    if not text:
        raise ValueError(f"the address pool is empty; {example}")
    # IPv6 addresses never contain '-', so a dash always separates a range.
    if "-" in text:
        parts = text.split("-")
        if len(parts) != 2:
            raise ValueError(f"{spec!r} is not a range: {example}")
        try:
            a, b = parse_address(parts[0]), parse_address(parts[1])
        except ValueError as e:
            raise ValueError(f"{spec!r}: {e}; {example}") from None
        if a.version != b.version:
            raise ValueError(
                f"{spec!r} mixes IPv{a.version} and IPv{b.version}: both ends of a range "
                "must be of the same family"
            )
        if int(a) > int(b):
            raise ValueError(f"{spec!r} runs backwards: write the lower address first ({b}-{a})")
        return PoolRange(text, a.version, int(a), int(b), None)
    if "/" in text:
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError as e:
            if "host bits set" in str(e):
                fixed = ipaddress.ip_network(text, strict=False)
                raise ValueError(
                    f"{spec!r} has host bits set: the network is {fixed} "
                    f"(or use a range such as {fixed[0]}-{fixed[-1]})"
                ) from None
            raise ValueError(f"{spec!r} is not a valid CIDR: {example}") from None
        return PoolRange(text, net.version, int(net.network_address), int(net[-1]), net)
    # A bare address is a one-address pool.
    try:
        a = parse_address(text)
    except ValueError:
        raise ValueError(f"{spec!r} is neither a CIDR nor a range: {example}") from None
    return PoolRange(text, a.version, int(a), int(a), None)


class IpPool:
    """Hands out and takes back client addresses.

    - ``spec`` None: no pool. ``allocate`` refuses (clients must bring their
      own address); ``reserve`` accepts any address not already in use.
    - ``exclude``: addresses never handed out (the server's `--local-ip`).
    - ``tun_mode`` with a CIDR pool: the network address (and for IPv4 the
      broadcast address) are left out, as a host cannot use them; a range is
      taken as written, so ``10.0.0.0-10.0.0.255`` does hand out both ends.
      IPv4 /31 and /32 and IPv6 /127 and /128 have no such addresses.
    - ``keep``: addresses ``allocate`` never hands out but ``reserve``
      grants (identity mode's fixed peer addresses: kept free for their peer).
    """

    def __init__(
        self,
        spec: str | None,
        exclude: Iterable[str | None] = (),
        tun_mode: bool = True,
        keep: Iterable[str] = (),
    ) -> None:
        self.range = parse_pool_spec(spec) if spec else None
        self._excluded: dict[int, str] = {}  # address -> why it is never handed out
        self._used: set[int] = set()
        self._free_below: list[int] = []  # min-heap of freed addresses below _next
        self._kept: set[int] = {self._key(parse_address(ip)) for ip in keep}
        rng = self.range
        if rng is not None:
            self._next = rng.first  # lowest address never handed out yet
            net = rng.network
            tag = 0 if rng.version == 6 else 1 << 128
            if tun_mode and net is not None:
                if net.version == 4 and net.prefixlen <= 30:
                    self._excluded[rng.first | tag] = f"the network address of {net}"
                    self._excluded[rng.last | tag] = f"the broadcast address of {net}"
                elif net.version == 6 and net.prefixlen <= 126:
                    self._excluded[rng.first] = f"the subnet-router anycast address of {net}"
        for ip in exclude:
            if not ip:
                continue
            a = parse_address(ip)
            if rng is None or (a.version == rng.version and rng.first <= int(a) <= rng.last):
                self._excluded[self._key(a)] = "the server's own address"

    # -- queries ----------------------------------------------------------
    @staticmethod
    def _key(a: IPAddress) -> int:
        # Keep the families apart in the no-pool case (IPv4 0.0.0.1 != ::1).
        return int(a) if a.version == 6 else int(a) | (1 << 128)

    def _value(self, key: int) -> int:
        return key & ((1 << 128) - 1)

    @property
    def size(self) -> int:
        """How many addresses the pool can hand out (0 without a pool)."""
        if self.range is None:
            return 0
        inside = sum(1 for k in self._excluded if self._in_range_key(k))
        return self.range.size - inside

    @property
    def in_use(self) -> int:
        return len(self._used)

    def _in_range_key(self, key: int) -> bool:
        rng = self.range
        if rng is None:
            return False
        if (key >> 128 == 1) != (rng.version == 4):
            return False
        return rng.first <= self._value(key) <= rng.last

    def __contains__(self, ip: str) -> bool:
        try:
            return self._in_range_key(self._key(parse_address(ip)))
        except ValueError:
            return False

    def _describe(self) -> str:
        return self.range.spec if self.range else "(none)"

    # -- changes ----------------------------------------------------------
    def set_kept(self, keep: Iterable[str]) -> None:
        """Replaces the addresses kept for their peers (see ``keep``)."""
        self._kept = {self._key(parse_address(ip)) for ip in keep}

    def allocate(self) -> str:
        """The lowest free address, now in use. Raises NoPool or PoolExhausted."""
        rng = self.range
        if rng is None:
            raise NoPool(
                "the server has no address pool (--assignable-ips) to assign from; "
                "connect with --local-ip ADDRESS or --no-ip-configuration"
            )
        tag = 0 if rng.version == 6 else 1 << 128
        while self._free_below:
            v = heapq.heappop(self._free_below)
            if v | tag not in self._used and v | tag not in self._kept:
                # (entries go stale when reserved again)
                self._used.add(v | tag)
                return rng.address(v)
        while self._next <= rng.last:
            v = self._next
            self._next += 1
            key = v | tag
            if key in self._used or key in self._excluded or key in self._kept:
                continue
            self._used.add(key)
            return rng.address(v)
        raise PoolExhausted(
            f"the address pool {rng.spec} is exhausted ({self.in_use} addresses in use); "
            "try again when a client leaves, or ask the server's operator to widen --assignable-ips"
        )

    def reserve(self, ip: str) -> str | None:
        """Marks a client-chosen address as in use. Returns None when it is
        granted, else the reason for the refusal (meant for the client)."""
        try:
            a = parse_address(ip)
        except ValueError as e:
            return str(e)
        key = self._key(a)
        rng = self.range
        if rng is not None and not self._in_range_key(key):
            return f"{a} is outside the server's address pool {rng.spec}"
        if key in self._excluded:
            return f"{a} is {self._excluded[key]} and cannot be used by a client"
        if key in self._used:
            return f"{a} is already in use by another client"
        self._used.add(key)
        return None

    def release(self, ip: str) -> None:
        """Gives an address back; unknown or free addresses are ignored."""
        try:
            key = self._key(parse_address(ip))
        except ValueError:
            return
        if key not in self._used:
            return
        self._used.discard(key)
        rng = self.range
        if rng is not None and self._in_range_key(key) and self._value(key) < self._next:
            heapq.heappush(self._free_below, self._value(key))
