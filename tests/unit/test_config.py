"""Configuration: the original's defaults, validation messages that say what
is wrong and what is right, the --config file and its precedence."""

import os
from pathlib import Path

import pytest

from kcpvpn.config import (
    FLAGS,
    ClientConfig,
    ConfigError,
    ServerConfig,
    TransportConfig,
    build_config,
    default_of,
    flags_for,
    load_config,
)

NOENV: dict[str, str] = {}
SERVER_MIN = {"port": 1235, "secret": "correct horse battery staple"}
CLIENT_MIN = {"ip": "vpn.example.com", "port": 1235, "secret": "correct horse battery staple"}


def server(env=NOENV, config_file=None, **flags) -> ServerConfig:
    cfg = build_config("server", {**SERVER_MIN, **flags}, config_file=config_file, env=env)
    assert isinstance(cfg, ServerConfig)
    return cfg


def client(env=NOENV, config_file=None, **flags) -> ClientConfig:
    cfg = build_config("client", {**CLIENT_MIN, **flags}, config_file=config_file, env=env)
    assert isinstance(cfg, ClientConfig)
    return cfg


def problems(mode: str, **flags) -> str:
    base = SERVER_MIN if mode == "server" else CLIENT_MIN
    with pytest.raises(ConfigError) as e:
        build_config(mode, {**base, **flags}, env=NOENV)
    return str(e.value)


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


# -- defaults ---------------------------------------------------------------


def test_transport_defaults_equal_the_original():
    t = server().transport
    assert (t.udp_mtu, t.kcp_mode, t.sndwnd, t.rcvwnd) == (1350, "fast", 4096, 4096)
    assert (t.datashard, t.parityshard, t.rapid_fec, t.dscp) == (10, 8, True, 0)
    assert (t.sockbuf, t.smuxbuf, t.keepalive, t.crypt, t.tcp) == (
        4194304,
        4194304,
        10,
        "aes",
        False,
    )
    assert (t.acknodelay, t.nodelay, t.interval, t.resend, t.nc) == (False, 0, 50, 0, 0)
    assert t.ip == ""


def test_server_and_client_defaults_equal_the_original():
    s = server()
    assert (s.vni_mtu, s.full_frame_mtu, s.vni_name_prefix, s.vni_mode) == (1500, 0, "kvs", "tun")
    assert s.local_ip is s.netmask is s.assignable_ips is s.hook_dir is s.bridge is None
    assert s.mss_clamp is True and s.frame_mtu == 1522
    c = client()
    assert (c.vni_mtu, c.vni_name, c.client_id) == (1500, "kvc0", "")
    assert not (c.persistent_vni or c.auto_reconnect or c.no_ip_configuration)
    assert c.on_connected_hook is c.on_disconnected_hook is c.local_ip is None
    assert c.mss_clamp is True and c.ip_mode == 0


@pytest.mark.parametrize(
    "mode, profile",
    [
        ("normal", (0, 40, 2, 1)),
        ("fast", (0, 30, 2, 1)),
        ("fast2", (1, 20, 2, 1)),
        ("fast3", (1, 10, 2, 1)),
    ],
)
def test_kcp_profiles(mode, profile):
    assert tuple(server(kcp_mode=mode).transport.kcp_profile) == profile


def test_manual_profile_uses_hidden_flags():
    t = server(kcp_mode="manual", nodelay=1, interval=15, resend=3, nc=1).transport
    assert tuple(t.kcp_profile) == (1, 15, 3, 1)


def test_fec_off_when_either_shard_count_is_zero():
    assert server().transport.fec == (10, 8)
    assert server(datashard=0).transport.fec is None
    assert server(parityshard=0).transport.fec is None


def test_every_flag_has_a_field_and_the_flag_table_covers_every_field():
    for mode, cls in (("server", ServerConfig), ("client", ClientConfig)):
        fields = set(TransportConfig.__dataclass_fields__) | set(cls.__dataclass_fields__)
        fields.discard("transport")
        fields.discard("peers")  # [[peer]] tables of the --config file, not a flag
        covered = {f.field for f in flags_for(mode)}
        assert covered == fields, mode
    hidden = {f.name for f in FLAGS if f.hidden}
    assert hidden == {"--acknodelay", "--nodelay", "--interval", "--resend", "--nc"}


def test_secret_is_not_in_repr():
    assert "horse" not in repr(server())


