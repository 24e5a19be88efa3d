//! TUN offload (IFF_VNET_HDR), sans-IO: every read from and write to an
//! offloading TUN device starts with a `virtio_net_hdr`.
//!
//! Reading, the kernel hands over TCP (and UDP) "super-packets" of up to
//! 64 KB, the segmentation left to us, and packets whose checksum it left
//! unfinished ([`segment`] cuts them into the packets the wire would have
//! carried, so the tunnel's format and the peer do not change). Writing,
//! consecutive segments of one TCP flow are merged into one super-packet
//! ([`Coalescer`]), so the local stack takes them in one pass, as GRO would.
//! Without this the per-packet cost of the interface bounds the tunnel's rate,
//! and the interface's queue overflows under a bulk TCP sender.
//!
//! Nothing here panics on any input: a read the kernel should never produce
//! is an error the caller counts; a packet from the peer that is not a
//! plain TCP segment passes through unchanged.

/// Length of `struct virtio_net_hdr` (the TUN default, TUNSETVNETHDRSZ).
pub const VNET_HDR_LEN: usize = 10;
/// `flags`: the checksum at `csum_start + csum_offset` is to be completed.
pub const F_NEEDS_CSUM: u8 = 1;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
/// `gso_type` bit: the segments carry ECN (CWR only on the first).
pub const GSO_ECN: u8 = 0x80;

/// The largest IP packet (IPv4's total length, IPv6's payload length field).
const MAX_PACKET: usize = 65535;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_URG: u8 = 0x20;
const TCP_CWR: u8 = 0x80;

/// `struct virtio_net_hdr` (legacy layout, host byte order: what TUN uses
/// unless told TUNSETVNETLE/BE).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b: &[u8; VNET_HDR_LEN] = b.get(..VNET_HDR_LEN)?.try_into().ok()?;
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

/// Why a read from the interface could not be turned into packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

// ------------------------------------------------------------ checksums

use crate::checksum::{fold, sum};

/// The pseudo-header's sum for transport `proto` of `len` bytes in `ip`
/// (an IPv4 or IPv6 header; the version is read from it).
fn pseudo_sum(ip: &[u8], proto: u8, len: usize) -> u64 {
    let addrs = if ip[0] >> 4 == 4 {
        &ip[12..20]
    } else {
        &ip[8..40]
    };
    proto as u64 + len as u64 + sum(addrs)
}

