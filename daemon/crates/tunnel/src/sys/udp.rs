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

/// Why a send or receive failed, counted per reason: no error about one
/// destination or one datagram may end the data path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoErrors {
    /// The socket buffer or a device queue is full (EAGAIN, ENOBUFS, ENOMEM).
    pub full: u64,
    /// No route, network down or unreachable, ICMP port unreachable.
    pub unreachable: u64,
    /// Refused by a firewall or a broadcast destination (EPERM, EACCES).
    pub refused: u64,
    /// Larger than the path or the device takes (EMSGSIZE).
    pub too_big: u64,
    /// An address the socket cannot use (EINVAL, EADDRNOTAVAIL, EAFNOSUPPORT, EDESTADDRREQ).
    pub bad_address: u64,
    /// Anything else.
    pub other: u64,
}

impl IoErrors {
    pub fn count(&mut self, errno: i32, n: u64) {
        let slot = match errno {
            libc::EAGAIN | libc::ENOBUFS | libc::ENOMEM => &mut self.full,
            libc::ENETUNREACH
            | libc::EHOSTUNREACH
            | libc::ENETDOWN
            | libc::EHOSTDOWN
            | libc::ECONNREFUSED
            | libc::ENONET
            | libc::ENODEV => &mut self.unreachable,
            libc::EPERM | libc::EACCES => &mut self.refused,
            libc::EMSGSIZE => &mut self.too_big,
            libc::EINVAL | libc::EADDRNOTAVAIL | libc::EAFNOSUPPORT | libc::EDESTADDRREQ => {
                &mut self.bad_address
            }
            _ => &mut self.other,
        };
        *slot += n;
    }

    pub fn total(&self) -> u64 {
        self.full + self.unreachable + self.refused + self.too_big + self.bad_address + self.other
    }

    /// (reason, count) pairs, for status and metrics.
    pub fn by_reason(&self) -> [(&'static str, u64); 6] {
        [
            ("full", self.full),
            ("unreachable", self.unreachable),
            ("refused", self.refused),
            ("too_big", self.too_big),
            ("bad_address", self.bad_address),
            ("other", self.other),
        ]
    }
}

/// Errors that say the descriptor itself is unusable (a bug, not the network).
fn fatal(errno: i32) -> bool {
    matches!(errno, libc::EBADF | libc::EFAULT | libc::ENOTSOCK)
}

/// Receive side: fixed buffers reused for every batch. With UDP GRO on
/// the socket, one message can hold a run of datagrams of one size (the
/// last may be shorter) that the kernel kept whole: a UDP GSO message that
/// crossed only virtual links, or datagrams its GRO merged. The run is
/// split back here, so the stack below us is walked once per run.
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    cmsgs: Vec<GroCmsg>,
    /// Per datagram of the batch: its message and its place there (None:
    /// cut, or too long).
    slots: Vec<(usize, std::ops::Range<usize>)>,
    max_datagram: usize,
    /// Datagrams larger than `max_datagram` (dropped).
    pub oversize: u64,
    pub errors: IoErrors,
    /// Messages that held several datagrams.
    pub gro_messages: u64,
}

const UDP_GRO: libc::c_int = 104;
/// Messages per receive with UDP GRO on (each buffer holds a whole run).
const GRO_BATCH: usize = 32;
/// Room for the largest run: one IP packet's payload.
const GRO_ROOM: usize = 65_536;

/// Room for one `UDP_GRO` control message (an int), 8-byte aligned.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct GroCmsg([u8; 32]);

/// Turns on UDP GRO for `fd`; false where the kernel refuses it (then each
/// message is one datagram, as without it).
pub fn enable_gro(fd: RawFd) -> bool {
    super::setsockopt_int(fd, SOL_UDP, UDP_GRO, 1).is_ok()
}

impl RecvBatch {
    /// Buffers for datagrams of up to `max_datagram` bytes; `gro`: the
    /// socket has UDP GRO on (see `enable_gro`).
    pub fn new(max_datagram: usize, gro: bool) -> Self {
        let (count, room) = if gro {
            (GRO_BATCH, GRO_ROOM)
        } else {
            // One byte more than the largest datagram, so that a longer one
            // shows as such, not cut to fit.
            (BATCH, max_datagram + 1)
        };
        RecvBatch {
            bufs: (0..count).map(|_| vec![0u8; room]).collect(),
            // SAFETY: an all-zero sockaddr_storage is a valid (AF_UNSPEC) value.
            addrs: vec![unsafe { zeroed() }; count],
            cmsgs: vec![GroCmsg([0; 32]); if gro { count } else { 0 }],
            slots: Vec::with_capacity(BATCH),
            max_datagram,
            oversize: 0,
            errors: IoErrors::default(),
            gro_messages: 0,
        }
    }

