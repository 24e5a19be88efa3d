"""Identity mode's keys and peers, and the strength rule for the shared secret.

Keys are X25519, written as 44 characters of base64 like WireGuard's:
`kcpvpn genkey` prints a private key (and a fresh secret for KCPVPN_KEY),
`kcpvpn pubkey` the public key of a private key read on stdin. A server in
identity mode holds its private key and a list of peers (`[[peer]]` tables
in its --config file or in a --peers-file): each an allowed client's public
key with the client id and, optionally, the fixed tunnel address it gets.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import secrets
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _engine

KEY_LEN = 32
_KEY_HINT = "expected 44 characters of base64, as `kcpvpn genkey` and `kcpvpn pubkey` print"

# The shared secret is refused at start when it is weak (see secret_problem).
MIN_SECRET_LEN = 16
MIN_SECRET_DISTINCT = 8
# Runs of neighbouring keys or letters, either way round.
_SEQUENCES = (
    "abcdefghijklmnopqrstuvwxyz",
    "0123456789",
    "qwertyuiopasdfghjklzxcvbnm",
    "qwertzuiopasdfghjklyxcvbnm",
    "azertyuiopqsdfghjklmwxcvbn",
)


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode()


def decode_key(text: str, what: str) -> bytes:
    """The 32 bytes of a base64 key; ValueError naming `what` otherwise."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not base64: {_KEY_HINT}") from None
    if len(raw) != KEY_LEN:
        raise ValueError(f"{what} holds {len(raw)} bytes, not {KEY_LEN}: {_KEY_HINT}")
    return raw


def generate_private_key() -> str:
    return encode_key(_engine.generate_private_key())


def public_key_of(private_key: str) -> str:
    return encode_key(_engine.public_key(decode_key(private_key, "the private key")))


def key_line(text: str, what: str) -> str:
    """The key in what `kcpvpn genkey` printed: the one line that is not
    blank, a `#` comment or the `KCPVPN_KEY=` line."""
    lines = [
        ln.strip()
        for ln in text.splitlines()
        if ln.strip() and not ln.lstrip().startswith("#") and not ln.startswith("KCPVPN_KEY=")
    ]
    if len(lines) != 1:
        raise ValueError(f"{what} holds {len(lines)} key lines, not one: {_KEY_HINT}")
    return lines[0]


def random_secret() -> str:
    """A secret for KCPVPN_KEY: 256 random bits, URL-safe (no quoting needed)."""
    return secrets.token_urlsafe(32)


def read_private_key(path: str | Path, flag: str = "--private-key-file") -> bytes:
    """The private key in `path` (base64, as `kcpvpn genkey` wrote it).
    ValueError when it cannot be read, is readable by others, or is no key."""
    p = Path(path)
    try:
        st = p.stat()
        text = p.read_text()
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot read it ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{flag} {path}: not text: {_KEY_HINT}") from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise ValueError(
            f"{flag} {path} holds a private key but its mode is "
            f"{stat.S_IMODE(st.st_mode):04o}, so other users may read it: run `chmod 600 {path}`"
        )
    return decode_key(key_line(text, f"{flag} {path}"), f"{flag} {path}")


