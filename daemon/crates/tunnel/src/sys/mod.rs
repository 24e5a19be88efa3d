//! Thin wrappers over the Linux syscalls the data path uses: epoll, eventfd,
//! batched UDP (recvmmsg/sendmmsg) and TUN/TAP reads and writes. Nothing here
//! knows about the protocol.
pub mod epoll;
pub mod nexthop;
pub mod packet;
pub mod raw;
pub mod udp;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Sets an int-valued socket option.
pub(crate) fn setsockopt_int(fd: RawFd, level: i32, opt: i32, v: i32) -> io::Result<()> {
    // SAFETY: passes a pointer to a local c_int of the stated size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&v as *const i32).cast(),
            std::mem::size_of::<i32>() as _,
        )
    })?;
    Ok(())
}

/// Socket buffers of `bytes` (past net.core.*mem_max when privileged);
/// `receive` / `send`: which ones.
pub(crate) fn socket_buffers(fd: RawFd, bytes: i32, receive: bool, send: bool) {
    let wanted = [
        (receive, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (send, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ];
    for (_, force, plain) in wanted.into_iter().filter(|w| w.0) {
        if setsockopt_int(fd, libc::SOL_SOCKET, force, bytes).is_err() {
            let _ = setsockopt_int(fd, libc::SOL_SOCKET, plain, bytes);
        }
    }
}

/// Sends every message of `hdrs` with sendmmsg. A message the kernel
/// refuses is skipped and counted by reason; `sent` hears the index ranges
/// that left. Only an unusable socket is an error.
pub(crate) fn sendmmsg_all(
    fd: RawFd,
    hdrs: &mut [libc::mmsghdr],
    errors: &mut udp::IoErrors,
    mut sent: impl FnMut(std::ops::Range<usize>),
) -> io::Result<()> {
    let mut start = 0;
    while start < hdrs.len() {
        // SAFETY: the caller's headers point at buffers live for the call.
        let r =
            unsafe { libc::sendmmsg(fd, hdrs[start..].as_mut_ptr(), (hdrs.len() - start) as _, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            let errno = e.raw_os_error().unwrap_or(0);
            match errno {
                libc::EINTR => continue,
                libc::EBADF | libc::EFAULT | libc::ENOTSOCK => return Err(e),
                _ => {
                    errors.count(errno, 1);
                    start += 1;
                }
            }
        } else {
            sent(start..start + r as usize);
            start += r as usize;
        }
    }
    Ok(())
}

pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a caller-owned descriptor; no memory is passed.
    unsafe {
        let flags = cvt(libc::fcntl(fd, libc::F_GETFL))?;
        cvt(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
    }
    Ok(())
}

/// Reads one packet; `Ok(None)` when the descriptor has nothing more (EAGAIN).
pub fn read_packet(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: buf is a valid writable slice of buf.len() bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => return Ok(None),
            io::ErrorKind::Interrupted => continue,
            _ => return Err(e),
        }
    }
}

/// Writes one packet. A full queue (EAGAIN) or a packet the interface refuses
/// (e.g. while it is down) is reported as `Ok(false)`: the caller counts a drop,
/// like a full NIC ring would, rather than blocking the whole data path.
pub fn write_packet(fd: RawFd, pkt: &[u8]) -> io::Result<bool> {
    // SAFETY: pkt is a valid readable slice.
    retry_write(|| unsafe { libc::write(fd, pkt.as_ptr().cast(), pkt.len()) })
}

/// Runs one write-like call until it is not interrupted, sorting its
/// errors as [`write_packet`] says.
fn retry_write(mut call: impl FnMut() -> isize) -> io::Result<bool> {
    loop {
        if call() >= 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EIO) | Some(libc::EINVAL) | Some(libc::ENOBUFS) => {
                return Ok(false)
            }
            _ => return Err(e),
        }
    }
}

/// TUNGETIFF: `_IOR('T', 210, unsigned int)`.
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
/// The device's reads and writes start with a `virtio_net_hdr`.
pub const IFF_VNET_HDR: u16 = 0x4000;
pub const IFF_TUN: u16 = 0x0001;