    /// The most messages one `recv` reads.
    pub fn capacity(&self) -> usize {
        self.bufs.len()
    }

    /// Datagrams in the last batch.
    pub fn datagrams(&self) -> usize {
        self.slots.len()
    }

    /// One recvmmsg. Returns how many datagrams `get_mut` may be asked for,
    /// never fewer than the messages read (0 when none were waiting, or
    /// after an error about one datagram, which is counted).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let count = self.bufs.len();
        // SAFETY: all-zero iovec / mmsghdr arrays are valid values.
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for i in 0..count {
            iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: self.bufs[i].len(),
            };
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as _;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
            if let Some(c) = self.cmsgs.get_mut(i) {
                h.msg_control = c.0.as_mut_ptr().cast();
                h.msg_controllen = c.0.len() as _;
            }
        }
        self.slots.clear();
        // SAFETY: every header points at live buffers owned by self / this frame.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                count as _,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            let errno = e.raw_os_error().unwrap_or(0);
            return match errno {
                libc::EAGAIN | libc::EINTR => Ok(0),
                e2 if fatal(e2) => Err(e),
                // An ICMP error queued on the socket (a peer's port closed)
                // surfaces here once; counted, and the next call reads on.
                _ => {
                    self.errors.count(errno, 1);
                    Ok(0)
                }
            };
        }
        let n = n as usize;
        for (i, m) in hdrs[..n].iter().enumerate() {
            let h = &m.msg_hdr;
            let len = m.msg_len as usize;
            // Cut by the kernel: longer than any buffer of ours.
            if h.msg_flags & libc::MSG_TRUNC != 0 {
                self.oversize += 1;
                continue;
            }
            let mut seg = len;
            if !h.msg_control.is_null() {
                // SAFETY: walks the control messages the kernel wrote into our buffer.
                unsafe {
                    let mut cm = libc::CMSG_FIRSTHDR(h);
                    while !cm.is_null() {
                        if (*cm).cmsg_level == SOL_UDP && (*cm).cmsg_type == UDP_GRO {
                            let g: libc::c_int =
                                std::ptr::read_unaligned(libc::CMSG_DATA(cm).cast());
                            if g > 0 {
                                seg = g as usize;
                            }
                        }
                        cm = libc::CMSG_NXTHDR(h, cm);
                    }
                }
            }
            if seg < len {
                self.gro_messages += 1;
            }
            if len == 0 {
                // An empty datagram is one too (the endpoint counts it).
                self.slots.push((i, 0..0));
            }
            let mut at = 0;
            while at < len {
                let end = (at + seg).min(len);
                if end - at > self.max_datagram {
                    self.oversize += 1;
                } else {
                    self.slots.push((i, at..end));
                }
                at = end;
            }
        }
        Ok(self.slots.len().max(n))
    }

    /// The i-th datagram of the last batch and its source address (None
    /// for a datagram that was cut or has no usable source).
    pub fn get_mut(&mut self, i: usize) -> Option<(&mut [u8], SocketAddr)> {
        let (msg, range) = self.slots.get(i)?.clone();
        let from = sockaddr_from(&self.addrs[msg])?;
        Some((&mut self.bufs[msg][range], from))
    }
}

/// Send side: datagrams are written straight into the queue's buffers (the
/// sealer writes there), then leave together in one sendmmsg. Runs of
/// datagrams to one address, all of one size but the last (which may be
/// shorter), leave as one UDP GSO message (`UDP_SEGMENT`): the kernel then
/// walks its UDP/IP stack once per run instead of once per datagram, and
/// that walk is most of what a datagram costs at Gbit/s.
pub struct SendQueue {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    addr_lens: Vec<libc::socklen_t>,
    count: usize,
    /// Off once the kernel refused a GSO message (old kernel, a device
    /// without segmentation): then one datagram per message, as before.
    gso: bool,
    pub sent: u64,
    /// Datagrams not sent, by reason.
    pub errors: IoErrors,
    pub gso_messages: u64,
}

const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
/// The kernel's limit on segments per GSO message (UDP_MAX_SEGMENTS).
const GSO_MAX_SEGMENTS: usize = 64;
/// A GSO message's payload must fit one IP packet.
const GSO_MAX_BYTES: usize = 65_000;

