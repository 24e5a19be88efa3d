//! Thin Linux I/O for the emulator: AF_PACKET sockets bound to one
//! interface, batched with recvmmsg/sendmmsg, plus the clock and an eventfd.
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

// Not in every libc release; values from linux/if_packet.h.
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
pub const PACKET_OUTGOING: u8 = 4;

fn check(r: libc::c_int, what: impl FnOnce() -> String) -> io::Result<libc::c_int> {
    if r < 0 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{}: {e}", what())))
    } else {
        Ok(r)
    }
}

fn setopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> libc::c_int {
    // SAFETY: value points to a live T of the size we pass.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    }
}

/// A raw packet socket seeing every frame that enters one interface, and
/// sending frames out of it unchanged.
pub struct PacketSocket {
    fd: OwnedFd,
    pub ifname: String,
    pub mtu: usize,
}

impl PacketSocket {
    pub fn open(ifname: &str) -> io::Result<PacketSocket> {
        let cname = CString::new(ifname).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "interface name contains a NUL byte",
            )
        })?;
        // SAFETY: plain FFI calls on a NUL-terminated name and fresh fds.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) } as i32;
        if ifindex == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no interface {ifname:?} in this network namespace (run the emulator inside the wan namespace)"),
            ));
        }
        // Protocol 0 at creation so no frame is queued before the options are set.
        let raw = check(
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) },
            || "cannot open an AF_PACKET socket (needs CAP_NET_RAW)".to_string(),
        )?;
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let s = fd.as_raw_fd();
        let one: libc::c_int = 1;
        // Our own sends must not come back to us as "outgoing" frames.
        check(
            setopt(s, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, &one),
            || "setsockopt PACKET_IGNORE_OUTGOING".to_string(),
        )?;
        // Skip the qdisc layer on send: the emulator is the queue.
        let _ = setopt(s, libc::SOL_PACKET, PACKET_QDISC_BYPASS, &one);
        let buf: libc::c_int = 16 << 20;
        if setopt(s, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &buf) < 0 {
            let _ = setopt(s, libc::SOL_SOCKET, libc::SO_RCVBUF, &buf);
        }
        if setopt(s, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &buf) < 0 {
            let _ = setopt(s, libc::SOL_SOCKET, libc::SO_SNDBUF, &buf);
        }
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex,
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        check(
            setopt(s, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq),
            || format!("cannot set {ifname} promiscuous"),
        )?;
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex;
        check(
            unsafe {
                libc::bind(
                    s,
                    &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            },
            || format!("cannot bind a packet socket to {ifname}"),
        )?;
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, c) in ifr.ifr_name.iter_mut().zip(cname.as_bytes()) {
            *d = *c as libc::c_char;
        }
        check(
            unsafe { libc::ioctl(s, libc::SIOCGIFMTU as _, &mut ifr) },
            || format!("cannot read the MTU of {ifname}"),
        )?;
        let mtu = unsafe { ifr.ifr_ifru.ifru_mtu }.max(68) as usize;
        Ok(PacketSocket {
            fd,
            ifname: ifname.to_string(),
            mtu,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Largest frame we accept: MTU + Ethernet header + one VLAN tag.
    pub fn max_frame(&self) -> usize {
        self.mtu + 14 + 4
    }
}

/// A batch of receive buffers for recvmmsg.
pub struct RecvBatch {
    bufs: Vec<u8>,
    size: usize,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_ll>,
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside point into the batch's own heap buffers,
// which move with it; it is used by one thread at a time.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    pub fn new(count: usize, size: usize) -> RecvBatch {
        let mut b = RecvBatch {
            bufs: vec![0u8; count * size],
            size,
            iovs: Vec::with_capacity(count),
            addrs: vec![unsafe { std::mem::zeroed() }; count],
            msgs: Vec::with_capacity(count),
        };
        for i in 0..count {
            b.iovs.push(libc::iovec {
                iov_base: b.bufs[i * size..].as_mut_ptr() as *mut libc::c_void,
                iov_len: size,
            });
        }
        for i in 0..count {
            let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
            h.msg_iov = &mut b.iovs[i];
            h.msg_iovlen = 1;
            h.msg_name = &mut b.addrs[i] as *mut libc::sockaddr_ll as *mut libc::c_void;
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            b.msgs.push(libc::mmsghdr {
                msg_hdr: h,
                msg_len: 0,
            });
        }
        b
    }

    /// Non-blocking receive of up to a batch; Ok(0) when nothing is waiting.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for m in self.msgs.iter_mut() {
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            m.msg_hdr.msg_flags = 0;
        }
        loop {
            // SAFETY: msgs/iovs/bufs are valid for the whole batch.
            let r = unsafe {
                libc::recvmmsg(
                    fd,
                    self.msgs.as_mut_ptr(),
                    self.msgs.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return Ok(0),
                _ => return Err(e),
            }
        }
    }

    /// Frame `i` of the last receive: (bytes, truncated?, outgoing?).
    pub fn get(&self, i: usize) -> (&[u8], bool, bool) {
        let m = &self.msgs[i];
        let len = (m.msg_len as usize).min(self.size);
        let trunc = m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let outgoing = self.addrs[i].sll_pkttype == PACKET_OUTGOING;
        (
            &self.bufs[i * self.size..i * self.size + len],
            trunc,
            outgoing,
        )
    }
}

