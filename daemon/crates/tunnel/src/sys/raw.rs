//! Raw IP sockets for fake TCP: one IPPROTO_TCP socket per family receives
//! (a classic BPF filter keeps only our port, so the kernel does not copy
//! every TCP packet of the host to us), one IPPROTO_RAW socket per family
//! sends segments whose IP and TCP headers we wrote. Batched both ways.
use super::udp::{sockaddr_from, sockaddr_to, IoErrors, BATCH};
use super::{cvt, sendmmsg_all, setsockopt_int, socket_buffers};
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn socket(family: i32, proto: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall returning a descriptor we own from here on.
    let fd = cvt(unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            proto,
        )
    })
    .map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot open a raw socket ({e}): fake TCP needs root or CAP_NET_RAW"),
        )
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Which port the filter matches on.
#[derive(Debug, Clone, Copy)]
pub enum PortMatch {
    /// Segments to this port (the server's).
    Dst(u16),
    /// Segments from this port (the client: the server's port).
    Src(u16),
}

/// The receiving socket of one family, filtered to `port`.
pub fn recv_socket(ipv6: bool, port: PortMatch, bufsize: i32) -> io::Result<OwnedFd> {
    let fd = socket(
        if ipv6 { libc::AF_INET6 } else { libc::AF_INET },
        libc::IPPROTO_TCP,
    )?;
    let (off, p) = match port {
        PortMatch::Src(p) => (0u32, p),
        PortMatch::Dst(p) => (2u32, p),
    };
    let stmt = |code: u16, k: u32| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u16, k: u32, jt: u8, jf: u8| libc::sock_filter { code, jt, jf, k };
    const LD_H_ABS: u16 = 0x28;
    const LD_H_IND: u16 = 0x48;
    const LDX_B_MSH: u16 = 0xb1;
    const JEQ_K: u16 = 0x15;
    const JSET_K: u16 = 0x45;
    const RET_K: u16 = 0x06;
    let prog: Vec<libc::sock_filter> = if ipv6 {
        // An IPv6 raw socket reads from the TCP header on.
        vec![
            stmt(LD_H_ABS, off),
            jump(JEQ_K, p as u32, 0, 1),
            stmt(RET_K, 0x40000),
            stmt(RET_K, 0),
        ]
    } else {
        vec![
            // Fragments never match (their TCP header is elsewhere or absent).
            stmt(LD_H_ABS, 6),
            jump(JSET_K, 0x3fff, 3, 0),
            stmt(LDX_B_MSH, 0),
            stmt(LD_H_IND, off),
            jump(JEQ_K, p as u32, 1, 0),
            stmt(RET_K, 0),
            stmt(RET_K, 0x40000),
        ]
    };
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut _,
    };
    // SAFETY: fprog points at `prog`, alive for the call; the kernel copies it.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            size_of::<libc::sock_fprog>() as _,
        )
    })?;
    if ipv6 {
        setsockopt_int(
            fd.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVPKTINFO,
            1,
        )?;
    }
    socket_buffers(fd.as_raw_fd(), bufsize, true, true);
    // Whatever queued before the filter was attached is not ours: drop it.
    let mut scratch = [0u8; 64];
    // SAFETY: reads into a local buffer of its stated size.
    while unsafe {
        libc::recv(
            fd.as_raw_fd(),
            scratch.as_mut_ptr().cast(),
            scratch.len(),
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
        )
    } >= 0
    {}
    Ok(fd)
}

/// The sending socket of one family: we write the IP header ourselves.
pub fn send_socket(ipv6: bool, bufsize: i32) -> io::Result<OwnedFd> {
    let fd = socket(
        if ipv6 { libc::AF_INET6 } else { libc::AF_INET },
        libc::IPPROTO_RAW,
    )?;
    if ipv6 {
        // IPPROTO_RAW implies header inclusion for IPv4; IPv6 asks for it.
        const IPV6_HDRINCL: i32 = 36;
        setsockopt_int(fd.as_raw_fd(), libc::IPPROTO_IPV6, IPV6_HDRINCL, 1)?;
    }
    socket_buffers(fd.as_raw_fd(), bufsize, true, true);
    Ok(fd)
}