/// The TUN/TAP flags of the device behind `fd` (IFF_TUN, IFF_VNET_HDR, ...);
/// `None` when `fd` is no TUN/TAP descriptor.
pub fn tun_flags(fd: RawFd) -> Option<u16> {
    // struct ifreq: the name, then the flags.
    let mut ifr = [0u8; 40];
    // SAFETY: TUNGETIFF writes one struct ifreq (40 bytes) into ifr.
    let r = unsafe { libc::ioctl(fd, TUNGETIFF as _, ifr.as_mut_ptr()) };
    (r == 0).then(|| u16::from_ne_bytes([ifr[16], ifr[17]]))
}

/// Writes one packet behind its `virtio_net_hdr` (one writev, no copy);
/// errors as [`write_packet`].
pub fn write_vnet_packet(fd: RawFd, hdr: &[u8], pkt: &[u8]) -> io::Result<bool> {
    let iov = [
        libc::iovec {
            iov_base: hdr.as_ptr() as *mut _,
            iov_len: hdr.len(),
        },
        libc::iovec {
            iov_base: pkt.as_ptr() as *mut _,
            iov_len: pkt.len(),
        },
    ];
    // SAFETY: both iovecs point at valid readable slices of their length.
    retry_write(|| unsafe { libc::writev(fd, iov.as_ptr(), 2) })
}

/// An eventfd used to wake the data-path thread (stop, new session, ...).
pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the returned descriptor is owned from here on.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a local u64. Failure (counter full) still leaves it readable.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a local u64.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Milliseconds on the monotonic clock.
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Wall-clock milliseconds since the Unix epoch (for handshake timestamps).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The addresses of this host's interfaces (in the current namespace) and
/// their broadcast addresses: (own, broadcast).
pub fn local_ips() -> (Vec<std::net::IpAddr>, Vec<std::net::IpAddr>) {
    let mut out = Vec::new();
    let mut bcast = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return (out, bcast);
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        // ifa_addr / ifa_netmask point at sockaddrs of the family they name
        // (or are null), sized and aligned for that family only: copy just
        // that many bytes into an aligned sockaddr_storage (a reference to
        // a sockaddr_storage there would be misaligned and too long).
        let sa = |p: *mut libc::sockaddr| {
            if p.is_null() {
                return None;
            }
            // SAFETY: every sockaddr starts with its family; read unaligned.
            let family = unsafe { std::ptr::addr_of!((*p).sa_family).read_unaligned() };
            let len = match family as i32 {
                libc::AF_INET => std::mem::size_of::<libc::sockaddr_in>(),
                libc::AF_INET6 => std::mem::size_of::<libc::sockaddr_in6>(),
                _ => return None,
            };
            // SAFETY: an all-zero sockaddr_storage is valid; `p` holds `len`
            // bytes of its family's sockaddr, which fits the storage.
            let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            unsafe {
                std::ptr::copy_nonoverlapping(
                    p as *const u8,
                    (&mut ss as *mut libc::sockaddr_storage).cast::<u8>(),
                    len,
                )
            };
            udp::sockaddr_from(&ss)
        };
        if let Some(a) = sa(ifa.ifa_addr) {
            out.push(a.ip());
            // The subnet's all-ones address: the kernel treats it as a
            // broadcast whether or not the interface names one.
            if let (std::net::IpAddr::V4(v4), Some(m)) = (a.ip(), sa(ifa.ifa_netmask)) {
                if let std::net::IpAddr::V4(mask) = m.ip() {
                    let (ip, mask) = (u32::from(v4), u32::from(mask));
                    if mask.count_ones() < 31 {
                        bcast.push(std::net::IpAddr::V4((ip | !mask).into()));
                    }
                }
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: frees the list getifaddrs allocated.
    unsafe { libc::freeifaddrs(head) };
    (out, bcast)
}

/// The local port a socket is bound to.
pub fn local_port(fd: RawFd) -> Option<u16> {
    // SAFETY: an all-zero sockaddr_storage is valid; getsockname writes at most its size.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: ss and len are valid out-pointers of the stated size.
    let r = unsafe {
        libc::getsockname(
            fd,
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return None;
    }
    udp::sockaddr_from(&ss).map(|a| a.port())
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_ips_include_loopback_and_broadcasts() {
        let (own, bcast) = super::local_ips();
        eprintln!("own {own:?} broadcast {bcast:?}");
        assert!(own.contains(&"127.0.0.1".parse().unwrap()), "{own:?}");
    }
}