def secret_problem(secret: str) -> str | None:
    """Why the shared secret is weak, or None. Weak: shorter than 16
    characters, fewer than 8 different characters, one short string
    repeated, or a run of neighbouring letters, digits or keyboard keys."""
    n = len(secret)
    if n < MIN_SECRET_LEN:
        return f"it is {n} characters long (at least {MIN_SECRET_LEN} are needed)"
    distinct = len(set(secret))
    if distinct < MIN_SECRET_DISTINCT:
        return (
            f"it has only {distinct} different characters (at least {MIN_SECRET_DISTINCT} "
            "are needed)"
        )
    for period in range(1, n // 2 + 1):
        if n % period == 0 and secret == secret[:period] * (n // period):
            return "it is one short string repeated"
    low = secret.lower()
    for seq in _SEQUENCES:
        # Long enough to hold any run of the secret's length, wrapping round.
        run = seq * (n // len(seq) + 2)
        if low in run or low[::-1] in run:
            return "it is a run of neighbouring letters, digits or keys"
    return None


def weak_secret_message(why: str) -> str:
    return (
        f"the secret is weak: {why}. Generate a strong one with `kcpvpn genkey` (it prints "
        "one labelled KCPVPN_KEY) and set it on both sides, or pass --allow-weak-key to "
        "use this one anyway"
    )


@dataclass(frozen=True)
class PeerEntry:
    """One allowed client of an identity-mode server."""

    public_key: str  # base64
    client_id: str = ""  # empty: `k-` and the start of the key
    address: str | None = None  # its fixed tunnel address

    @property
    def name(self) -> str:
        """The client id it gets: its own, or `k-` and the start of its key
        (URL-safe base64), as the engine derives it."""
        if self.client_id:
            return self.client_id
        b = self.public_key.replace("+", "-").replace("/", "_")
        return f"k-{b[:14]}"

    def engine_spec(self) -> tuple[bytes, str, str | None]:
        return (decode_key(self.public_key, "a peer's public-key"), self.client_id, self.address)


_PEER_KEYS = ("public-key", "client-id", "address")


def parse_peers(items: Any, where: str) -> tuple[list[PeerEntry], list[str]]:
    """`[[peer]]` tables -> (entries, problems)."""
    from .config import client_id_problem

    problems: list[str] = []
    peers: list[PeerEntry] = []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        return [], [
            f"{where}: peers are tables: write [[peer]] with public-key, client-id, address"
        ]
    for n, raw in enumerate(items, 1):
        item = {k.replace("_", "-"): v for k, v in raw.items()}
        label = f"{where}: peer {n}"
        unknown = sorted(set(item) - set(_PEER_KEYS))
        if unknown:
            problems.append(
                f"{label}: unknown key {unknown[0]!r}; a peer has {', '.join(_PEER_KEYS)}"
            )
            continue
        if not all(isinstance(v, str) for v in item.values()):
            problems.append(f'{label}: every value is a string (e.g. address = "10.8.0.10")')
            continue
        key = item.get("public-key")
        if not key:
            problems.append(f"{label}: public-key is missing (the client's `kcpvpn pubkey`)")
            continue
        try:
            decode_key(key, "public-key")
        except ValueError as e:
            problems.append(f"{label}: {e}")
            continue
        cid = item.get("client-id", "")
        why = client_id_problem(cid)
        if why:
            problems.append(f"{label}: {why}")
            continue
        addr = item.get("address")
        if addr is not None:
            try:
                addr = str(ipaddress.ip_address(addr.strip()))
            except ValueError:
                problems.append(
                    f"{label}: address {addr!r} is not an IPv4 or IPv6 address (e.g. 10.8.0.10)"
                )
                continue
        peers.append(PeerEntry(encode_key(decode_key(key, "public-key")), cid, addr))
    problems += _duplicates(peers, where)
    return peers, problems


def _duplicates(peers: list[PeerEntry], where: str) -> list[str]:
    problems = []
    for attr, what in (
        ("public_key", "public key"),
        ("client_id", "client id"),
        ("address", "address"),
    ):
        seen: set[str] = set()
        for p in peers:
            v = getattr(p, attr)
            if not v:
                continue
            if v in seen:
                problems.append(f"{where}: {what} {v} is given to two peers")
            seen.add(v)
    return problems


def load_peers_file(path: str | Path) -> tuple[list[PeerEntry], list[str]]:
    """The `[[peer]]` tables of a --peers-file -> (entries, problems)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as e:
        return [], [f"--peers-file {path}: cannot read it ({e.strerror})"]
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        return [], [f"--peers-file {path}: not valid TOML: {e}"]
    extra = sorted(set(data) - {"peer"})
    if extra:
        return [], [f"--peers-file {path}: unknown key {extra[0]!r}; it holds [[peer]] tables only"]
    return parse_peers(data.get("peer", []), f"--peers-file {path}")