/// Scratch headers for sendmmsg; the frames stay where they are.
pub struct SendBatch {
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: pointers are only set and used inside `send`.
unsafe impl Send for SendBatch {}

impl SendBatch {
    pub fn new(count: usize) -> SendBatch {
        SendBatch {
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                count
            ],
            msgs: (0..count).map(|_| unsafe { std::mem::zeroed() }).collect(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.msgs.len()
    }

    /// Send frames; returns (sent, failed). A frame the kernel refuses (for
    /// example larger than the MTU) is counted and skipped; an interface that
    /// disappeared is an error.
    pub fn send<'a>(
        &mut self,
        fd: RawFd,
        frames: impl Iterator<Item = &'a [u8]>,
    ) -> io::Result<(usize, usize)> {
        let mut n = 0;
        for f in frames.take(self.msgs.len()) {
            self.iovs[n] = libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            };
            let h = &mut self.msgs[n].msg_hdr;
            h.msg_iov = &mut self.iovs[n];
            h.msg_iovlen = 1;
            n += 1;
        }
        let (mut i, mut failed) = (0, 0);
        while i < n {
            // SAFETY: the first n headers point at live frames.
            let r = unsafe {
                libc::sendmmsg(fd, self.msgs[i..].as_mut_ptr(), (n - i) as libc::c_uint, 0)
            };
            if r > 0 {
                i += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::ENXIO) | Some(libc::ENODEV) | Some(libc::EBADF) => return Err(e),
                _ => {
                    i += 1;
                    failed += 1;
                }
            }
        }
        Ok((n - failed, failed))
    }
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Wait until `fd` is readable, `stop` is signalled or `timeout_ns` passes.
/// Returns (fd readable, stop signalled).
pub fn wait(fd: RawFd, stop: RawFd, timeout_ns: u64) -> io::Result<(bool, bool)> {
    let mut fds = [
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ts = libc::timespec {
        tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: fds and ts are live for the call.
    let r = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &ts, std::ptr::null()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            return Ok((false, false));
        }
        return Err(e);
    }
    if fds[0].revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
        return Err(io::Error::other(
            "the packet socket reported an error (interface gone?)",
        ));
    }
    Ok((fds[0].revents & libc::POLLIN != 0, fds[1].revents != 0))
}

pub fn eventfd() -> io::Result<OwnedFd> {
    let r = check(
        unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) },
        || "eventfd".to_string(),
    )?;
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

pub fn signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writing 8 bytes to an eventfd.
    unsafe { libc::write(fd, &one as *const u64 as *const libc::c_void, 8) };
}

pub fn drain(fd: RawFd) {
    let mut v: u64 = 0;
    // SAFETY: reading 8 bytes from a non-blocking eventfd into a u64.
    unsafe { libc::read(fd, &mut v as *mut u64 as *mut libc::c_void, 8) };
}

/// Wake-ups for delay deadlines should be precise to microseconds, not the
/// default 50 µs timer slack.
pub fn tighten_timer_slack() {
    // SAFETY: per-thread setting, no pointers.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0) };
}
