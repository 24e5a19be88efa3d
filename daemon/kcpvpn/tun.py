"""Virtual interfaces: open TUN/TAP devices and configure them with pyroute2.

The daemon opens /dev/net/tun itself (pyroute2's own TUN creation closes the
descriptor) and hands the descriptor to the native data path; addresses, MTU,
bridge membership and link state are set through netlink.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

from pyroute2 import IPRoute

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOFFLOAD = 0x400454D0
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
# Reads and writes start with a virtio_net_hdr: the engine sees it on the
# descriptor (TUNGETIFF) and cuts/merges TCP super-packets itself.
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_USO4 = 0x20  # Linux 6.2+
TUN_F_USO6 = 0x40
# The offloads asked for, best first: a kernel without USO refuses its bits.
OFFLOADS = (
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6,
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
)
# The interface's queue (packets the kernel hands to the daemon wait here):
# the default 500 overflows while the data path is busy and the TCP inside
# sees loss on a clean link (a TUN's queue gives no back-pressure: the kernel
# drops when it is full). With offload an entry is a super-packet of up to
# 64 KB, so this holds the largest default TCP window many times over.
TXQUEUELEN = 4096
# No duplicate address detection on tunnel addresses: the address is ours by
# assignment, and DAD would keep it unusable ("tentative") for a second or more.
IFA_F_NODAD = 0x02

IFNAMSIZ = 16


class InterfaceError(Exception):
    """An interface could not be created or configured; the message says why."""


@dataclass
class Interface:
    name: str
    fd: int
    tap: bool
    persistent: bool = False
    index: int = 0
    # TSO/GSO super-packets and a virtio_net_hdr on every read and write.
    offload: bool = False

    def close(self) -> None:
        """Closes our descriptor; a non-persistent interface disappears once
        every descriptor (ours and the data path's) is closed."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def check_name(name: str) -> None:
    if not name or len(name.encode()) >= IFNAMSIZ or "/" in name or name.strip() != name:
        raise InterfaceError(
            f"invalid interface name {name!r}: use 1-15 characters without '/' or spaces"
        )


def open_tun(name: str, tap: bool, persistent: bool = False, offload: bool = True) -> Interface:
    """Creates (or attaches to an existing persistent) TUN/TAP device `name`.
    A name with `%d` (e.g. `kvs%d`) has the kernel pick the lowest free
    number: one call, where probing names one by one costs a netlink round
    trip per interface that exists.

    `offload` (TUN only): the kernel may hand over TCP/UDP super-packets of
    up to 64 KB with their checksums left open, and take merged ones
    (IFF_VNET_HDR + TUNSETOFFLOAD); where the kernel refuses, the interface
    is opened again without, and `Interface.offload` says which it got."""
    if offload and not tap:
        iface = _open(name, tap, persistent, vnet=True)
        for bits in OFFLOADS:
            try:
                fcntl.ioctl(iface.fd, TUNSETOFFLOAD, bits)
                iface.offload = True
                return iface
            except OSError:
                continue
        iface.close()
    iface = _open(name, tap, persistent, vnet=False)
    try:
        # A persistent device keeps the offloads a former owner enabled;
        # without the virtio header it must not get super-packets.
        fcntl.ioctl(iface.fd, TUNSETOFFLOAD, 0)
    except OSError:
        pass
    return iface


def _open(name: str, tap: bool, persistent: bool, vnet: bool) -> Interface:
    check_name(name)
    flags = (IFF_TAP if tap else IFF_TUN) | IFF_NO_PI | (IFF_VNET_HDR if vnet else 0)
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.EACCES:
            # Capabilities do not open files: a non-root daemon needs the
            # node's usual mode (udev's 0666; creating a device still takes
            # CAP_NET_ADMIN).
            raise InterfaceError(
                "cannot open /dev/net/tun (permission denied): a daemon that is not root "
                "needs it mode 0666, as udev sets it (`chmod 0666 /dev/net/tun`), and "
                "CAP_NET_ADMIN"
            ) from e
        raise InterfaceError(
            f"cannot open /dev/net/tun ({e.strerror}): load the tun module and run as root "
            "or with CAP_NET_ADMIN"
        ) from e
    try:
        ifr = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
        actual = ifr[:IFNAMSIZ].rstrip(b"\0").decode()
        fcntl.ioctl(fd, TUNSETPERSIST, 1 if persistent else 0)
    except OSError as e:
        os.close(fd)
        hint = ""
        if e.errno == errno.EBUSY:
            hint = ": it is in use by another process"
        elif e.errno == errno.EINVAL:
            hint = ": an interface of that name exists and is not a " + ("TAP" if tap else "TUN")
        elif e.errno == errno.EPERM:
            hint = ": run as root or with CAP_NET_ADMIN"
        raise InterfaceError(f"cannot create interface {name!r} ({e.strerror}){hint}") from e
    try:
        index = socket.if_nametoindex(actual)
    except OSError:
        index = 0  # renamed or deleted already; configure() says so
    return Interface(name=actual, fd=fd, tap=tap, persistent=persistent, index=index)


def delete_persistent(name: str) -> None:
    """Removes a persistent TUN/TAP device (used when a persistent one must go)."""
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if idx:
            ipr.link("del", index=idx[0])


def link_exists(name: str) -> bool:
    with IPRoute() as ipr:
        return bool(ipr.link_lookup(ifname=name))


def require_bridge(name: str) -> None:
    """Raises InterfaceError unless bridge `name` exists (checked at start-up,
    so a typo is reported before any client connects)."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        kind = None
        if found:
            info = ipr.get_links(found[0])[0].get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info else None
    if not found:
        raise InterfaceError(
            f"bridge {name!r} does not exist: create it first "
            f"(ip link add {name} type bridge) or drop --bridge"
        )
    if kind != "bridge":
        raise InterfaceError(f"{name!r} is not a bridge (it is a {kind or 'plain'} interface)")


def free_name(prefix: str, taken: set[str]) -> str:
    """The lowest `prefix<N>` that is neither ours nor an existing link."""
    with IPRoute() as ipr:
        n = 0
        while True:
            name = f"{prefix}{n}"
            if name not in taken and not ipr.link_lookup(ifname=name):
                return name
            n += 1


def configure(
    name: str,
    *,
    mtu: int,
    local: str | None = None,
    peer: str | None = None,
    prefixlen: int | None = None,
    bridge: str | None = None,
    flush: bool = False,
    ipr: IPRoute | None = None,
    group: int | None = None,
) -> None:
    """Sets MTU (and link group), brings the link up, then sets the address
    (point-to-point when `peer` is given) or bridge membership. `ipr`: a
    netlink socket to use (a server configuring many interfaces keeps one
    open instead of one per call)."""
    if ipr is None:
        with IPRoute() as own:
            return configure(
                name,
                mtu=mtu,
                local=local,
                peer=peer,
                prefixlen=prefixlen,
                bridge=bridge,
                flush=flush,
                ipr=own,
                group=group,
            )
    try:
        idx = socket.if_nametoindex(name)
    except OSError:
        raise InterfaceError(f"interface {name!r} vanished while being configured") from None
    extra = {} if group is None else {"group": group}
    try:
        # Up before addressing (in the same message as the MTU): an IPv6
        # point-to-point address added while the link is down gets a route to
        # its local end, not to the peer, once up.
        ipr.link("set", index=idx, mtu=mtu, state="up", txqlen=TXQUEUELEN, **extra)
    except Exception as e:  # pyroute2 raises NetlinkError
        raise InterfaceError(f"cannot set MTU {mtu} on {name} and bring it up: {e}") from e
    if flush:
        for a in ipr.get_addr(index=idx):
            if a.get("scope", 0) == 0:  # global addresses we may have set before
                try:
                    ends = {"address": a.get_attr("IFA_ADDRESS")}
                    if a.get_attr("IFA_LOCAL"):  # point-to-point: both ends name it
                        ends["local"] = a.get_attr("IFA_LOCAL")
                    ipr.addr("del", index=idx, prefixlen=a["prefixlen"], **ends)
                except Exception:
                    pass
    if bridge:
        br = ipr.link_lookup(ifname=bridge)
        if not br:
            raise InterfaceError(
                f"bridge {bridge!r} does not exist: create it first "
                f"(ip link add {bridge} type bridge) or drop --bridge"
            )
        ipr.link("set", index=idx, master=br[0])
    elif local:
        ip = ipaddress.ip_address(local)
        nodad = {"flags": IFA_F_NODAD} if ip.version == 6 else {}
        try:
            if peer:
                ipr.addr(
                    "add",
                    index=idx,
                    local=local,
                    address=peer,
                    prefixlen=ip.max_prefixlen,
                    **nodad,
                )
            else:
                plen = ip.max_prefixlen if prefixlen is None else prefixlen
                ipr.addr("add", index=idx, address=local, prefixlen=plen, **nodad)
        except Exception as e:
            if "exists" not in str(e).lower():
                raise InterfaceError(f"cannot set address {local} on {name}: {e}") from e


def queue_drops(ipr: IPRoute) -> dict[int, int]:
    """Per interface index: packets its queue dropped (tx_dropped: for a
    TUN/TAP, those the kernel could not hand to the daemon because the queue
    was full). One netlink dump for all interfaces."""
    out = {}
    try:
        for link in ipr.get_links():
            st = link.get_attr("IFLA_STATS64") or link.get_attr("IFLA_STATS")
            if st is not None:
                out[link["index"]] = int(st.get("tx_dropped", 0))
    except Exception:
        pass  # the figures are optional; status must still answer
    return out


def remove_peer_address(ipr: IPRoute, index: int, local: str | None, peer: str) -> bool:
    """Removes the point-to-point address `local` -> `peer` from interface
    `index`, and with it the route to `peer`. True when the interface holds
    it no more (removed now, or gone)."""
    kw = {"local": local} if local else {}
    try:
        ipr.addr(
            "del",
            index=index,
            address=peer,
            prefixlen=ipaddress.ip_address(peer).max_prefixlen,
            **kw,
        )
        return True
    except Exception as e:  # pyroute2 raises NetlinkError
        # No such address (ENXIO, EADDRNOTAVAIL) or no such device (ENODEV):
        # nothing routes to it through this interface any more.
        return getattr(e, "code", None) in (errno.ENODEV, errno.EADDRNOTAVAIL, errno.ENXIO)


def delete_link(ipr: IPRoute, index: int) -> None:
    """Deletes interface `index` now (nothing if it is gone already)."""
    try:
        ipr.link("del", index=index)
    except Exception:  # pyroute2 raises NetlinkError (ENODEV: gone)
        pass


def set_group(ipr: IPRoute, index: int, group: int) -> bool:
    """Moves interface `index` to link group `group`; False if it is gone."""
    try:
        ipr.link("set", index=index, group=group)
        return True
    except Exception:
        return False


def delete_group(ipr: IPRoute, group: int) -> None:
    """Deletes every interface of link group `group` in one request: the
    kernel then waits for the network stack once for all of them, where
    deleting (or closing) them one by one waits once each (~20 ms)."""
    try:
        ipr.link("del", group=group)
    except Exception:
        pass  # an empty group: nothing to delete
