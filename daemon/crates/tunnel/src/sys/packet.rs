//! A packet socket that sends whole Ethernet frames with a virtio-net
//! header in front (PACKET_VNET_HDR): fake TCP's segment runs go out as one
//! frame each and the kernel cuts them into segments and checksums them
//! (TSO/GSO), the way UDP GSO does for UDP mode. A raw IP socket has no
//! such offload: each segment would cross the host's stack alone.
//!
//! It opens with protocol 0, so it receives nothing (no copy of the host's
//! traffic). Frames skip the host's IP output path (routing, netfilter):
//! the transport looks the route and the next hop up itself, and uses this
//! path only where the host tracks no connections (see transport::tcp).
use super::udp::IoErrors;
use super::{cvt, sendmmsg_all, setsockopt_int, socket_buffers};
use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const PACKET_VNET_HDR: i32 = 15;
/// The virtio-net header's size (no mergeable-buffers field).
pub const VNET_HDR: usize = 10;
pub const ETH_HDR: usize = 14;
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
/// The most frames one sendmmsg takes.
const CHUNK: usize = 64;

pub fn packet_socket(sndbuf: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall returning a descriptor we own from here on.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    setsockopt_int(fd.as_raw_fd(), libc::SOL_PACKET, PACKET_VNET_HDR, 1)?;
    socket_buffers(fd.as_raw_fd(), sndbuf, false, true);
    Ok(fd)
}

/// The virtio-net header and the Ethernet header in front of a run of
/// TCP segments: `l3_len` + `l4_len` bytes of IP and TCP headers follow,
/// then the segments' payloads, `seg_payload` bytes each (the last may be
/// shorter). `segments` > 1 asks the kernel to cut the run (TSO); either
/// way it computes the TCP checksum, whose field holds the pseudo-header's
/// sum.
#[allow(clippy::too_many_arguments)]
pub fn frame_prefix(
    out: &mut [u8; VNET_HDR + ETH_HDR],
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    ipv6: bool,
    l3_len: usize,
    l4_len: usize,
    seg_payload: usize,
    segments: usize,
) {
    let gso = match (segments > 1, ipv6) {
        (false, _) => VIRTIO_NET_HDR_GSO_NONE,
        (true, false) => VIRTIO_NET_HDR_GSO_TCPV4,
        (true, true) => VIRTIO_NET_HDR_GSO_TCPV6,
    };
    let hdr_len = (ETH_HDR + l3_len + l4_len) as u16;
    let gso_size = if segments > 1 { seg_payload as u16 } else { 0 };
    // Offsets count from the frame's first byte (the Ethernet header).
    let csum_start = (ETH_HDR + l3_len) as u16;
    let csum_offset = 16u16;
    // Little-endian: the host's order for a packet socket's header on the
    // machines this runs on (x86, arm64).
    out[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    out[1] = gso;
    out[2..4].copy_from_slice(&hdr_len.to_le_bytes());
    out[4..6].copy_from_slice(&gso_size.to_le_bytes());
    out[6..8].copy_from_slice(&csum_start.to_le_bytes());
    out[8..10].copy_from_slice(&csum_offset.to_le_bytes());
    let e = &mut out[VNET_HDR..];
    e[0..6].copy_from_slice(&dst_mac);
    e[6..12].copy_from_slice(&src_mac);
    let ethertype: u16 = if ipv6 { 0x86dd } else { 0x0800 };
    e[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

/// One frame to send: the interface it leaves by, and which of the
/// shared parts (prefix, headers, payloads) make it, in order.
pub struct Frame {
    pub ifindex: u32,
    pub parts: std::ops::Range<usize>,
}

/// Sends frames with sendmmsg; refusals are counted by reason (per frame),
/// never fatal unless the socket itself is unusable. `left[i]` says whether
/// frame `i` left.
pub fn send_frames(
    fd: RawFd,
    frames: &[Frame],
    parts: &[&[u8]],
    errors: &mut IoErrors,
    left: &mut Vec<bool>,
) -> io::Result<()> {
    left.clear();
    left.resize(frames.len(), false);
    let mut iovs: Vec<libc::iovec> = parts
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut _,
            iov_len: p.len(),
        })
        .collect();
    for (c, chunk) in frames.chunks(CHUNK).enumerate() {
        let base = c * CHUNK;
        let mut addrs: Vec<libc::sockaddr_ll> = chunk
            .iter()
            .map(|f| {
                // SAFETY: an all-zero sockaddr_ll is a valid value.
                let mut a: libc::sockaddr_ll = unsafe { zeroed() };
                a.sll_family = libc::AF_PACKET as u16;
                a.sll_ifindex = f.ifindex as i32;
                a
            })
            .collect();
        // SAFETY: an all-zero mmsghdr is a valid value.
        let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { zeroed() }; chunk.len()];
        for ((h, a), f) in hdrs.iter_mut().zip(addrs.iter_mut()).zip(chunk) {
            let m = &mut h.msg_hdr;
            m.msg_name = (a as *mut libc::sockaddr_ll).cast();
            m.msg_namelen = size_of::<libc::sockaddr_ll>() as _;
            m.msg_iov = iovs[f.parts.clone()].as_mut_ptr();
            m.msg_iovlen = f.parts.len() as _;
        }
        sendmmsg_all(fd, &mut hdrs, errors, |r| {
            left[base + r.start..base + r.end].fill(true)
        })?;
    }
    Ok(())
}

/// Whether the host's connection tracking is at work in this network
/// namespace: then every segment must cross its hooks (a tracked flow
/// whose sent bytes it never saw would have its ACKs judged invalid), so
/// the packet path stays off. Unknown counts as at work.
pub fn host_tracks_connections() -> bool {
    match std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count") {
        Ok(s) => s.trim() != "0",
        // No conntrack module: nothing tracks.
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(_) => true,
    }
}
