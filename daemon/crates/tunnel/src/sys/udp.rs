//! Batched UDP I/O: one recvmmsg fills up to `BATCH` datagrams, one sendmmsg
//! sends up to `BATCH`. Per-packet syscalls are the wall on this class of
//! machine (see docs/architecture.md), so every path batches.
use super::cvt;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

pub const BATCH: usize = 64;

pub fn sockaddr_from(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; keep them
            // in that form so replies go back through the same socket family.
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

pub fn sockaddr_to(addr: &SocketAddr, ss: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in.
            let sin: &mut libc::sockaddr_in =
                unsafe { &mut *(ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as _;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            size_of::<libc::sockaddr_in>() as _
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6: &mut libc::sockaddr_in6 =
                unsafe { &mut *(ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as _;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as _
        }
    }
}

/// Receive side: fixed buffers reused for every batch.
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    lens: Vec<usize>,
    count: usize,
}

impl RecvBatch {
    pub fn new(max_datagram: usize) -> Self {
        RecvBatch {
            bufs: (0..BATCH).map(|_| vec![0u8; max_datagram]).collect(),
            // SAFETY: an all-zero sockaddr_storage is a valid (AF_UNSPEC) value.
            addrs: vec![unsafe { zeroed() }; BATCH],
            lens: vec![0; BATCH],
            count: 0,
        }
    }

    /// One recvmmsg. Returns how many datagrams arrived (0 when none were waiting).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for i in 0..BATCH {
            iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: self.bufs[i].len(),
            };
            hdrs[i].msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as _;
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at live buffers owned by self / this frame.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as _,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            self.count = 0;
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(0),
                // An ICMP error queued on the socket (peer port closed) surfaces
                // here once; it is not a reason to stop the data path.
                Some(libc::ECONNREFUSED) | Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH) => {
                    Ok(0)
                }
                _ => Err(e),
            };
        }
        let n = n as usize;
        // A datagram longer than our buffer is truncated by the kernel (MSG_TRUNC);
        // it can't be a valid one of ours, so it's given as-is and fails authentication.
        for (len, hdr) in self.lens.iter_mut().zip(&hdrs[..n]) {
            *len = hdr.msg_len as usize;
        }
        self.count = n;
        Ok(n)
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The i-th datagram of the last batch and its source address.
    pub fn get_mut(&mut self, i: usize) -> (&mut [u8], Option<SocketAddr>) {
        let len = self.lens[i];
        (&mut self.bufs[i][..len], sockaddr_from(&self.addrs[i]))
    }
}

/// Send side: datagrams are written straight into the queue's buffers (the
/// sealer writes there), then leave together in one sendmmsg.
pub struct SendQueue {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    addr_lens: Vec<libc::socklen_t>,
    count: usize,
    pub sent: u64,
    pub send_errors: u64,
}

impl SendQueue {
    pub fn new(max_datagram: usize) -> Self {
        SendQueue {
            bufs: (0..BATCH)
                .map(|_| Vec::with_capacity(max_datagram))
                .collect(),
            addrs: vec![unsafe { zeroed() }; BATCH],
            addr_lens: vec![0; BATCH],
            count: 0,
            sent: 0,
            send_errors: 0,
        }
    }

    pub fn is_full(&self) -> bool {
        self.count == BATCH
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The buffer for the next datagram, emptied. Call `commit` to queue it.
    /// The caller must `flush` first when the queue `is_full`.
    pub fn next_buf(&mut self) -> &mut Vec<u8> {
        let b = &mut self.bufs[self.count];
        b.clear();
        b
    }

    pub fn commit(&mut self, to: &SocketAddr) {
        self.addr_lens[self.count] = sockaddr_to(to, &mut self.addrs[self.count]);
        self.count += 1;
    }

    /// Sends everything queued. Datagrams the kernel refuses (buffer full, no
    /// route) are counted and dropped: KCP retransmits what mattered.
    pub fn flush(&mut self, fd: RawFd) -> io::Result<()> {
        let mut start = 0;
        while start < self.count {
            let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
            let n = self.count - start;
            for j in 0..n {
                let i = start + j;
                iovs[j] = libc::iovec {
                    iov_base: self.bufs[i].as_mut_ptr().cast(),
                    iov_len: self.bufs[i].len(),
                };
                hdrs[j].msg_hdr.msg_name =
                    (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
                hdrs[j].msg_hdr.msg_namelen = self.addr_lens[i];
                hdrs[j].msg_hdr.msg_iov = &mut iovs[j];
                hdrs[j].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: headers point at live buffers for the duration of the call.
            let r = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as _, 0) };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN)
                    | Some(libc::ENOBUFS)
                    | Some(libc::ECONNREFUSED)
                    | Some(libc::EHOSTUNREACH)
                    | Some(libc::ENETUNREACH)
                    | Some(libc::EPERM)
                    | Some(libc::EMSGSIZE)
                    | Some(libc::EINVAL)
                    | Some(libc::EADDRNOTAVAIL) => {
                        // Skip the datagram at the head of the batch and go on.
                        self.send_errors += 1;
                        start += 1;
                        continue;
                    }
                    _ => {
                        self.count = 0;
                        return Err(e);
                    }
                }
            }
            self.sent += r as u64;
            start += r.max(1) as usize;
        }
        self.count = 0;
        Ok(())
    }
}

/// Sets the socket's DSCP (IPv4 TOS / IPv6 traffic class); dscp is 6 bits.
pub fn set_dscp(fd: RawFd, dscp: u8, ipv6: bool) -> io::Result<()> {
    let tos: libc::c_int = (dscp as libc::c_int) << 2;
    let (level, opt) = if ipv6 {
        (libc::IPPROTO_IPV6, libc::IPV6_TCLASS)
    } else {
        (libc::IPPROTO_IP, libc::IP_TOS)
    };
    // SAFETY: passes a pointer to a local c_int of the stated size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&tos as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as _,
        )
    })?;
    Ok(())
}
