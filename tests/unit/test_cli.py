"""The `kcpvpn` command line: flags reach the configuration, bad values exit
with status 2 before anything runs, help is grouped, aliases work."""

import pytest
from typer.testing import CliRunner

from kcpvpn import __version__, cli
from kcpvpn.config import ClientConfig, ServerConfig

KEY = "correct horse battery staple"


@pytest.fixture
def ran(monkeypatch):
    """Replaces what the commands run; records the configuration given."""
    calls: list = []

    def fake(mode):
        def run(cfg):
            calls.append((mode, cfg))
            return 0

        return run

    monkeypatch.setitem(cli.RUN, "server", fake("server"))
    monkeypatch.setitem(cli.RUN, "client", fake("client"))
    return calls


def invoke(*args, env=None):
    runner = CliRunner()
    return runner.invoke(
        cli.app, list(args), env={"KCPVPN_KEY": "", "COLUMNS": "120", **(env or {})}
    )


def test_server_flags_reach_the_config(ran):
    r = invoke(
        "server",
        "--port", "1235",
        "--secret", KEY,
        "--kcp-mode", "normal",
        "--dscp", "46",
        "--local-ip", "192.168.88.0",
        "--vni-mode", "tun",
        "--assignable-ips", "192.168.88.0/24",
        "--ds", "20", "--ps", "4",
        "--rapid-fec",
        "--no-mss-clamp",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    [(mode, cfg)] = ran
    assert mode == "server" and isinstance(cfg, ServerConfig)
    t = cfg.transport
    assert (t.port, t.kcp_mode, t.dscp, t.datashard, t.parityshard) == (1235, "normal", 46, 20, 4)
    assert t.rapid_fec and not cfg.mss_clamp and t.secret == KEY
    assert (cfg.local_ip, cfg.assignable_ips) == ("192.168.88.0", "192.168.88.0/24")
    # Untouched flags keep the original's defaults.
    assert (t.udp_mtu, t.sndwnd, t.crypt, cfg.vni_name_prefix) == (1350, 4096, "aes", "kvs")


@pytest.mark.parametrize("alias", ["c", "client"])
def test_client_and_its_alias(ran, alias):
    r = invoke(
        alias,
        "--ip", "server1",
        "--port", "1235",
        "--client-id", "client1",
        "--vni-mtu", "1200",
        "--local-ip", "192.168.88.255",
        "--vni-name", "kvc_c1",
        "--persistent-vni",
        "--auto-reconnect",
        env={"KCPVPN_KEY": KEY},
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    [(mode, cfg)] = ran
    assert mode == "client" and isinstance(cfg, ClientConfig)
    assert (cfg.client_id, cfg.vni_mtu, cfg.local_ip, cfg.vni_name) == (
        "client1",
        1200,
        "192.168.88.255",
        "kvc_c1",
    )
    assert cfg.persistent_vni and cfg.auto_reconnect and cfg.transport.secret == KEY


def test_server_alias_s(ran):
    r = invoke("s", "--port", "1", "--secret", KEY)
    assert r.exit_code == 0, r.output
    assert ran[0][0] == "server"


def test_hidden_manual_flags_are_accepted(ran):
    r = invoke(
        "server", "--port", "1", "--secret", KEY, "--kcp-mode", "manual",
        "--nodelay", "1", "--interval", "20", "--resend", "2", "--nc", "1", "--acknodelay",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    t = ran[0][1].transport
    assert tuple(t.kcp_profile) == (1, 20, 2, 1) and t.acknodelay


@pytest.mark.parametrize(
    "args, words",
    [
        (["server", "--port", "70000"], ["--port 70000", "1..65535"]),
        (["server", "--port", "1", "--crypt", "salsa20"], ["--crypt salsa20", "chacha20"]),
        (["client", "--ip", "h", "--port", "1", "--client-id", "../../x"], ["client id"]),
        (["server", "--port", "1", "--vni-mode", "tap", "--local-ip", "10.0.0.1"], ["--netmask"]),
        (["client", "--port", "1"], ["--ip is missing"]),
    ],
)
def test_bad_values_exit_2_with_a_message_and_run_nothing(ran, args, words):
    r = invoke(*args, "--secret", KEY)
    assert r.exit_code == 2
    for w in words:
        assert w in r.output
    assert "error:" in r.output
    assert ran == []


def test_missing_secret_exits_2(ran):
    r = invoke("server", "--port", "1")
    assert r.exit_code == 2 and "secret is missing" in r.output and ran == []


def test_non_integer_is_a_usage_error(ran):
    r = invoke("server", "--port", "abc", "--secret", KEY)
    assert r.exit_code == 2 and ran == []


def test_unknown_flag_is_a_usage_error(ran):
    r = invoke("server", "--port", "1", "--secret", KEY, "--frobnicate")
    assert r.exit_code == 2 and ran == []


def test_config_file_with_flag_override(ran, tmp_path):
    f = tmp_path / "server.toml"
    f.write_text(
        'port = 1300\nsecret = "file secret, strong enough"\nkcp-mode = "fast2"\nsndwnd = 512\n'
    )
    f.chmod(0o600)
    r = invoke("server", "--config", str(f), "--sndwnd", "2048")
    assert r.exit_code == 0, r.output
    t = ran[0][1].transport
    assert (t.port, t.kcp_mode, t.sndwnd, t.secret) == (
        1300,
        "fast2",
        2048,
        "file secret, strong enough",
    )


def test_flag_equal_to_default_still_overrides_the_file(ran, tmp_path):
    f = tmp_path / "server.toml"
    f.write_text("port = 1300\nudp-mtu = 1400\n")
    r = invoke("server", "-c", str(f), "--udp-mtu", "1350", env={"KCPVPN_KEY": KEY})
    assert r.exit_code == 0, r.output
    assert ran[0][1].transport.udp_mtu == 1350


def test_public_config_file_with_secret_exits_2(ran, tmp_path):
    f = tmp_path / "server.toml"
    f.write_text('port = 1300\nsecret = "leaky"\n')
    f.chmod(0o644)
    r = invoke("server", "--config", str(f))
    assert r.exit_code == 2 and "chmod 600" in r.output and ran == []


def test_exit_status_of_the_run_is_the_commands(monkeypatch):
    monkeypatch.setitem(cli.RUN, "server", lambda cfg: 3)
    r = invoke("server", "--port", "1", "--secret", KEY)
    assert r.exit_code == 3


def test_warnings_are_logged(ran, caplog):
    r = invoke("server", "--port", "1", "--secret", KEY, "--interval", "20")
    assert r.exit_code == 0
    assert "--interval has no effect" in caplog.text


def test_version():
    r = invoke("--version")
    assert r.exit_code == 0 and r.output.strip() == f"kcpvpn {__version__}"


def test_help_is_grouped_and_hides_tuning_internals():
    r = invoke("server", "--help")
    assert r.exit_code == 0
    for panel in ("Transport", "Tunnel", "Interface", "Hooks", "Tuning"):
        assert panel in r.output
    for flag in ("--udp-mtu", "--assignable-ips", "--hook-dir", "--ds", "--no-mss-clamp"):
        assert flag in r.output
    for hidden in ("--nodelay", "--resend", "--acknodelay", "--nc "):
        assert hidden not in r.output
    assert "--client-id" not in r.output  # a client flag
    assert "KCPVPN_KEY" in r.output and "1350" in r.output

    r = invoke("client", "--help")
    for flag in ("--client-id", "--on-connected-hook", "--on-disconnected-hook", "--vni-name"):
        assert flag in r.output
    assert "--vni-name-prefix" not in r.output and "--hook-dir" not in r.output


def test_root_help_lists_commands():
    r = invoke("--help")
    assert r.exit_code == 0
    assert "server" in r.output and "client" in r.output and "lab" in r.output


def test_rapid_fec_is_on_by_default_and_can_be_turned_off(ran):
    args = ("client", "--ip", "192.0.2.1", "--port", "1235", "--secret", KEY)
    assert invoke(*args).exit_code == 0
    assert invoke(*args, "--rapid-fec").exit_code == 0  # the original's flag still works
    r = invoke(*args, "--no-rapid-fec")
    assert r.exit_code == 0, r.output
    assert [c.transport.rapid_fec for _, c in ran] == [True, True, False]


def test_client_accepts_netmask_and_warns_it_has_no_effect(ran):
    """The original took --netmask on both sides; the server decides it."""
    r = invoke("client", "--ip", "h", "--port", "1", "--netmask", "255.255.255.0", "--secret", KEY)
    assert r.exit_code == 0, r.output
    assert ran[0][1].netmask == "255.255.255.0"
    r = invoke("client", "--ip", "h", "--port", "1", "--netmask", "255.0.255.0", "--secret", KEY)
    assert r.exit_code == 2 and "not a netmask" in r.output
