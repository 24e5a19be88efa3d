"""What operators watch: log set-up, `kcpvpn top`, the Prometheus exporter.

Everything here reads the daemons' status documents (status.py) or the same
snapshot callable in-process; nothing reaches into the native engine."""