/// Holds TCP `port` (0: a free one) for fake TCP: a socket of the host's
/// stack bound to it and listening, with a socket filter that drops every
/// segment. The stack then finds this socket for each segment of our flows
/// and discards it silently, where it would answer a port that no socket
/// holds with a reset; and no other program can take the port meanwhile.
/// The raw sockets get their copy before (raw delivery precedes TCP's).
/// Returns the socket and its port.
pub fn hold_port(ipv6: bool, dual: bool, port: u16) -> io::Result<(OwnedFd, u16)> {
    let family = if ipv6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain syscall.
    let fd = cvt(unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if ipv6 {
        setsockopt_int(
            fd.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            (!dual) as i32,
        )?;
    }
    // Before listen, so that not even the first SYN reaches the stack.
    let drop_all = [libc::sock_filter {
        code: 0x06, // ret #0
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let fprog = libc::sock_fprog {
        len: 1,
        filter: drop_all.as_ptr() as *mut _,
    };
    // SAFETY: fprog points at `drop_all`, alive for the call; the kernel copies it.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            size_of::<libc::sock_fprog>() as _,
        )
    })?;
    let any: SocketAddr = if ipv6 {
        SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port)
    } else {
        SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), port)
    };
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let len = sockaddr_to(&any, &mut ss);
    // SAFETY: ss holds a sockaddr of `len` bytes.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    })?;
    // SAFETY: plain syscall on our socket.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), 1) })?;
    let port = super::local_port(fd.as_raw_fd())
        .ok_or_else(|| io::Error::other("cannot read the held port"))?;
    Ok((fd, port))
}

/// The source address the host would use to reach `to` (a connected UDP
/// socket asks the routing table; nothing is sent).
pub fn source_for(to: &SocketAddr) -> io::Result<IpAddr> {
    let s = std::net::UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
    s.connect(to)?;
    Ok(s.local_addr()?.ip())
}

/// Room for one IPV6_PKTINFO control message, 8-byte aligned.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct PktInfoCmsg([u8; 64]);

/// A batch of received packets (IPv4: from the IP header; IPv6: from the
/// TCP header, with the addresses beside it).
pub struct RawRecv {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    cmsgs: Vec<PktInfoCmsg>,
    lens: Vec<usize>,
    dsts: Vec<Option<IpAddr>>,
    count: usize,
    pub oversize: u64,
    pub errors: IoErrors,
}

impl RawRecv {
    /// Room for `slots` packets (at most BATCH) of `max_packet` bytes each.
    pub fn new(slots: usize, max_packet: usize) -> RawRecv {
        let slots = slots.clamp(1, BATCH);
        RawRecv {
            bufs: (0..slots).map(|_| vec![0u8; max_packet]).collect(),
            // SAFETY: an all-zero sockaddr_storage is a valid (AF_UNSPEC) value.
            addrs: vec![unsafe { zeroed() }; BATCH],
            cmsgs: vec![PktInfoCmsg([0; 64]); BATCH],
            lens: vec![0; BATCH],
            dsts: vec![None; BATCH],
            count: 0,
            oversize: 0,
            errors: IoErrors::default(),
        }
    }

