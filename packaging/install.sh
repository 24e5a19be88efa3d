#!/usr/bin/env bash
# Installs a kcpvpn wheel into its own virtualenv and puts `kcpvpn` on PATH;
# with systemd's unit directory present, also the units and their user.
# Called by `make install` (which builds the wheel); every path can be moved:
#   PREFIX   virtualenv                       (/opt/kcpvpn)
#   BINDIR   where the `kcpvpn` link goes     (/usr/local/bin)
#   UNITDIR  systemd units, when it exists    (/etc/systemd/system)
#   CONFDIR  configuration files              (/etc/kcpvpn)
#   PYTHON   interpreter for the virtualenv   (/usr/bin/python3, else python3 on PATH;
#            Debian: needs python3-venv; must be reachable by DAEMON_USER)
#   DAEMON_USER  unprivileged user of the units (kcpvpn; created if missing)
#   CREATE_USER  no = leave user accounts alone
set -euo pipefail
wheel=${1:?usage: install.sh WHEEL}
here=$(cd "$(dirname "$0")" && pwd)
PREFIX=${PREFIX:-/opt/kcpvpn}
BINDIR=${BINDIR:-/usr/local/bin}
UNITDIR=${UNITDIR:-/etc/systemd/system}
CONFDIR=${CONFDIR:-/etc/kcpvpn}
# The system's interpreter by default: one under a user's home (pyenv, ~/.local)
# is usually out of the daemon user's reach.
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  [ -x /usr/bin/python3 ] && PYTHON=/usr/bin/python3
fi
DAEMON_USER=${DAEMON_USER:-kcpvpn}
CREATE_USER=${CREATE_USER:-yes}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "install: $PYTHON is missing or older than 3.11; set PYTHON=/path/to/python3.11+" >&2
  exit 1
fi
if [ ! -x "$PREFIX/bin/python" ]; then
  if ! "$PYTHON" -m venv "$PREFIX"; then
    echo "install: cannot create a virtualenv in $PREFIX (Debian: apt-get install python3-venv)" >&2
    exit 1
  fi
fi
# --force-reinstall: the same version number may hold a newer build.
"$PREFIX/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$wheel"
"$PREFIX/bin/python" -m pip install -q --disable-pip-version-check "$wheel"
install -d -m 755 "$BINDIR" "$PREFIX/share/doc/kcpvpn"
ln -sfn "$PREFIX/bin/kcpvpn" "$BINDIR/kcpvpn"
install -m 644 "$here/../README.md" "$here/../docs/operations.md" "$PREFIX/share/doc/kcpvpn/"
echo "installed $("$BINDIR/kcpvpn" --version) in $PREFIX; $BINDIR/kcpvpn -> $PREFIX/bin/kcpvpn"

if [ -d "$UNITDIR" ]; then
  for unit in "$here"/systemd/kcpvpn-*@.service; do
    sed -e "s|/usr/local/bin/kcpvpn|$BINDIR/kcpvpn|" \
        -e "s|/etc/kcpvpn/|$CONFDIR/|" \
        -e "s|/opt/kcpvpn/|$PREFIX/|" \
        -e "s|^User=kcpvpn|User=$DAEMON_USER|" -e "s|^Group=kcpvpn|Group=$DAEMON_USER|" \
        "$unit" > "$UNITDIR/$(basename "$unit")"
    chmod 644 "$UNITDIR/$(basename "$unit")"
  done
  install -d -m 755 "$CONFDIR"
  if [ "$CREATE_USER" = yes ] && ! getent passwd "$DAEMON_USER" >/dev/null; then
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$DAEMON_USER"
    echo "created the system user $DAEMON_USER"
  fi
  if getent passwd "$DAEMON_USER" >/dev/null && command -v runuser >/dev/null \
     && ! runuser -u "$DAEMON_USER" -- "$PREFIX/bin/kcpvpn" --version >/dev/null 2>&1; then
    echo "install: warning: $DAEMON_USER cannot run $PREFIX/bin/kcpvpn (is its interpreter," \
      "$(readlink -f "$PREFIX/bin/python"), in a directory only root may enter?);" \
      "reinstall with PYTHON=/usr/bin/python3" >&2
  fi
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
  fi
  echo "units in $UNITDIR: kcpvpn-server@NAME / kcpvpn-client@NAME read $CONFDIR/NAME.toml"
  echo "  (owned by $DAEMON_USER, mode 600); see $PREFIX/share/doc/kcpvpn/operations.md"
fi
