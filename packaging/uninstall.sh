#!/usr/bin/env bash
# Removes what install.sh put in place (same variables). Configuration files
# in CONFDIR and the daemon's user stay: they hold secrets and ownerships an
# operator may want back; the last lines say how to remove them.
set -euo pipefail
PREFIX=${PREFIX:-/opt/kcpvpn}
BINDIR=${BINDIR:-/usr/local/bin}
UNITDIR=${UNITDIR:-/etc/systemd/system}
CONFDIR=${CONFDIR:-/etc/kcpvpn}
DAEMON_USER=${DAEMON_USER:-kcpvpn}

units=()
for name in kcpvpn-server@.service kcpvpn-client@.service; do
  [ -f "$UNITDIR/$name" ] && units+=("$UNITDIR/$name")
done
if [ ${#units[@]} -gt 0 ]; then
  if [ -d /run/systemd/system ]; then
    # Running instances first: their interfaces go with them.
    systemctl stop 'kcpvpn-server@*.service' 'kcpvpn-client@*.service' || true
    systemctl disable 'kcpvpn-server@*.service' 'kcpvpn-client@*.service' 2>/dev/null || true
  fi
  rm -f "${units[@]}"
  [ -d /run/systemd/system ] && systemctl daemon-reload
fi
# Only our own link: a kcpvpn installed otherwise stays.
if [ -L "$BINDIR/kcpvpn" ] && [ "$(readlink "$BINDIR/kcpvpn")" = "$PREFIX/bin/kcpvpn" ]; then
  rm -f "$BINDIR/kcpvpn"
fi
if [ -f "$PREFIX/pyvenv.cfg" ]; then
  rm -rf "$PREFIX"
elif [ -e "$PREFIX" ]; then
  echo "uninstall: $PREFIX is not a virtualenv; left alone" >&2
fi
echo "removed kcpvpn from $PREFIX, $BINDIR and $UNITDIR"
[ -d "$CONFDIR" ] && echo "kept $CONFDIR (configuration, secrets): rm -r $CONFDIR to remove it"
getent passwd "$DAEMON_USER" >/dev/null && echo "kept the user $DAEMON_USER: userdel $DAEMON_USER"
exit 0