/// Room for one `UDP_SEGMENT` control message (u16), 8-byte aligned.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct SegmentCmsg([u8; 32]);

impl SendQueue {
    pub fn new(max_datagram: usize) -> Self {
        SendQueue {
            bufs: (0..BATCH)
                .map(|_| Vec::with_capacity(max_datagram))
                .collect(),
            addrs: vec![unsafe { zeroed() }; BATCH],
            addr_lens: vec![0; BATCH],
            count: 0,
            gso: true,
            sent: 0,
            errors: IoErrors::default(),
            gso_messages: 0,
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

    fn same_addr(&self, a: usize, b: usize) -> bool {
        let n = self.addr_lens[a] as usize;
        if n != self.addr_lens[b] as usize {
            return false;
        }
        // SAFETY: both are live sockaddr_storage values of at least n bytes.
        let (x, y) = unsafe {
            (
                std::slice::from_raw_parts(
                    (&self.addrs[a] as *const libc::sockaddr_storage).cast::<u8>(),
                    n,
                ),
                std::slice::from_raw_parts(
                    (&self.addrs[b] as *const libc::sockaddr_storage).cast::<u8>(),
                    n,
                ),
            )
        };
        x == y
    }

    /// How many datagrams from `i` on can leave as one GSO message.
    fn run_len(&self, i: usize) -> usize {
        if !self.gso {
            return 1;
        }
        let size = self.bufs[i].len();
        if size == 0 {
            return 1;
        }
        let max = GSO_MAX_SEGMENTS.min(GSO_MAX_BYTES / size).max(1);
        let mut k = 1;
        while i + k < self.count && k < max && self.same_addr(i, i + k) {
            let len = self.bufs[i + k].len();
            if len > size || len == 0 {
                break;
            }
            k += 1;
            if len < size {
                break; // a shorter one ends the run
            }
        }
        k
    }

    /// Sends everything queued. Datagrams the kernel refuses (buffer full, no
    /// route, a forged broadcast source, ...) are counted by reason and
    /// dropped: KCP retransmits what mattered, and an error about one
    /// destination never stops the others. Errs only when the socket itself
    /// is unusable.
    pub fn flush(&mut self, fd: RawFd) -> io::Result<()> {
        let mut start = 0;
        while start < self.count {
            let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
            let mut cmsgs = [SegmentCmsg([0; 32]); BATCH];
            let mut runs = [0usize; BATCH];
            // One header per run; iovecs in order, so a run's are contiguous.
            let (mut m, mut i) = (0, start);
            while i < self.count {
                let k = self.run_len(i);
                for j in 0..k {
                    iovs[i - start + j] = libc::iovec {
                        iov_base: self.bufs[i + j].as_mut_ptr().cast(),
                        iov_len: self.bufs[i + j].len(),
                    };
                }
                let h = &mut hdrs[m].msg_hdr;
                h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = self.addr_lens[i];
                h.msg_iov = &mut iovs[i - start];
                h.msg_iovlen = k as _;
                if k > 1 {
                    let c = &mut cmsgs[m];
                    h.msg_control = c.0.as_mut_ptr().cast();
                    // SAFETY: the buffer is aligned and large enough for one
                    // cmsghdr carrying a u16.
                    unsafe {
                        h.msg_controllen = libc::CMSG_SPACE(size_of::<u16>() as u32) as _;
                        let cm = libc::CMSG_FIRSTHDR(h);
                        (*cm).cmsg_level = SOL_UDP;
                        (*cm).cmsg_type = UDP_SEGMENT;
                        (*cm).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
                        let seg = self.bufs[i].len() as u16;
                        std::ptr::write_unaligned(libc::CMSG_DATA(cm).cast::<u16>(), seg);
                    }
                }
                runs[m] = k;
                m += 1;
                i += k;
            }
            // SAFETY: headers point at live buffers for the duration of the call.
            let r = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), m as _, 0) };
            if r < 0 {
                let e = io::Error::last_os_error();
                let head = runs[0];
                let errno = e.raw_os_error().unwrap_or(0);
                match errno {
                    libc::EINTR => continue,
                    // The device or kernel cannot segment: send singly from now.
                    libc::EIO | libc::EINVAL | libc::EOPNOTSUPP if head > 1 => {
                        self.gso = false;
                        continue;
                    }
                    e2 if fatal(e2) => {
                        self.count = 0;
                        return Err(e);
                    }
                    _ => {
                        // Skip the message at the head of the batch and go on.
                        self.errors.count(errno, head as u64);
                        start += head;
                        continue;
                    }
                }
            }
            // r > 0 here: at least one message was queued.
            let done = &runs[..r as usize];
            let datagrams: usize = done.iter().sum();
            self.sent += datagrams as u64;
            self.gso_messages += done.iter().filter(|&&k| k > 1).count() as u64;
            start += datagrams;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    fn queue(q: &mut SendQueue, to: &SocketAddr, payload: &[u8]) {
        q.next_buf().extend_from_slice(payload);
        q.commit(to);
    }

    /// Real sockets on loopback: equal datagrams to one address leave as one
    /// GSO message and arrive as the datagrams they were, a shorter one
    /// ends a run, and another address starts a new one.
    #[test]
    fn runs_leave_as_gso_messages_and_arrive_as_datagrams() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&a, &b] {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        }
        let (to_a, to_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let mut q = SendQueue::new(1400);
        let mut expect_a = Vec::new();
        for i in 0..10u8 {
            let p = vec![i; 1200];
            queue(&mut q, &to_a, &p);
            expect_a.push(p);
        }
        let short = vec![0xEE; 300];
        queue(&mut q, &to_a, &short);
        expect_a.push(short);
        for i in 0..3u8 {
            queue(&mut q, &to_b, &[0x80 | i; 700]);
        }
        let after = vec![0x55; 1200];
        queue(&mut q, &to_a, &after);
        expect_a.push(after);
        q.flush(tx.as_raw_fd()).unwrap();
        assert_eq!(q.sent, 15);
        assert_eq!(q.errors.total(), 0);
        if q.gso {
            // [10 × 1200 + 300] to a, [3 × 700] to b, [1200] to a.
            assert_eq!(q.gso_messages, 2);
        }
        let mut buf = [0u8; 2000];
        for want in &expect_a {
            let n = a.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &want[..]);
        }
        for i in 0..3u8 {
            let n = b.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[0x80 | i; 700][..]);
        }
    }

    #[test]
    fn a_longer_datagram_is_not_part_of_the_run_before_it() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let to = a.local_addr().unwrap();
        let mut q = SendQueue::new(1400);
        let sizes = [500, 500, 900, 900, 900, 100, 1300];
        for (i, &n) in sizes.iter().enumerate() {
            queue(&mut q, &to, &vec![i as u8; n]);
        }
        assert_eq!((q.run_len(0), q.run_len(2), q.run_len(5)), (2, 4, 1));
        q.flush(tx.as_raw_fd()).unwrap();
        let mut buf = [0u8; 2000];
        for (i, &n) in sizes.iter().enumerate() {
            let got = a.recv(&mut buf).unwrap();
            assert_eq!(&buf[..got], &vec![i as u8; n][..]);
        }
    }

    /// With UDP GRO on, a GSO run that crossed loopback whole arrives as one
    /// message and is split back into its datagrams; one longer than the
    /// largest allowed is dropped and counted. Without GRO, the same
    /// datagrams arrive one per message.
    #[test]
    fn a_run_received_whole_is_split_back() {
        for gro in [true, false] {
            let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
            let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
            let on = gro && enable_gro(rx.as_raw_fd());
            crate::sys::set_nonblocking(rx.as_raw_fd()).unwrap();
            let to = rx.local_addr().unwrap();
            let mut q = SendQueue::new(1400);
            let mut want: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1000]).collect();
            want.push(vec![0xAA; 123]);
            for p in &want {
                queue(&mut q, &to, p);
            }
            queue(&mut q, &to, &[0xBB; 1300]); // past max_datagram below
            q.flush(tx.as_raw_fd()).unwrap();
            tx.send_to(&[], to).unwrap(); // empty: still a datagram
            want.push(Vec::new());
            std::thread::sleep(Duration::from_millis(50));
            let mut b = RecvBatch::new(1200, on);
            let mut got = Vec::new();
            for _ in 0..100 {
                let n = b.recv(rx.as_raw_fd()).unwrap();
                if n == 0 {
                    break;
                }
                for i in 0..n {
                    if let Some((d, from)) = b.get_mut(i) {
                        assert_eq!(from, tx.local_addr().unwrap());
                        got.push(d.to_vec());
                    }
                }
            }
            assert_eq!(got, want, "gro {on}");
            assert_eq!(b.oversize, 1, "gro {on}");
            if on && q.gso {
                assert!(b.gro_messages >= 1, "the run arrived whole");
            }
        }
    }
}
