"""kcpvpn lab: namespaces, link emulator, probes."""