def test_ip_modes():
    assert client(local_ip="10.0.0.5").ip_mode == 1
    assert client(no_ip_configuration=True).ip_mode == 2


# -- validation ------------------------------------------------------------


@pytest.mark.parametrize(
    "mode, flags, words",
    [
        ("server", {"port": 70000}, ["--port 70000", "1..65535"]),
        ("server", {"port": 0}, ["--port is missing", "--port 1235"]),
        ("client", {"ip": ""}, ["--ip is missing", "host name"]),
        ("server", {"ip": "vpn.example.com"}, ["not an IP address", "0.0.0.0"]),
        ("client", {"ip": "1.2.3.256"}, ["neither a host name nor", "2001:db8::7"]),
        ("client", {"ip": "bad_host!"}, ["neither a host name nor"]),
        ("server", {"udp_mtu": 100}, ["--udp-mtu 100", "576..8972"]),
        ("server", {"udp_mtu": 9000}, ["576..8972"]),
        ("server", {"kcp_mode": "turbo"}, ["--kcp-mode 'turbo'", "fast3, fast2, fast, normal"]),
        ("server", {"sndwnd": 10}, ["--sndwnd 10", "64..32768"]),
        ("client", {"rcvwnd": 100000}, ["--rcvwnd 100000", "64..32768"]),
        ("server", {"datashard": 256}, ["--datashard 256", "0..255"]),
        ("server", {"parityshard": -1}, ["--parityshard -1", "0..255"]),
        ("server", {"datashard": 200, "parityshard": 100}, ["300 shards", "at most 255"]),
        ("server", {"dscp": 64}, ["--dscp 64", "0..63"]),
        ("server", {"sockbuf": 10}, ["--sockbuf 10"]),
        ("client", {"smuxbuf": 10}, ["--smuxbuf 10"]),
        ("server", {"keepalive": 0}, ["--keepalive 0", "1..3600"]),
        ("server", {"secret": ""}, ["secret is missing", "KCPVPN_KEY", "--config"]),
        ("server", {"crypt": "rot13"}, ["--crypt 'rot13' is unknown", "aes (AES-256-GCM)"]),
        ("server", {"interval": 5}, ["--interval 5", "10..5000"]),
        ("server", {"nodelay": 2}, ["--nodelay 2", "0..1"]),
        ("server", {"local_ip": "10.0.0.300"}, ["--local-ip", "not an IPv4 or IPv6"]),
        ("server", {"vni_mtu": 100}, ["--vni-mtu 100", "576..9000"]),
        ("client", {"vni_mtu": 9001}, ["--vni-mtu 9001", "576..9000"]),
        ("server", {"vni_mode": "tunnel"}, ["--vni-mode 'tunnel'", "tun or tap"]),
        ("server", {"log_level": "loud"}, ["--log-level 'loud'", "debug, info"]),
        ("client", {"client_id": "x" * 17}, ["longer than 16 bytes"]),
        ("client", {"client_id": "ééééééééé"}, ["longer than 16 bytes"]),
        ("client", {"client_id": "../../etc"}, ["letters, digits, '_' and '-'"]),
        ("client", {"vni_name": "a-very-long-interface"}, ["--vni-name", "at most 15"]),
        ("client", {"vni_name": "kv/c"}, ["not a usable interface name"]),
        ("server", {"vni_name_prefix": "thirteenchars"}, ["at most 12", "counter"]),
        ("client", {"bridge": "br 0"}, ["--bridge 'br 0'"]),
        ("client", {"local_ip": "10.0.0.2", "no_ip_configuration": True}, ["contradict"]),
        ("server", {"assignable_ips": "10.0.0.9-10.0.0.1"}, ["--assignable-ips", "backwards"]),
        ("server", {"assignable_ips": "10.0.0.1-fd00::1"}, ["same family"]),
        ("server", {"assignable_ips": "10.0.0.5/24"}, ["host bits", "10.0.0.0/24"]),
        (
            "server",
            {"assignable_ips": "fd00::/64", "local_ip": "10.0.0.1"},
            ["IPv6 but --local-ip 10.0.0.1 is IPv4", "one family"],
        ),
        (
            "server",
            {"vni_mode": "tap", "assignable_ips": "192.168.88.2-192.168.88.254"},
            ["TAP mode with --assignable-ips needs --netmask", "255.255.255.0"],
        ),
        (
            "server",
            {"vni_mode": "tap", "local_ip": "192.168.88.1"},
            ["TAP mode with --local-ip needs --netmask"],
        ),
        ("server", {"bridge": "br0"}, ["--bridge br0 needs --vni-mode tap"]),
        ("server", {"netmask": "255.0.255.0", "vni_mode": "tap"}, ["not a netmask"]),
        ("server", {"netmask": "33", "local_ip": "10.0.0.1"}, ["IPv4 prefix is 0..32"]),
        ("server", {"netmask": "255.255.255.0", "local_ip": "fd00::1"}, ["IPv4 mask", "64"]),
        ("server", {"full_frame_mtu": 1000}, ["--full-frame-mtu 1000", "0 (automatic"]),
        ("server", {"full_frame_mtu": 1510, "vni_mode": "tap"}, ["1514..65535"]),
        (
            "server",
            {"assignable_ips": "fd00::/64", "vni_mtu": 1200},
            ["--vni-mtu 1200 is below 1280", "IPv6"],
        ),
        ("client", {"local_ip": "fd00::5", "vni_mtu": 1000}, ["below 1280"]),
        ("server", {"hook_dir": "/nonexistent/kcpvpn-hooks"}, ["no such directory"]),
        ("client", {"on_connected_hook": "/nonexistent/up"}, ["--on-connected-hook", "cannot"]),
    ],
)
def test_validation_messages(mode, flags, words):
    msg = problems(mode, **flags)
    for w in words:
        assert w in msg


