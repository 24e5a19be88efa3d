"""The operator's surface outside the daemons: -h everywhere, the runtime
dependencies, one wording for rapid FEC and the FEC targets."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kcpvpn import cli
from kcpvpn.config import FEC_TARGETS, FLAGS, RAPID_FEC_DELAY

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("args", [[], ["server"], ["client"], ["status"], ["top"]])
def test_dash_h_prints_help(args):
    r = CliRunner().invoke(cli.app, [*args, "-h"])
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.output


def test_wheel_dependencies_are_runtime_only():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("=")[0].split("[")[0].strip() for d in project["dependencies"]}
    assert names == {"typer", "rich", "pyroute2", "prometheus_client"}
    assert "pytest" in str(project["optional-dependencies"]["test"])


DOCS = ["README.md", "docs/operations.md", "docs/architecture.md"]


def test_one_wording_for_rapid_fec_and_fec_targets():
    helps = " ".join(f.help_for("server") for f in FLAGS)
    assert RAPID_FEC_DELAY in helps and FEC_TARGETS in helps
    for doc in DOCS:
        text = " ".join((ROOT / doc).read_text().split())  # line breaks as spaces
        assert RAPID_FEC_DELAY in text, doc
        assert FEC_TARGETS in text, doc
    # The wordings that disagreed with the code (and with each other).
    everything = helps + " ".join(" ".join((ROOT / d).read_text().split()) for d in DOCS)
    for stale in ("1 ms after sparse traffic", "at or under 1%", "0.1% for groups"):
        assert stale not in everything, stale