    /// One recvmmsg; how many packets arrived (0: none, or an error about
    /// one packet, counted).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // SAFETY: all-zero iovec / mmsghdr arrays are valid values.
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        let slots = self.bufs.len();
        for i in 0..slots {
            iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: self.bufs[i].len(),
            };
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as _;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.cmsgs[i].0.as_mut_ptr().cast();
            h.msg_controllen = self.cmsgs[i].0.len() as _;
        }
        // SAFETY: every header points at live buffers owned by self / this frame.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                slots as _,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            self.count = 0;
            let errno = e.raw_os_error().unwrap_or(0);
            return match errno {
                libc::EAGAIN | libc::EINTR => Ok(0),
                libc::EBADF | libc::EFAULT | libc::ENOTSOCK => Err(e),
                _ => {
                    self.errors.count(errno, 1);
                    Ok(0)
                }
            };
        }
        let n = n as usize;
        for (i, m) in hdrs.iter().enumerate().take(n) {
            let h = &m.msg_hdr;
            self.lens[i] = if h.msg_flags & libc::MSG_TRUNC != 0 {
                self.oversize += 1;
                usize::MAX
            } else {
                m.msg_len as usize
            };
            self.dsts[i] = None;
            // SAFETY: walks the control messages the kernel wrote into our buffer.
            unsafe {
                let mut cm = libc::CMSG_FIRSTHDR(h);
                while !cm.is_null() {
                    if (*cm).cmsg_level == libc::IPPROTO_IPV6
                        && (*cm).cmsg_type == libc::IPV6_PKTINFO
                    {
                        let info: libc::in6_pktinfo =
                            std::ptr::read_unaligned(libc::CMSG_DATA(cm).cast());
                        self.dsts[i] = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                    }
                    cm = libc::CMSG_NXTHDR(h, cm);
                }
            }
        }
        self.count = n;
        Ok(n)
    }

    /// Packet `i`: its bytes, its source (IPv6) and destination (IPv6) address.
    pub fn get(&mut self, i: usize) -> Option<(&mut [u8], Option<SocketAddr>, Option<IpAddr>)> {
        if i >= self.count || self.lens[i] == usize::MAX {
            return None;
        }
        let src = sockaddr_from(&self.addrs[i]);
        Some((&mut self.bufs[i][..self.lens[i]], src, self.dsts[i]))
    }
}

/// Sends a run of packets given as (headers, payload) pairs to their
/// destinations with sendmmsg; refusals are counted by reason, never fatal
/// unless the socket itself is unusable. Returns how many left.
pub fn send_batch(
    fd: RawFd,
    packets: &[(&[u8], &[u8], SocketAddr)],
    errors: &mut IoErrors,
) -> io::Result<u64> {
    let mut sent = 0u64;
    for chunk in packets.chunks(BATCH) {
        let mut iovs: Vec<[libc::iovec; 2]> = Vec::with_capacity(chunk.len());
        // SAFETY: all-zero sockaddr_storage / mmsghdr are valid values.
        let mut addrs: Vec<libc::sockaddr_storage> = vec![unsafe { zeroed() }; chunk.len()];
        let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { zeroed() }; chunk.len()];
        for (i, (h, p, to)) in chunk.iter().enumerate() {
            iovs.push([
                libc::iovec {
                    iov_base: h.as_ptr() as *mut _,
                    iov_len: h.len(),
                },
                libc::iovec {
                    iov_base: p.as_ptr() as *mut _,
                    iov_len: p.len(),
                },
            ]);
            // Raw sockets take the port field as a protocol number: zero.
            let len = sockaddr_to(&SocketAddr::new(to.ip(), 0), &mut addrs[i]);
            hdrs[i].msg_hdr.msg_namelen = len;
        }
        for i in 0..chunk.len() {
            let m = &mut hdrs[i].msg_hdr;
            m.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            m.msg_iov = iovs[i].as_mut_ptr();
            m.msg_iovlen = 2;
        }
        sendmmsg_all(fd, &mut hdrs, errors, |r| sent += r.len() as u64)?;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The held port answers nothing: a real connection attempt is neither
    /// accepted nor refused (a reset would say "refused"), it times out.
    #[test]
    fn a_held_port_swallows_segments_silently() {
        let (_held, port) = hold_port(false, false, 0).unwrap();
        let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let r = std::net::TcpStream::connect_timeout(&to, Duration::from_millis(300));
        let e = r.expect_err("the held port accepted a connection");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        // And no one else can take the port meanwhile.
        assert!(std::net::TcpListener::bind(to).is_err());
    }
}