@pytest.mark.parametrize("name", ["aes-192", "salsa20", "blowfish", "xor", "sm4", "3des"])
def test_original_ciphers_are_refused_naming_the_supported_ones(name):
    msg = problems("server", crypt=name)
    assert f"--crypt {name}" in msg and "unauthenticated" in msg
    for supported in ("aes (AES-256-GCM)", "aes-128", "chacha20", "none"):
        assert supported in msg


@pytest.mark.parametrize("crypt", ["aes", "aes-128", "chacha20", "none"])
def test_supported_ciphers(crypt):
    assert server(crypt=crypt).transport.crypt == crypt


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as e:
        build_config("server", {"port": 0, "dscp": 99, "crypt": "xor"}, env=NOENV)
    assert len(e.value.problems) == 4  # port, dscp, crypt, secret


def test_wrong_types_from_code_are_refused_not_crashing():
    msg = problems("server", udp_mtu="big")
    assert "--udp-mtu must be an integer" in msg


def test_unknown_settings_for_the_mode_are_refused():
    assert "has no setting 'client_id'" in problems("server", client_id="x")


@pytest.mark.parametrize("ip", ["", "0.0.0.0", "::", "[::]", "192.0.2.1", "2001:db8::1"])
def test_server_listen_addresses(ip):
    assert server(ip=ip).transport.ip == ip.strip("[]")


@pytest.mark.parametrize(
    "ip", ["vpn.example.com", "localhost", "server1", "203.0.113.7", "2001:db8::7", "[::1]"]
)
def test_client_server_addresses(ip):
    assert client(ip=ip).transport.ip == ip.strip("[]")


@pytest.mark.parametrize("cid", ["", "a", "site-1", "A_b-9", "x" * 16])
def test_valid_client_ids(cid):
    assert client(client_id=cid).client_id == cid


def test_tap_mode_with_netmask_and_pool_is_fine():
    s = server(
        vni_mode="tap",
        local_ip="192.168.88.1",
        assignable_ips="192.168.88.2-192.168.88.254",
        netmask="255.255.255.0",
        bridge="br0",
    )
    assert s.prefixlen == 24 and s.frame_mtu == 1522


def test_ipv6_pool_and_prefix_length():
    s = server(local_ip="fd00::1", assignable_ips="fd00::/64", netmask="64", vni_mode="tap")
    assert s.prefixlen == 64


def test_hooks_that_exist_are_accepted(tmp_path):
    hook = tmp_path / "up"
    hook.write_text("#!/bin/sh\n")
    hook.chmod(0o700)
    assert client(on_connected_hook=str(hook)).on_connected_hook == str(hook)
    hook.chmod(0o600)
    assert "not executable" in problems("client", on_connected_hook=str(hook))
    assert server(hook_dir=str(tmp_path)).hook_dir == str(tmp_path)


