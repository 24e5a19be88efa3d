//! How a packet to a peer leaves this host: the output interface, the next
//! hop's MAC and the interface's MTU, which a packet socket needs because it
//! bypasses the kernel's routing and neighbour layers. Asked of the kernel
//! over rtnetlink (route, link, neighbour). Requests are built and replies
//! parsed by pure functions, so they are testable without a socket.
use super::cvt;
use std::io;
use std::mem::{size_of_val, zeroed};
use std::net::IpAddr;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    pub ifindex: u32,
    pub mac: [u8; 6],
    /// The interface's own MAC (the frames' source address).
    pub src_mac: [u8; 6],
    /// The interface's MTU (segments must fit it).
    pub mtu: u32,
}

const NLMSG_HDRLEN: usize = 16;
const RTMSG_LEN: usize = 12;
const NDMSG_LEN: usize = 12;
const IFINFOMSG_LEN: usize = 16;
/// Strips NLA_F_NESTED and NLA_F_NET_BYTEORDER from an attribute type.
const NLA_TYPE_MASK: u16 = 0x3fff;
/// A link reply without statistics is a few KiB; room to spare.
const BUF_LEN: usize = 32 * 1024;
/// Datagrams read per request: answers an earlier failed request left
/// unread are skipped, but not forever.
const MAX_READS: usize = 16;
/// Neighbour states whose link-layer address may be used now.
const NUD_USABLE: u16 = libc::NUD_REACHABLE
    | libc::NUD_STALE
    | libc::NUD_DELAY
    | libc::NUD_PROBE
    | libc::NUD_PERMANENT
    | libc::NUD_NOARP;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {what}"))
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// IPv4-mapped IPv6 addresses are routed as IPv4 by the kernel's sockets.
fn unmap(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

fn family_octets(addr: IpAddr) -> (u8, Vec<u8>) {
    match addr {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    }
}

/// An address attribute's payload; its length says the family.
fn ip_from(v: &[u8]) -> Option<IpAddr> {
    let v6 = || <[u8; 16]>::try_from(v).ok().map(IpAddr::from);
    <[u8; 4]>::try_from(v).ok().map(IpAddr::from).or_else(v6)
}

/// One request: nlmsghdr, the family's fixed header, then attributes.
fn request(ty: u16, seq: u32, fixed: &[u8], attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut m = vec![0u8; NLMSG_HDRLEN];
    m.extend_from_slice(fixed);
    for (t, v) in attrs {
        m.resize(align4(m.len()), 0);
        m.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
        m.extend_from_slice(&t.to_ne_bytes());
        m.extend_from_slice(v);
    }
    m.resize(align4(m.len()), 0);
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m[4..6].copy_from_slice(&ty.to_ne_bytes());
    m[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid stays 0: the kernel knows which socket sent it.
    m
}

fn route_request(seq: u32, dst: IpAddr) -> Vec<u8> {
    let (family, addr) = family_octets(dst);
    let rtm = [family, (addr.len() * 8) as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    request(libc::RTM_GETROUTE, seq, &rtm, &[(libc::RTA_DST, &addr)])
}

/// A single get (no NLM_F_DUMP; kernel >= 4.18): the entry or -ENOENT.
fn neigh_request(seq: u32, ifindex: u32, addr: IpAddr) -> Vec<u8> {
    let (family, addr) = family_octets(addr);
    let mut ndm = [0u8; NDMSG_LEN];
    ndm[0] = family;
    ndm[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    request(libc::RTM_GETNEIGH, seq, &ndm, &[(libc::NDA_DST, &addr)])
}

fn link_request(seq: u32, ifindex: u32) -> Vec<u8> {
    let mut ifi = [0u8; IFINFOMSG_LEN];
    ifi[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    // Statistics are of no use here and make the reply larger.
    let skip_stats = (libc::RTEXT_FILTER_SKIP_STATS as u32).to_ne_bytes();
    let attrs = [(libc::IFLA_EXT_MASK, &skip_stats[..])];
    request(libc::RTM_GETLINK, seq, &ifi, &attrs)
}

/// What one received datagram holds for the request numbered `seq`.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// The answer's payload (after its nlmsghdr), as a range of the datagram.
    Answer(Range<usize>),
    /// NLMSG_ERROR: a negative errno (0 would be a plain acknowledgement).
    Error(i32),
    /// Nothing here answers it.
    NotHere,
}

fn find_reply(dgram: &[u8], seq: u32, want: u16) -> io::Result<Reply> {
    let mut off = 0;
    // Every step consumes at least a header, so this ends.
    while dgram.len() - off >= NLMSG_HDRLEN {
        let rest = &dgram[off..];
        let len = u32_at(rest, 0).unwrap_or(0) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(invalid("truncated message"));
        }
        if u32_at(rest, 8) == Some(seq) {
            let ty = u16_at(rest, 4).unwrap_or(0);
            if ty == libc::NLMSG_ERROR as u16 {
                let err = u32_at(rest, NLMSG_HDRLEN).ok_or_else(|| invalid("short error"))?;
                return Ok(Reply::Error(err as i32));
            }
            if ty == want {
                return Ok(Reply::Answer(off + NLMSG_HDRLEN..off + len));
            }
        }
        off += align4(len).min(rest.len());
    }
    Ok(Reply::NotHere)
}

/// The attributes after a fixed header of `skip` bytes: (type, payload).
fn attrs(body: &[u8], skip: usize) -> io::Result<Vec<(u16, &[u8])>> {
    let mut rest = body.get(skip..).ok_or_else(|| invalid("short header"))?;
    let mut out = Vec::new();
    while rest.len() >= 4 {
        let len = u16_at(rest, 0).unwrap_or(0) as usize;
        if len < 4 || len > rest.len() {
            return Err(invalid("truncated attribute"));
        }
        out.push((u16_at(rest, 2).unwrap_or(0) & NLA_TYPE_MASK, &rest[4..len]));
        rest = &rest[align4(len).min(rest.len())..];
    }
    Ok(out)
}

/// From a route reply: the output interface and the next hop's address (the
/// gateway, or `dst` itself when on-link). None unless it is a unicast route
/// through one interface.
fn parse_route(body: &[u8], dst: IpAddr) -> io::Result<Option<(u32, IpAddr)>> {
    let rtype = *body.get(7).ok_or_else(|| invalid("short rtmsg"))?;
    if rtype != libc::RTN_UNICAST {
        return Ok(None);
    }
    let (mut oif, mut gw) = (None, None);
    let addr = |v: Option<&[u8]>| v.and_then(ip_from).ok_or_else(|| invalid("bad gateway"));
    for (ty, v) in attrs(body, RTMSG_LEN)? {
        match ty {
            libc::RTA_OIF => oif = Some(u32_at(v, 0).ok_or_else(|| invalid("bad RTA_OIF"))?),
            libc::RTA_GATEWAY => gw = Some(addr(Some(v))?),
            // struct rtvia: a u16 family, then the address (IPv4 over IPv6 gateways).
            libc::RTA_VIA => gw = Some(addr(v.get(2..))?),
            _ => {}
        }
    }
    // No RTA_OIF: a multipath route or one without a device; not ours to send.
    Ok(oif.filter(|&i| i != 0).map(|i| (i, gw.unwrap_or(dst))))
}

/// From a neighbour reply: the MAC, when the entry's state allows using it now.
fn parse_neigh(body: &[u8]) -> io::Result<Option<[u8; 6]>> {
    let state = u16_at(body, 8).ok_or_else(|| invalid("short ndmsg"))?;
    if state & NUD_USABLE == 0 || state & (libc::NUD_INCOMPLETE | libc::NUD_FAILED) != 0 {
        return Ok(None);
    }
    let attrs = attrs(body, NDMSG_LEN)?;
    let lladdr = attrs.iter().find(|(t, _)| *t == libc::NDA_LLADDR);
    let mac = lladdr.and_then(|(_, v)| <[u8; 6]>::try_from(*v).ok());
    // NOARP entries of devices without addresses carry zeros: no destination.
    Ok(mac.filter(|m| *m != [0; 6]))
}

/// From a link reply: the MTU and the interface's MAC, when it is Ethernet.
fn parse_link(body: &[u8]) -> io::Result<Option<(u32, [u8; 6])>> {
    let ty = u16_at(body, 2).ok_or_else(|| invalid("short ifinfomsg"))?;
    if ty != libc::ARPHRD_ETHER {
        return Ok(None);
    }
    let attrs = attrs(body, IFINFOMSG_LEN)?;
    let attr = |want| attrs.iter().find(|(t, _)| *t == want).map(|(_, v)| *v);
    let mtu = attr(libc::IFLA_MTU).and_then(|v| u32_at(v, 0));
    let mac = attr(libc::IFLA_ADDRESS).and_then(|v| <[u8; 6]>::try_from(v).ok());
    Ok(mtu.zip(mac))
}

/// Asks the kernel's routing and neighbour tables how a packet to a peer leaves.
pub struct Resolver {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Resolver {
    pub fn new() -> io::Result<Resolver> {
        let (family, ty) = (libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC);
        // SAFETY: plain syscall returning a descriptor we own from here on.
        let fd = cvt(unsafe { libc::socket(family, ty, libc::NETLINK_ROUTE) })?;
        // SAFETY: fd was just returned by socket() and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Connected to the kernel (port 0): no other socket can send to us.
        // SAFETY: an all-zero sockaddr_nl is valid; pid 0 is the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { zeroed() };
        kernel.nl_family = family as _;
        let sa = (&kernel as *const libc::sockaddr_nl).cast();
        // SAFETY: `sa` points at a valid sockaddr_nl of the stated size.
        cvt(unsafe { libc::connect(fd.as_raw_fd(), sa, size_of_val(&kernel) as _) })?;
        let buf = vec![0; BUF_LEN];
        Ok(Resolver { fd, seq: 0, buf })
    }

    /// Ok(Some(hop)) when the kernel would send to `dst` through an Ethernet
    /// interface (ARPHRD_ETHER) and the next hop's MAC is known now.
    /// Ok(None) when it can't be used now: no route, a route that is not
    /// RTN_UNICAST (local, blackhole, unreachable...), an interface that is not
    /// Ethernet (loopback, tun, wireguard, ppp...), or no usable neighbour entry
    /// yet (absent, NUD_INCOMPLETE, NUD_FAILED, NUD_NONE). Usable neighbour
    /// states: REACHABLE, STALE, DELAY, PROBE, PERMANENT, NOARP (an entry with
    /// NUD_NOARP and an all-zero or absent lladdr is not usable).
    /// Err when the netlink socket fails, or InvalidData for a malformed reply.
    pub fn resolve(&mut self, dst: IpAddr) -> io::Result<Option<NextHop>> {
        let dst = unmap(dst);
        let req = route_request(self.seq, dst);
        let route = self.query(req, libc::RTM_NEWROUTE, |b| parse_route(b, dst))?;
        let Some((ifindex, hop)) = route else {
            return Ok(None);
        };
        // The link before the neighbour: a tun or loopback has no neighbours.
        let req = link_request(self.seq, ifindex);
        let Some((mtu, src_mac)) = self.query(req, libc::RTM_NEWLINK, parse_link)? else {
            return Ok(None);
        };
        let req = neigh_request(self.seq, ifindex, hop);
        let mac = self.query(req, libc::RTM_NEWNEIGH, parse_neigh)?;
        Ok(mac.map(|mac| NextHop {
            ifindex,
            mac,
            src_mac,
            mtu,
        }))
    }

    /// Sends `req` (numbered `self.seq`, which then advances) and parses its
    /// answer; None when the kernel answered with an error (no route, no
    /// such entry or device...).
    fn query<T>(
        &mut self,
        req: Vec<u8>,
        want: u16,
        parse: impl FnOnce(&[u8]) -> io::Result<Option<T>>,
    ) -> io::Result<Option<T>> {
        let (fd, seq) = (self.fd.as_raw_fd(), self.seq);
        self.seq = self.seq.wrapping_add(1);
        // SAFETY: req is a valid readable slice of req.len() bytes.
        let n = unsafe { libc::send(fd, req.as_ptr().cast(), req.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        } else if n as usize != req.len() {
            return Err(io::Error::other("netlink: short send"));
        }
        for _ in 0..MAX_READS {
            let (buf, len) = (self.buf.as_mut_ptr().cast(), self.buf.len());
            // The kernel answers inside send(), so the reply is queued already:
            // never block, a lost reply must not stall the caller.
            // SAFETY: buf is writable for len bytes. MSG_TRUNC: the real length.
            let n = unsafe { libc::recv(fd, buf, len, libc::MSG_DONTWAIT | libc::MSG_TRUNC) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            } else if n as usize > len {
                return Err(invalid("reply larger than the buffer"));
            }
            match find_reply(&self.buf[..n as usize], seq, want)? {
                Reply::Answer(r) => return parse(&self.buf[r]),
                Reply::Error(_) => return Ok(None),
                Reply::NotHere => {}
            }
        }
        Err(invalid("no answer among the replies read"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The payload of the answer numbered `seq` in a datagram.
    fn body(dgram: &[u8], seq: u32, want: u16) -> &[u8] {
        match find_reply(dgram, seq, want).unwrap() {
            Reply::Answer(r) => &dgram[r],
            other => panic!("{other:?}"),
        }
    }

    fn route(rtype: u8, attrs: &[(u16, &[u8])]) -> io::Result<Option<(u32, IpAddr)>> {
        let rtm = [libc::AF_INET as u8, 32, 0, 0, 0, 0, 0, rtype, 0, 0, 0, 0];
        let d = request(libc::RTM_NEWROUTE, 5, &rtm, attrs);
        parse_route(body(&d, 5, libc::RTM_NEWROUTE), ip("10.1.0.5"))
    }

    #[test]
    fn requests_are_laid_out_as_the_kernel_reads_them() {
        let m = route_request(7, ip("10.0.0.1"));
        let hdr = (u32_at(&m, 0), u16_at(&m, 4), u16_at(&m, 6), u32_at(&m, 8));
        assert_eq!(hdr, (Some(36), Some(libc::RTM_GETROUTE), Some(1), Some(7)));
        assert_eq!(&m[16..18], &[libc::AF_INET as u8, 32]);
        assert_eq!(&m[28..36], &[8, 0, libc::RTA_DST as u8, 0, 10, 0, 0, 1]);
        let m = route_request(1, ip("fd00::1"));
        assert_eq!((m.len(), m[16], m[17]), (48, libc::AF_INET6 as u8, 128));
        let m = neigh_request(2, 5, ip("10.0.0.2"));
        let got = (u16_at(&m, 4), u32_at(&m, 20), &m[28..36]);
        let nda_dst = [8, 0, libc::NDA_DST as u8, 0, 10, 0, 0, 2];
        assert_eq!(got, (Some(libc::RTM_GETNEIGH), Some(5), &nda_dst[..]));
    }

    #[test]
    fn routes_give_interface_and_next_hop() {
        let (uc, oif) = (libc::RTN_UNICAST, (libc::RTA_OIF, &3u32.to_ne_bytes()[..]));
        let gw = (libc::RTA_GATEWAY, &[10, 0, 0, 1][..]);
        let dst = (libc::RTA_DST, &[10, 1, 0, 5][..]);
        // RTA_VIA: an IPv4 route through an IPv6 gateway.
        let mut via = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
        via.extend_from_slice(&"fe80::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        let via = (libc::RTA_VIA, &via[..]);
        let cases = [
            (uc, vec![oif, gw], Some((3, ip("10.0.0.1")))),
            // On-link: the destination is its own next hop.
            (uc, vec![dst, oif], Some((3, ip("10.1.0.5")))),
            (uc, vec![oif, via], Some((3, ip("fe80::1")))),
            (uc, vec![gw], None), // no output interface
        ];
        // Local, broadcast, multicast, blackhole, unreachable: never a next hop.
        let others = [2, 3, 5, 6, 7].map(|t| (t, vec![oif], None));
        for (rtype, attrs, want) in cases.into_iter().chain(others) {
            assert_eq!(route(rtype, &attrs).unwrap(), want, "{rtype} {attrs:?}");
        }
        let bad_gw = (libc::RTA_GATEWAY, &[10, 0, 1][..]);
        let err = route(uc, &[oif, bad_gw]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn kernel_errors_and_malformed_replies() {
        let mut e = (-libc::ENOENT).to_ne_bytes().to_vec();
        e.extend(request(libc::RTM_GETNEIGH, 8, &[0; NDMSG_LEN], &[]));
        // An answer to an older request comes first: skipped.
        let mut d = request(libc::RTM_NEWNEIGH, 7, &[0; NDMSG_LEN], &[]);
        d.extend(request(libc::NLMSG_ERROR as u16, 8, &e, &[]));
        let find = |d: &[u8], seq| find_reply(d, seq, libc::RTM_NEWNEIGH);
        assert_eq!(find(&d, 8).unwrap(), Reply::Error(-libc::ENOENT));
        assert_eq!(find(&d, 9).unwrap(), Reply::NotHere);
        // A message longer than the datagram; one shorter than its header.
        let invalid = io::ErrorKind::InvalidData;
        assert_eq!(find(&d[..d.len() - 4], 8).unwrap_err().kind(), invalid);
        d[0..4].copy_from_slice(&8u32.to_ne_bytes());
        assert_eq!(find(&d, 8).unwrap_err().kind(), invalid);
        // An attribute whose length runs past its message.
        let rtm = [0, 0, 0, 0, 0, 0, 0, libc::RTN_UNICAST, 0, 0, 0, 0];
        let oif = [(libc::RTA_OIF, &[3, 0, 0, 0][..])];
        let mut d = request(libc::RTM_NEWROUTE, 1, &rtm, &oif);
        d[28] = 12;
        let b = body(&d, 1, libc::RTM_NEWROUTE);
        assert_eq!(parse_route(b, ip("1.2.3.4")).unwrap_err().kind(), invalid);
        // Every cut of a reply parses or fails; none panics.
        d[28] = 8;
        for n in 0..d.len() {
            let b = &d[NLMSG_HDRLEN.min(n)..n];
            let _ = (find_reply(&d[..n], 1, 24), parse_route(b, ip("1.2.3.4")));
            let _ = (parse_neigh(b), parse_link(b));
        }
    }

    #[test]
    fn neighbour_states_and_link_types() {
        let mac = [2, 0, 0, 0, 0, 2];
        let neigh = |state: u16, lladdr: &[u8]| {
            let mut ndm = [0u8; NDMSG_LEN];
            ndm[8..10].copy_from_slice(&state.to_ne_bytes());
            let attrs = [(libc::NDA_LLADDR, lladdr)];
            let d = request(libc::RTM_NEWNEIGH, 1, &ndm, &attrs[..lladdr.len().min(1)]);
            parse_neigh(body(&d, 1, libc::RTM_NEWNEIGH)).unwrap()
        };
        use libc::{NUD_DELAY, NUD_NOARP, NUD_PERMANENT, NUD_PROBE, NUD_REACHABLE, NUD_STALE};
        let usable = [NUD_REACHABLE, NUD_STALE, NUD_DELAY, NUD_PROBE];
        for s in usable.into_iter().chain([NUD_PERMANENT, NUD_NOARP]) {
            assert_eq!(neigh(s, &mac), Some(mac), "state {s:#x}");
            assert_eq!(neigh(s, &[]), None, "state {s:#x} without lladdr");
        }
        assert_eq!(neigh(NUD_NOARP, &[0; 6]), None);
        for s in [libc::NUD_NONE, libc::NUD_INCOMPLETE, libc::NUD_FAILED] {
            assert_eq!(neigh(s, &mac), None, "state {s:#x}");
        }
        // A lladdr that is no MAC (an IPv4 tunnel's endpoint).
        assert_eq!(neigh(NUD_PERMANENT, &[1, 2, 3, 4]), None);

        let link = |arphrd: u16, addr: &[u8]| {
            let mut ifi = [0u8; IFINFOMSG_LEN];
            ifi[2..4].copy_from_slice(&arphrd.to_ne_bytes());
            let mtu = 1400u32.to_ne_bytes();
            let attrs = [(libc::IFLA_MTU, &mtu[..]), (libc::IFLA_ADDRESS, addr)];
            let d = request(libc::RTM_NEWLINK, 1, &ifi, &attrs);
            parse_link(body(&d, 1, libc::RTM_NEWLINK)).unwrap()
        };
        assert_eq!(link(libc::ARPHRD_ETHER, &mac), Some((1400, mac)));
        assert_eq!(link(libc::ARPHRD_ETHER, &[]), None);
        // Loopback; tun and wireguard; ppp.
        for t in [libc::ARPHRD_LOOPBACK, libc::ARPHRD_NONE, libc::ARPHRD_PPP] {
            assert_eq!(link(t, &mac), None, "type {t}");
        }
    }

    #[test]
    fn loopback_is_not_a_next_hop() {
        let mut r = Resolver::new().unwrap();
        for a in ["127.0.0.1", "::ffff:127.0.0.1", "::1"] {
            assert_eq!(r.resolve(ip(a)).unwrap(), None, "{a}");
        }
        assert_eq!(unmap(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }

    fn run_ip(cmd: &str) {
        let out = Command::new("ip").args(cmd.split(' ')).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ip {cmd}: {err}");
    }

    /// Deletes the namespace (and the links in it) however the test ends.
    struct Netns(String);

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    #[test]
    fn resolves_in_a_namespace() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return eprintln!("skipped: a network namespace needs root");
        }
        let ns = Netns(format!("kcpvpn-nh-{}", std::process::id()));
        run_ip(&format!("netns add {}", ns.0));
        let mac = "lladdr 02:00:00:00:00:02";
        for cmd in [
            "link add veth0 address 02:00:00:00:00:01 mtu 1400 type veth peer name veth1",
            "link set veth1 up",
            "link set veth0 up",
            "addr add 10.200.0.1/24 dev veth0",
            "addr add fd00:200::1/64 dev veth0 nodad",
            &format!("neigh add 10.200.0.2 {mac} nud permanent dev veth0"),
            &format!("neigh add 10.200.0.4 {mac} nud stale dev veth0"),
            &format!("neigh add fd00:200::2 {mac} nud permanent dev veth0"),
            "route add 10.201.0.0/24 via 10.200.0.2",
            "route add fd00:201::/64 via fd00:200::2",
            "tuntap add dev tun0 mode tun",
            "link set tun0 up",
            "addr add 10.202.0.1/24 dev tun0",
        ] {
            run_ip(&format!("-n {} {cmd}", ns.0));
        }
        let path = format!("/run/netns/{}", ns.0);
        std::thread::spawn(move || {
            let f = std::fs::File::open(&path).unwrap();
            // SAFETY: setns on an open namespace file; it moves only this thread.
            assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            // SAFETY: a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(c"veth0".as_ptr()) };
            let (mac, src_mac, mtu) = ([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], 1400);
            let want = Some(NextHop {
                ifindex,
                mac,
                src_mac,
                mtu,
            });
            let mut r = Resolver::new().unwrap();
            // On-link, via a gateway, a STALE entry, IPv4-mapped, IPv6 both ways.
            let found = "10.200.0.2 10.201.0.5 10.200.0.4 ::ffff:10.200.0.2";
            for a in found.split(' ').chain(["fd00:200::2", "fd00:201::5"]) {
                assert_eq!(r.resolve(ip(a)).unwrap(), want, "{a}");
            }
            // No neighbour entry (twice); no route; a local address; a tun.
            for a in "10.200.0.3 fd00:200::3 10.9.9.9 10.200.0.1 10.202.0.5".split(' ') {
                assert_eq!(r.resolve(ip(a)).unwrap(), None, "{a}");
            }
        })
        .join()
        .unwrap();
    }
}
