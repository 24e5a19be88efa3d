"""Type stubs for the native data plane `kcpvpn._engine` (built from daemon/crates/engine)."""

__version__: str