# -- warnings --------------------------------------------------------------


def warnings_of(mode, **flags):
    base = SERVER_MIN if mode == "server" else CLIENT_MIN
    return "\n".join(load_config(mode, {**base, **flags}, env=NOENV).warnings)


def test_manual_flags_outside_manual_mode_warn():
    assert "--interval has no effect unless --kcp-mode manual" in warnings_of("server", interval=20)
    assert "no effect" not in warnings_of("server", interval=20, kcp_mode="manual")


def test_other_warnings():
    assert "FEC is off because --parityshard is 0" in warnings_of("client", parityshard=0)
    assert "IPv6 will not work" in warnings_of("client", vni_mtu=1200)
    assert "neither encrypted nor authenticated" in warnings_of("client", crypt="none")
    w = warnings_of("client", secret="abc", allow_weak_key=True)
    assert "the secret is weak (it is 3 characters long" in w and "kcpvpn genkey" in w
    assert "--netmask has no effect in TUN mode" in warnings_of("server", netmask="24")
    w = warnings_of(
        "server",
        vni_mode="tap",
        local_ip="192.168.88.1",
        netmask="24",
        assignable_ips="192.168.88.0/24",
    )
    assert "192.168.88.0 and 192.168.88.255" in w
    assert warnings_of("server") == ""


def test_writable_hook_dir_warns(tmp_path):
    d = tmp_path / "h"
    d.mkdir()
    d.chmod(0o777)
    assert "writable by other users" in warnings_of("server", hook_dir=str(d))
    d.chmod(0o700)
    assert warnings_of("server", hook_dir=str(d)) == ""


# -- config file -----------------------------------------------------------


def test_file_supplies_values_and_flags_override(tmp_path):
    f = write(
        tmp_path / "s.toml",
        'port = 1300\nudp-mtu = 1400\nkcp_mode = "fast3"\nds = 20\nps = 5\n'
        'assignable-ips = "10.0.0.0/24"\nno-mss-clamp = true\nsecret = "from the config file"\n',
    )
    s = build_config("server", {"udp_mtu": 1200}, config_file=f, env=NOENV)
    t = s.transport
    assert (t.port, t.udp_mtu, t.kcp_mode, t.datashard, t.parityshard) == (
        1300,
        1200,
        "fast3",
        20,
        5,
    )
    assert s.assignable_ips == "10.0.0.0/24" and s.mss_clamp is False
    assert t.secret == "from the config file"


def test_tcp_from_the_file_and_the_engine_datagram_size(tmp_path):
    """`tcp = true` in the file is --tcp; in TCP mode the engine's datagrams
    are 14 bytes shorter (a TCP header is 12 bytes larger than a UDP one, and
    each segment frames its datagram with a 2-byte length), so IP packets
    keep the size --udp-mtu gives them in UDP mode."""
    from kcpvpn.supervisor import engine_params

    f = write(
        tmp_path / "s.toml", 'port = 1300\ntcp = true\nsecret = "correct horse battery staple"\n'
    )
    s = build_config("server", {}, config_file=f, env=NOENV)
    assert s.transport.tcp is True
    assert engine_params(s).udp_mtu == s.transport.udp_mtu - 14
    u = build_config("server", {"port": 1300}, env={"KCPVPN_KEY": "correct horse battery staple"})
    assert u.transport.tcp is False
    assert engine_params(u).udp_mtu == u.transport.udp_mtu


def test_secret_precedence_flag_over_env_over_file(tmp_path):
    f = write(tmp_path / "c.toml", 'ip = "h"\nport = 1\nsecret = "secret from the file"\n')
    assert (
        build_config("client", {}, config_file=f, env=NOENV).transport.secret
        == "secret from the file"
    )
    env = {"KCPVPN_KEY": "secret from the env"}
    assert (
        build_config("client", {}, config_file=f, env=env).transport.secret == "secret from the env"
    )
    got = build_config("client", {"secret": "secret from the flag"}, config_file=f, env=env)
    assert got.transport.secret == "secret from the flag"


def test_secret_from_environment_by_default(monkeypatch):
    monkeypatch.setenv("KCPVPN_KEY", "from the environment")
    cfg = build_config("server", {"port": 1})
    assert cfg.transport.secret == "from the environment"