fn ipv4_header_checksum(ip: &mut [u8], ihl: usize) {
    ip[10] = 0;
    ip[11] = 0;
    let c = !fold(sum(&ip[..ihl]));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// A transport checksum's final form: 0 and 0xffff are the same number,
/// and a UDP checksum of 0 would mean "none".
fn finish(acc: u64) -> [u8; 2] {
    match !fold(acc) {
        0 => [0xff, 0xff],
        c => c.to_be_bytes(),
    }
}

// ------------------------------------------------------------ segmentation

fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn put16(b: &mut [u8], i: usize, v: u16) {
    b[i..i + 2].copy_from_slice(&v.to_be_bytes());
}

/// Turns one read from an offloading interface (`hdr` and the packet after
/// it) into the packets it stands for, passing each to `emit`; returns how
/// many. A plain packet goes out in place (its checksum completed when the
/// kernel left that to us); a TSO/USO super-packet is cut into `gso_size`
/// payloads in `scratch`, each with its own lengths, IP id, sequence number,
/// flags and checksums.
pub fn segment(
    hdr: &VnetHdr,
    pkt: &mut [u8],
    scratch: &mut Vec<u8>,
    emit: &mut dyn FnMut(&mut [u8]),
) -> Result<usize, Malformed> {
    let gso = hdr.gso_type & !GSO_ECN;
    if gso == GSO_NONE {
        if hdr.flags & F_NEEDS_CSUM != 0 {
            complete_checksum(hdr, pkt)?;
        }
        emit(pkt);
        return Ok(1);
    }
    if hdr.gso_size == 0 {
        return Err(Malformed("GSO packet with a segment size of 0"));
    }
    let version = pkt.first().map(|b| b >> 4);
    let (proto, v6) = match (gso, version) {
        (GSO_TCPV4, Some(4)) => (PROTO_TCP, false),
        (GSO_TCPV6, Some(6)) => (PROTO_TCP, true),
        (GSO_UDP_L4, Some(4)) => (PROTO_UDP, false),
        (GSO_UDP_L4, Some(6)) => (PROTO_UDP, true),
        (GSO_TCPV4 | GSO_TCPV6 | GSO_UDP_L4, _) => {
            return Err(Malformed("GSO type does not match the IP version"))
        }
        _ => return Err(Malformed("unsupported GSO type")),
    };
    // The transport header starts at csum_start (the kernel's offset, which
    // also covers IPv6 extension headers); its own length is read from it.
    let l4 = hdr.csum_start as usize;
    if v6 {
        if l4 < 40 || pkt.len() < 40 {
            return Err(Malformed("IPv6 GSO packet shorter than its header"));
        }
    } else {
        if pkt.len() < 20 || l4 != ((pkt[0] & 0x0f) as usize) * 4 || l4 < 20 {
            return Err(Malformed(
                "IPv4 GSO packet: header length disagrees with csum_start",
            ));
        }
        if pkt[9] != proto {
            return Err(Malformed("IPv4 GSO packet of another protocol"));
        }
    }
    if v6 && l4 == 40 && pkt[6] != proto {
        return Err(Malformed("IPv6 GSO packet of another protocol"));
    }
    let l4_len = if proto == PROTO_TCP {
        let Some(&off) = pkt.get(l4 + 12) else {
            return Err(Malformed("GSO packet shorter than its TCP header"));
        };
        ((off >> 4) as usize) * 4
    } else {
        8
    };
    let hdrs = l4 + l4_len;
    if (proto == PROTO_TCP && l4_len < 20) || pkt.len() < hdrs {
        return Err(Malformed("GSO packet shorter than its transport header"));
    }
    let mss = hdr.gso_size as usize;
    let payload = pkt.len() - hdrs;
    if payload <= mss {
        // Nothing to cut; still finish its checksums.
        if !v6 {
            ipv4_header_checksum(pkt, l4);
        }
        transport_checksum(pkt, l4, proto);
        emit(pkt);
        return Ok(1);
    }
    if hdrs + mss > MAX_PACKET {
        return Err(Malformed("GSO segment size larger than a packet"));
    }
    let (ip, rest) = pkt.split_at(hdrs);
    let id0 = if v6 { 0 } else { be16(ip, 4) };
    let seq0 = if proto == PROTO_TCP {
        u32::from_be_bytes([ip[l4 + 4], ip[l4 + 5], ip[l4 + 6], ip[l4 + 7]])
    } else {
        0
    };
    let flags0 = if proto == PROTO_TCP { ip[l4 + 13] } else { 0 };
    let n = payload.div_ceil(mss);
    for (i, chunk) in rest.chunks(mss).enumerate() {
        scratch.clear();
        scratch.extend_from_slice(ip);
        scratch.extend_from_slice(chunk);
        let len = scratch.len();
        let s = &mut scratch[..];
        if v6 {
            put16(s, 4, (len - 40) as u16);
        } else {
            put16(s, 2, len as u16);
            put16(s, 4, id0.wrapping_add(i as u16));
            ipv4_header_checksum(s, l4);
        }
        if proto == PROTO_TCP {
            let seq = seq0.wrapping_add((i * mss) as u32);
            s[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
            let mut f = flags0;
            if i + 1 < n {
                f &= !(TCP_FIN | TCP_PSH);
            }
            if i > 0 {
                f &= !TCP_CWR;
            }
            s[l4 + 13] = f;
        } else {
            put16(s, l4 + 4, (len - l4) as u16);
        }
        transport_checksum(s, l4, proto);
        emit(s);
    }
    Ok(n)
}

/// Computes the TCP/UDP checksum of the transport segment at `l4`.
fn transport_checksum(pkt: &mut [u8], l4: usize, proto: u8) {
    let at = l4 + if proto == PROTO_TCP { 16 } else { 6 };
    pkt[at] = 0;
    pkt[at + 1] = 0;
    let len = pkt.len() - l4;
    let acc = pseudo_sum(pkt, proto, len) + sum(&pkt[l4..]);
    let c = finish(acc);
    pkt[at..at + 2].copy_from_slice(&c);
}

/// CHECKSUM_PARTIAL: the field at `csum_start + csum_offset` holds the
/// pseudo-header's sum; the sum from `csum_start` to the end completes it.
fn complete_checksum(hdr: &VnetHdr, pkt: &mut [u8]) -> Result<(), Malformed> {
    let start = hdr.csum_start as usize;
    let at = start + hdr.csum_offset as usize;
    if start >= pkt.len() || at + 2 > pkt.len() {
        return Err(Malformed("checksum offsets beyond the packet"));
    }
    let c = finish(sum(&pkt[start..]));
    pkt[at..at + 2].copy_from_slice(&c);
    Ok(())
}

// ------------------------------------------------------------ coalescing

/// Pending super-packets at most (all interfaces together): enough for the
/// flows one batch of datagrams interleaves; the buffers are the driver's,
/// not each session's.
const MAX_ITEMS: usize = 8;

/// Where a TCP segment's parts are, once it is known to be one we may merge.
#[derive(Debug, Clone, Copy)]
struct Tcp {
    v6: bool,
    /// Transport header offset (= IP header length).
    l4: usize,
    /// IP + TCP headers.
    hdrs: usize,
    seq: u32,
    flags: u8,
}

impl Tcp {
    fn payload(&self, pkt: &[u8]) -> usize {
        pkt.len() - self.hdrs
    }
}

/// A TCP segment's flow: version, addresses and ports.
fn flow_key(pkt: &[u8], t: &Tcp) -> ([u8; 36], u8) {
    let mut k = [0u8; 36];
    let addrs = if t.v6 { &pkt[8..40] } else { &pkt[12..20] };
    k[..addrs.len()].copy_from_slice(addrs);
    k[32..36].copy_from_slice(&pkt[t.l4..t.l4 + 4]);
    (k, t.v6 as u8)
}

/// Parses `pkt` as a plain TCP segment over IPv4 (not a fragment) or IPv6
/// (no extension headers) whose lengths agree with the packet's; `None`
/// for anything else.
fn parse_tcp(pkt: &[u8]) -> Option<Tcp> {
    let v6 = match pkt.first()? >> 4 {
        4 => false,
        6 => true,
        _ => return None,
    };
    let l4 = if v6 {
        if pkt.len() < 40 || pkt[6] != PROTO_TCP || be16(pkt, 4) as usize + 40 != pkt.len() {
            return None;
        }
        40
    } else {
        let ihl = ((pkt[0] & 0x0f) as usize) * 4;
        if pkt.len() < 20
            || ihl < 20
            || pkt[9] != PROTO_TCP
            || be16(pkt, 2) as usize != pkt.len()
            || be16(pkt, 6) & 0x3fff != 0
        {
            return None;
        }
        ihl
    };
    let off = ((*pkt.get(l4 + 12)? >> 4) as usize) * 4;
    let hdrs = l4 + off;
    if off < 20 || hdrs > pkt.len() {
        return None;
    }
    Some(Tcp {
        v6,
        l4,
        hdrs,
        seq: u32::from_be_bytes(pkt[l4 + 4..l4 + 8].try_into().ok()?),
        flags: pkt[l4 + 13],
    })
}

/// True when `pkt`'s TCP checksum is right (a wrong one must reach the
/// stack as it came, to be dropped there, not hidden inside a merge; the
/// same holds for the IPv4 header's, checked by the caller).
fn tcp_checksum_ok(pkt: &[u8], t: &Tcp) -> bool {
    let len = pkt.len() - t.l4;
    fold(pseudo_sum(pkt, PROTO_TCP, len) + sum(&pkt[t.l4..])) == 0xffff
}

/// Whether two segments of one flow have headers that may be merged: the
/// same IP header but for length, id and checksum, the same TCP header but
/// for sequence number, checksum and PSH.
fn same_headers(a: &[u8], ta: &Tcp, b: &[u8], tb: &Tcp) -> bool {
    if ta.hdrs != tb.hdrs || ta.l4 != tb.l4 {
        return false;
    }
    let ip_same = if ta.v6 {
        a[..4] == b[..4] && a[6..40] == b[6..40]
    } else {
        // version/ihl/tos; flags (DF); ttl/proto; addresses and options.
        a[..2] == b[..2] && a[6] == b[6] && a[8..10] == b[8..10] && a[12..ta.l4] == b[12..ta.l4]
    };
    let (l4, hdrs) = (ta.l4, ta.hdrs);
    ip_same
        && a[l4..l4 + 4] == b[l4..l4 + 4]
        && a[l4 + 8..l4 + 13] == b[l4 + 8..l4 + 13]
        && (a[l4 + 13] & !TCP_PSH) == (b[l4 + 13] & !TCP_PSH)
        && a[l4 + 14..l4 + 16] == b[l4 + 14..l4 + 16]
        && a[l4 + 18..hdrs] == b[l4 + 18..hdrs]
}

struct Item {
    tag: usize,
    key: ([u8; 36], u8),
    tcp: Tcp,
    /// The first segment, then the payloads of those merged into it.
    buf: Vec<u8>,
    gso_size: usize,
    segments: u32,
    next_seq: u32,
    /// Takes no more (its last segment was short, or pushed).
    closed: bool,
}

/// What the coalescer did, for the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoalesceStats {
    /// Super-packets written, and the segments they held.
    pub merged_writes: u64,
    pub merged_segments: u64,
}

/// Merges the packets delivered to the interfaces, between two flushes,
/// into TCP super-packets. Packets are tagged with their interface; each
/// leaves through `write(tag, vnet header, packet)`, in the order of its
/// flow (flows may overtake each other, as on any multi-queue NIC).
#[derive(Default)]
pub struct Coalescer {
    items: Vec<Item>,
    spare: Vec<Vec<u8>>,
    pub stats: CoalesceStats,
}

/// Where a coalescer's output goes: (interface tag, header, packet).
pub type Write<'a> = dyn FnMut(usize, &[u8; VNET_HDR_LEN], &[u8]) + 'a;

impl Coalescer {
    pub fn new() -> Coalescer {
        Coalescer::default()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Takes one packet for interface `tag`.
    pub fn push(&mut self, tag: usize, pkt: &[u8], write: &mut Write<'_>) {
        let plain = VnetHdr::default().encode();
        let Some(t) = parse_tcp(pkt) else {
            write(tag, &plain, pkt);
            return;
        };
        let key = flow_key(pkt, &t);
        let found = self
            .items
            .iter()
            .position(|it| it.tag == tag && it.key == key);
        let payload = t.payload(pkt);
        let mergeable = payload > 0
            && t.flags & (TCP_SYN | TCP_FIN | TCP_RST | TCP_URG | TCP_CWR) == 0
            && t.flags & TCP_ACK != 0
            && (t.v6 || fold(sum(&pkt[..t.l4])) == 0xffff)
            && tcp_checksum_ok(pkt, &t);
        if let Some(i) = found {
            let it = &self.items[i];
            let fits = mergeable
                && !it.closed
                && t.seq == it.next_seq
                && payload <= it.gso_size
                && it.buf.len() + payload <= MAX_PACKET
                && same_headers(&it.buf, &it.tcp, pkt, &t);
            if fits {
                let it = &mut self.items[i];
                it.buf.extend_from_slice(&pkt[t.hdrs..]);
                it.segments += 1;
                it.next_seq = t.seq.wrapping_add(payload as u32);
                if t.flags & TCP_PSH != 0 {
                    // The merged packet ends where this segment did.
                    let at = it.tcp.l4 + 13;
                    it.buf[at] |= TCP_PSH;
                }
                if payload < it.gso_size || t.flags & TCP_PSH != 0 {
                    it.closed = true;
                    // PSH marks the end of what the sender had: the stack
                    // should see it now, not after the batch.
                    self.flush_item(i, write);
                }
                return;
            }
            // The flow's order: what waits goes first.
            self.flush_item(i, write);
        }
        if !mergeable || t.flags & TCP_PSH != 0 {
            write(tag, &plain, pkt);
            return;
        }
        if self.items.len() >= MAX_ITEMS {
            self.flush_item(0, write);
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(pkt);
        self.items.push(Item {
            tag,
            key,
            tcp: t,
            buf,
            gso_size: payload,
            segments: 1,
            next_seq: t.seq.wrapping_add(payload as u32),
            closed: false,
        });
    }

    /// Writes everything pending.
    pub fn flush(&mut self, write: &mut Write<'_>) {
        while !self.items.is_empty() {
            self.flush_item(0, write);
        }
    }

    /// Forgets what is pending for interface `tag` (it is gone).
    pub fn discard(&mut self, tag: usize) {
        let mut i = 0;
        while i < self.items.len() {
            if self.items[i].tag == tag {
                let it = self.items.remove(i);
                self.spare.push(it.buf);
            } else {
                i += 1;
            }
        }
    }

    fn flush_item(&mut self, i: usize, write: &mut Write<'_>) {
        let mut it = self.items.remove(i);
        if it.segments == 1 {
            write(it.tag, &VnetHdr::default().encode(), &it.buf);
        } else {
            let hdr = finish_merge(&mut it);
            self.stats.merged_writes += 1;
            self.stats.merged_segments += it.segments as u64;
            write(it.tag, &hdr.encode(), &it.buf);
        }
        // Keep a few buffers (and never a huge number) for the next items.
        if self.spare.len() < MAX_ITEMS {
            self.spare.push(it.buf);
        }
    }
}

/// Fixes a merged packet's lengths and checksums and says how to cut it:
/// the TCP checksum is left partial (the pseudo-header's sum) for the
/// kernel to complete per segment.
fn finish_merge(it: &mut Item) -> VnetHdr {
    let t = it.tcp;
    let len = it.buf.len();
    let b = &mut it.buf[..];
    if t.v6 {
        put16(b, 4, (len - 40) as u16);
    } else {
        put16(b, 2, len as u16);
        ipv4_header_checksum(b, t.l4);
    }
    let partial = fold(pseudo_sum(b, PROTO_TCP, len - t.l4));
    put16(b, t.l4 + 16, partial);
    VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if t.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
        hdr_len: t.hdrs as u16,
        gso_size: it.gso_size as u16,
        csum_start: t.l4 as u16,
        csum_offset: 16,
    }
}

#[cfg(test)]
mod tests;
