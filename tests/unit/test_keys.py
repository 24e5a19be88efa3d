"""Identity mode's keys and peers, `kcpvpn genkey` / `kcpvpn pubkey`, and the
rule that refuses weak secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from kcpvpn import _engine, cli
from kcpvpn.config import ConfigError, build_config, load_config
from kcpvpn.ippool import IpPool
from kcpvpn.keys import (
    decode_key,
    encode_key,
    random_secret,
    read_private_key,
    secret_problem,
)

STRONG = "correct horse battery staple"
NOENV: dict[str, str] = {}


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def run(*args: str, stdin: str | None = None):
    return CliRunner().invoke(cli.app, list(args), input=stdin, env={"KCPVPN_KEY": ""})


# -- genkey / pubkey -----------------------------------------------------------


def test_genkey_pubkey_round_trip(tmp_path):
    r = run("genkey")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    keys = [ln for ln in lines if not ln.startswith("#") and not ln.startswith("KCPVPN_KEY=")]
    assert len(keys) == 1
    private = decode_key(keys[0], "genkey's key")
    secret = [ln for ln in lines if ln.startswith("KCPVPN_KEY=")][0].split("=", 1)[1]
    assert secret_problem(secret) is None, "genkey's secret must pass the strength rule"
    # The whole output is a valid key file, and pubkey reads it on stdin.
    f = write(tmp_path / "k", r.output)
    assert read_private_key(f) == private
    p = run("pubkey", stdin=r.output)
    assert p.exit_code == 0, p.output
    assert p.output.strip() == encode_key(_engine.public_key(private))
    # A bare key works too, and two runs give two keys.
    assert run("pubkey", stdin=keys[0] + "\n").output == p.output
    assert run("genkey").output.splitlines()[1] != keys[0]


@pytest.mark.parametrize("stdin", ["", "not base64!\n", "QUJD\n", "a\nb\n"])
def test_pubkey_refuses_what_is_not_one_key(stdin):
    r = run("pubkey", stdin=stdin)
    assert r.exit_code == 2 and "kcpvpn pubkey: error:" in r.output, r.output


def test_key_file_must_be_private_and_hold_a_key(tmp_path):
    key = encode_key(_engine.generate_private_key())
    with pytest.raises(ValueError, match="chmod 600"):
        read_private_key(write(tmp_path / "open.key", key, 0o644))
    with pytest.raises(ValueError, match="holds 3 bytes"):
        read_private_key(write(tmp_path / "short.key", "QUJD"))
    with pytest.raises(ValueError, match="cannot read it"):
        read_private_key(tmp_path / "missing.key")


# -- weak secrets ----------------------------------------------------------------


@pytest.mark.parametrize(
    "secret, why",
    [
        ("hunter2", "7 characters long"),
        ("aaaaaaaaaaaaaaaaaaaa", "only 1 different"),
        ("ababababcdcdcdcdabab", "only 4 different"),
        ("abcdefghabcdefghabcdefgh", "one short string repeated"),
        ("abcdefghijklmnopqr", "run of neighbouring"),
        ("1234567890123456", "run of neighbouring"),
        ("ZYXWVUTSRQPONMLKJI", "run of neighbouring"),
        ("qwertyuiopasdfghjkl", "run of neighbouring"),
    ],
)
def test_weak_secrets(secret, why):
    assert why in (secret_problem(secret) or "")


@pytest.mark.parametrize("secret", [STRONG, "lab-secret-correct-horse-battery", None])
def test_strong_secrets(secret):
    # None: a fresh random one (made here, so every xdist worker collects the same ids).
    assert secret_problem(secret or random_secret()) is None


def test_weak_secret_is_refused_with_the_fix_and_the_flag_allows_it():
    with pytest.raises(ConfigError) as e:
        build_config("server", {"port": 1, "secret": "hunter2"}, env=NOENV)
    msg = str(e.value)
    assert "the secret is weak: it is 7 characters long" in msg
    assert "kcpvpn genkey" in msg and "--allow-weak-key" in msg
    loaded = load_config(
        "server", {"port": 1, "secret": "hunter2", "allow_weak_key": True}, env=NOENV
    )
    assert any("weak" in w for w in loaded.warnings)


def test_network_name_is_checked():
    with pytest.raises(ConfigError, match="--network"):
        build_config("server", {"port": 1, "secret": STRONG, "network": "a" * 65}, env=NOENV)
    cfg = build_config(
        "server", {"port": 1, "secret": STRONG, "network": "vpn.example.com"}, env=NOENV
    )
    assert cfg.transport.network == "vpn.example.com"
    assert (
        build_config("server", {"port": 1, "secret": STRONG}, env=NOENV).transport.network
        == "kcpvpn"
    )


def test_network_name_salts_the_key():
    a = _engine.testing.stretch_secret(STRONG.encode(), "a")
    b = _engine.testing.stretch_secret(STRONG.encode(), "b")
    assert a != b and len(a) == 32


# -- identity mode configuration -------------------------------------------------


def _key_file(tmp_path: Path, name: str) -> tuple[Path, str]:
    private = _engine.generate_private_key()
    f = write(tmp_path / name, encode_key(private) + "\n")
    return f, encode_key(_engine.public_key(private))


def test_server_peers_from_the_config_file_and_a_peers_file(tmp_path):
    key, _ = _key_file(tmp_path, "server.key")
    _, alice = _key_file(tmp_path, "alice.key")
    _, bob = _key_file(tmp_path, "bob.key")
    conf = write(
        tmp_path / "server.toml",
        f'port = 1\nprivate-key-file = "{key}"\nassignable-ips = "10.8.0.0/24"\n'
        f'[[peer]]\npublic-key = "{alice}"\nclient-id = "alice"\naddress = "10.8.0.10"\n',
    )
    peers = write(tmp_path / "peers.toml", f'[[peer]]\npublic_key = "{bob}"\n')
    cfg = build_config(
        "server", {"secret": STRONG, "peers_file": str(peers)}, config_file=conf, env=NOENV
    )
    assert cfg.identity and [p.client_id for p in cfg.peers] == ["alice"]
    from kcpvpn.peers import engine_args, fixed_addresses, identity_of

    ident = identity_of(cfg)
    assert ident is not None and len(ident.peers) == 2
    assert fixed_addresses(ident) == ["10.8.0.10"]
    assert engine_args(ident)["peers"][1] == (decode_key(bob, "bob"), "", None)


@pytest.mark.parametrize(
    "peer, words",
    [
        ('public-key = "QUJD"', "holds 3 bytes"),
        ('client-id = "x"', "public-key is missing"),
        ('public-key = "{k}"\nclient-id = "no spaces"', "may only hold"),
        ('public-key = "{k}"\naddress = "10.9.0.1"', "outside --assignable-ips"),
        ('public-key = "{k}"\naddress = "10.8.0.1"', "the server's own --local-ip"),
        ('public-key = "{k}"\nfrobnicate = "1"', "unknown key 'frobnicate'"),
    ],
)
def test_bad_peers_are_named(tmp_path, peer, words):
    key, _ = _key_file(tmp_path, "server.key")
    _, k = _key_file(tmp_path, "alice.key")
    conf = write(
        tmp_path / "s.toml",
        f'port = 1\nprivate-key-file = "{key}"\nlocal-ip = "10.8.0.1"\n'
        f'assignable-ips = "10.8.0.0/24"\n[[peer]]\n{peer.format(k=k)}\n',
    )
    with pytest.raises(ConfigError) as e:
        build_config("server", {"secret": STRONG}, config_file=conf, env=NOENV)
    assert words in str(e.value)


def test_two_peers_with_one_key_or_id_are_refused(tmp_path):
    key, _ = _key_file(tmp_path, "server.key")
    _, k = _key_file(tmp_path, "alice.key")
    entry = f'[[peer]]\npublic-key = "{k}"\nclient-id = "alice"\n'
    conf = write(tmp_path / "s.toml", f'port = 1\nprivate-key-file = "{key}"\n{entry}{entry}')
    with pytest.raises(ConfigError, match="given to two peers"):
        build_config("server", {"secret": STRONG}, config_file=conf, env=NOENV)


def test_peers_need_the_server_key_and_clients_need_both_keys(tmp_path):
    _, k = _key_file(tmp_path, "alice.key")
    peers = write(tmp_path / "peers.toml", f'[[peer]]\npublic-key = "{k}"\n')
    with pytest.raises(ConfigError, match="no --private-key-file"):
        build_config("server", {"port": 1, "secret": STRONG, "peers_file": str(peers)}, env=NOENV)
    key, pub = _key_file(tmp_path, "c.key")
    base = {"ip": "h", "port": 1, "secret": STRONG}
    with pytest.raises(ConfigError, match="needs both --private-key-file"):
        build_config("client", {**base, "private_key_file": str(key)}, env=NOENV)
    with pytest.raises(ConfigError, match="needs both --private-key-file"):
        build_config("client", {**base, "server_public_key": pub}, env=NOENV)
    with pytest.raises(ConfigError, match="--server-public-key is not base64"):
        build_config(
            "client", {**base, "private_key_file": str(key), "server_public_key": "x!"}, env=NOENV
        )
    cfg = build_config(
        "client", {**base, "private_key_file": str(key), "server_public_key": pub}, env=NOENV
    )
    assert cfg.identity
    loaded = load_config(
        "client",
        {**base, "private_key_file": str(key), "server_public_key": pub, "client_id": "me"},
        env=NOENV,
    )
    assert any("no effect in identity mode" in w for w in loaded.warnings)
    conf = write(tmp_path / "c.toml", f'[[peer]]\npublic-key = "{k}"\n')
    with pytest.raises(ConfigError, match="server setting"):
        build_config("client", base, config_file=conf, env=NOENV)


def test_identity_server_without_peers_warns(tmp_path):
    key, _ = _key_file(tmp_path, "server.key")
    loaded = load_config(
        "server", {"port": 1, "secret": STRONG, "private_key_file": str(key)}, env=NOENV
    )
    assert any("every client is refused" in w for w in loaded.warnings)


def test_pool_keeps_fixed_addresses_for_their_peers():
    pool = IpPool("10.8.0.0/29", exclude=["10.8.0.1"], keep=["10.8.0.2", "10.8.0.4"])
    got = [pool.allocate() for _ in range(3)]
    assert got == ["10.8.0.3", "10.8.0.5", "10.8.0.6"]
    assert pool.reserve("10.8.0.2") is None  # its peer gets it
    pool.release("10.8.0.3")
    assert pool.allocate() == "10.8.0.3"