@pytest.mark.parametrize("mode_bits", [0o644, 0o640, 0o604])
def test_file_with_secret_must_be_private(tmp_path, mode_bits):
    f = write(tmp_path / "s.toml", 'port = 1\nsecret = "x"\n', mode_bits)
    with pytest.raises(ConfigError) as e:
        build_config("server", {}, config_file=f, env=NOENV)
    msg = str(e.value)
    assert f"{mode_bits:04o}" in msg and f"chmod 600 {f}" in msg and "KCPVPN_KEY" in msg


def test_file_without_secret_may_be_world_readable(tmp_path):
    f = write(tmp_path / "s.toml", "port = 1\n", 0o644)
    cfg = build_config(
        "server", {}, config_file=f, env={"KCPVPN_KEY": "correct horse battery staple"}
    )
    assert cfg.transport.port == 1


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    f = write(tmp_path / "s.toml", "port = 1\nudp-mut = 1400\nfrobnicate = 1\n")
    with pytest.raises(ConfigError) as e:
        build_config("server", {}, config_file=f, env=NOENV)
    msg = str(e.value)
    assert "unknown key 'udp-mut'; did you mean 'udp-mtu'?" in msg
    assert "unknown key 'frobnicate'" in msg


def test_other_modes_key_is_refused(tmp_path):
    f = write(tmp_path / "c.toml", 'vni-name-prefix = "x"\n')
    with pytest.raises(ConfigError, match="'vni-name-prefix' is a server setting"):
        build_config("client", {}, config_file=f, env=NOENV)


def test_wrong_type_in_file(tmp_path):
    f = write(tmp_path / "s.toml", 'port = "1235"\nrapid-fec = 1\n')
    with pytest.raises(ConfigError) as e:
        build_config("server", {}, config_file=f, env=NOENV)
    msg = str(e.value)
    assert "'port' must be an integer, not a string" in msg
    assert "'rapid-fec' must be true or false" in msg


def test_alias_and_name_together_is_refused(tmp_path):
    f = write(tmp_path / "s.toml", "datashard = 5\nds = 6\n")
    with pytest.raises(ConfigError, match="--datashard is set twice"):
        build_config("server", {}, config_file=f, env=NOENV)


def test_invalid_toml_and_missing_file(tmp_path):
    f = write(tmp_path / "s.toml", "port = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        build_config("server", {}, config_file=f, env=NOENV)
    with pytest.raises(ConfigError, match="cannot read it"):
        build_config("server", {}, config_file=tmp_path / "missing.toml", env=NOENV)


def test_problems_from_the_file_say_so(tmp_path):
    f = write(tmp_path / "s.toml", "port = 1\ndscp = 99\n")
    with pytest.raises(ConfigError) as e:
        build_config("server", {"secret": "correct horse battery staple"}, config_file=f, env=NOENV)
    msg = str(e.value)
    assert "--dscp 99 is out of range: use 0..63" in msg and msg.endswith(f"(from {f})")


def test_netmask_as_integer_in_file(tmp_path):
    f = write(tmp_path / "s.toml", 'port = 1\nnetmask = 24\nvni-mode = "tap"\n')
    cfg = build_config(
        "server", {}, config_file=f, env={"KCPVPN_KEY": "correct horse battery staple"}
    )
    assert cfg.prefixlen == 24


def test_defaults_exposed_for_help_match_dataclasses():
    by_name = {f.name: f for f in FLAGS}
    assert default_of("server", by_name["--udp-mtu"]) == 1350
    assert default_of("client", by_name["--vni-name"]) == "kvc0"
    assert default_of("server", by_name["--no-mss-clamp"]) is False  # clamping on


def test_no_files_created(tmp_path):
    before = set(os.listdir(tmp_path))
    with pytest.raises(ConfigError):
        build_config("server", {"port": 0, "hook_dir": str(tmp_path / "h")}, env=NOENV)
    assert set(os.listdir(tmp_path)) == before


def test_readme_flags_section_lists_every_flag():
    readme = Path(__file__).resolve().parents[2] / "README.md"
    section = readme.read_text().split("## Flags", 1)[1]
    for flag in FLAGS:
        for name in (*flag.names, *([flag.off_switch] if flag.off_switch else [])):
            assert f"`{name}`" in section, name


def test_client_netmask_has_no_effect_and_says_so():
    assert "the server decides the netmask" in warnings_of("client", netmask="24")
    assert "netmask" not in warnings_of("client")
