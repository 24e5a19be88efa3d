"""kcpvpn: a VPN for bad links (KCP + Reed-Solomon FEC + AEAD over UDP)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kcpvpn")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"
