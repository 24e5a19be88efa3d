//! Fake TCP, sans-IO: the segments and the per-peer connection state that
//! make kcpvpn's datagrams look, to a stateful firewall, like one long TCP
//! connection per client (see docs/protocol.md, "Fake TCP").
//!
//! Nothing here retransmits or orders bytes: each datagram is one segment,
//! KCP above does reliability. What is kept is exactly what a conntrack
//! middlebox checks: a three-way handshake first, then sequence numbers that
//! advance by the bytes sent, acknowledgements of the bytes received, the
//! ACK flag, a window that covers what is in flight, valid checksums.
//!
//! The server keeps no state for a peer before it proves itself: the ISN of
//! its SYN-ACK is a keyed hash of the 4-tuple (a SYN cookie), and a flow is
//! created by the first non-SYN segment that acknowledges it.
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

pub const IPV4_HEADER: usize = 20;
pub const IPV6_HEADER: usize = 40;
pub const TCP_HEADER: usize = 20;
/// SYN options: MSS (4), NOP + window scale (4), SACK permitted + 2 NOPs (4).
const SYN_OPTIONS: usize = 12;
/// Room for the largest header this module writes (IPv6 + TCP + SYN options).
pub const MAX_HEADER: usize = IPV6_HEADER + TCP_HEADER + SYN_OPTIONS;
/// Every data segment's payload is one frame: the datagram's length (2
/// bytes, big-endian), then the datagram. A packet can arrive holding
/// several frames back to back: a run the sender's kernel was to segment
/// (TSO) that crossed only virtual links whole, or segments the receiver's
/// GRO merged. The lengths split it again.
pub const FRAME_HEADER: usize = 2;
/// Bytes a data segment adds over a UDP datagram (a 20-byte TCP header
/// instead of an 8-byte UDP one, data segments carry no options; the
/// frame's length).
pub const EXTRA_OVER_UDP: usize = TCP_HEADER - 8 + FRAME_HEADER;

/// Our window scale: 65535 << 10 = 64 MiB, so a conntrack middlebox never
/// finds a burst beyond the window we advertise.
pub const WSCALE: u8 = 10;
const WINDOW: u16 = 0xffff;
/// Segments whose end lies further than this past what we acknowledged are
/// not ours (or not any more): dropped.
const ACCEPT_AHEAD: u32 = 1 << 28;
/// SYN retransmission interval, and the wait before a new connection after
/// a reset or a dead connection (ms).
pub const SYN_RETRY_MS: u64 = 1000;
/// Client: with nothing received for this long, a keepalive probe goes out
/// (once per interval); the server answers each with an ACK.
pub const PROBE_AFTER_MS: u64 = 1000;
/// Client: with nothing received for this long despite probes, the
/// connection is dead (conntrack flushed, NAT rebound, server restarted):
/// a new one is opened from a new port.
pub const DEAD_AFTER_MS: u64 = 4000;
/// Server: a flow that received nothing for this long is forgotten.
pub const FLOW_IDLE_MS: u64 = 180_000;
/// Server: the most flows at once (each is a proven peer).
pub const MAX_FLOWS: usize = 16_384;
/// Cookie lifetime step (ms): a SYN-ACK's cookie is accepted for one to two steps.
const COOKIE_STEP_MS: u64 = 64_000;

/// Why a received packet was not a segment for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// Shorter than its headers claim.
    Short,
    /// Not IPv4/TCP, a fragment, or IP options we do not read.
    NotTcp,
    /// A TCP header that no stack would send (data offset out of range).
    Header,
    /// The checksum does not match.
    Checksum,
}

/// A parsed segment; `payload` indexes the buffer that was parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// The window scale option (SYNs only).
    pub wscale: Option<u8>,
    pub payload: std::ops::Range<usize>,
    /// The checksum was left for offload (see `parse_tcp`).
    pub offloaded: bool,
}

use crate::checksum::{fold, sum};

fn pseudo_sum(src: IpAddr, dst: IpAddr, tcp_len: usize) -> u64 {
    let mut acc = 6u64 + tcp_len as u64;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc += sum(&s.octets()) + sum(&d.octets());
        }
        (s, d) => {
            acc += sum(&v6(s).octets()) + sum(&v6(d).octets());
        }
    }
    acc
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Parses an IPv4 packet (as a raw IPPROTO_TCP socket reads it).
pub fn parse_ipv4(pkt: &[u8]) -> Result<Segment, Bad> {
    if pkt.len() < IPV4_HEADER {
        return Err(Bad::Short);
    }
    if pkt[0] >> 4 != 4 || pkt[9] != 6 {
        return Err(Bad::NotTcp);
    }
    let ihl = (pkt[0] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([pkt[2], pkt[3]]) as usize;
    // More fragments, or a fragment offset: a whole segment never looks like that.
    if u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0 {
        return Err(Bad::NotTcp);
    }
    if ihl < IPV4_HEADER || total < ihl || total > pkt.len() {
        return Err(Bad::Short);
    }
    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
    parse_tcp(src.into(), dst.into(), &pkt[..total], ihl)
}

/// Parses the TCP segment at `pkt[at..]` sent from `src` to `dst` (an IPv6
/// raw socket reads no IP header: the addresses come with the packet).
pub fn parse_tcp(src: IpAddr, dst: IpAddr, pkt: &[u8], at: usize) -> Result<Segment, Bad> {
    let tcp = pkt.get(at..).ok_or(Bad::Short)?;
    if tcp.len() < TCP_HEADER {
        return Err(Bad::Short);
    }
    let off = (tcp[12] >> 4) as usize * 4;
    if off < TCP_HEADER {
        return Err(Bad::Header);
    }
    if off > tcp.len() {
        return Err(Bad::Short);
    }
    let be16 = |i: usize| u16::from_be_bytes([tcp[i], tcp[i + 1]]);
    // A segment that never left this host's virtual links whole, or that
    // GRO merged after checking each part, comes with only the
    // pseudo-header's sum in its checksum field (the offload's contract).
    // Accepted as such: the datagrams inside are authenticated anyway.
    let pseudo = pseudo_sum(src, dst, tcp.len());
    let offloaded = be16(16) == fold(pseudo);
    if !offloaded && fold(pseudo + sum(tcp)) != 0xffff {
        return Err(Bad::Checksum);
    }
    let be32 = |i: usize| u32::from_be_bytes([tcp[i], tcp[i + 1], tcp[i + 2], tcp[i + 3]]);
    let flags = tcp[13];
    let mut wscale = None;
    if flags & SYN != 0 {
        let mut opts = &tcp[TCP_HEADER..off];
        while let Some(&kind) = opts.first() {
            match kind {
                0 => break,
                1 => opts = &opts[1..],
                _ => {
                    let Some(&len) = opts.get(1) else { break };
                    let len = len as usize;
                    if len < 2 || len > opts.len() {
                        break; // malformed: ignore the rest, as stacks do
                    }
                    if kind == 3 && len == 3 {
                        wscale = Some(opts[2].min(14));
                    }
                    opts = &opts[len..];
                }
            }
        }
    }
    Ok(Segment {
        src: SocketAddr::new(src, be16(0)),
        dst: SocketAddr::new(dst, be16(2)),
        seq: be32(4),
        ack: be32(8),
        flags,
        window: be16(14),
        wscale,
        payload: at + off..pkt.len(),
        offloaded,
    })
}

/// Appends to `out` the datagrams of the frames in `buf[range]` (see
/// FRAME_HEADER), as ranges of `buf`. Returns false when a frame is
/// malformed (empty, or longer than what is left): the frames before it
/// are kept, the rest is dropped.
pub fn frames(
    buf: &[u8],
    range: std::ops::Range<usize>,
    out: &mut Vec<std::ops::Range<usize>>,
) -> bool {
    let Some(mut rest) = buf.get(range.clone()) else {
        return false;
    };
    let mut at = range.start;
    while !rest.is_empty() {
        let Some(len) = rest.get(..FRAME_HEADER) else {
            return false;
        };
        let len = u16::from_be_bytes([len[0], len[1]]) as usize;
        if len == 0 || FRAME_HEADER + len > rest.len() {
            return false;
        }
        out.push(at + FRAME_HEADER..at + FRAME_HEADER + len);
        at += FRAME_HEADER + len;
        rest = &rest[FRAME_HEADER + len..];
    }
    true
}

/// One segment's headers, to be written before its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// SYN options: (MSS, window scale or None).
    pub syn: Option<(u16, Option<u8>)>,
}

impl Header {
    /// Writes the IP and TCP headers for `payload` into `out` (at least
    /// MAX_HEADER bytes) with a valid TCP checksum; returns their length.
    /// `tos` is the IPv4 TOS / IPv6 traffic class byte. The IPv4 header
    /// checksum and ID are left to the kernel (a raw socket fills them).
    pub fn write(&self, payload: &[u8], tos: u8, out: &mut [u8]) -> usize {
        let (ip_len, n) = self.headers(payload.len(), tos, out);
        let s = pseudo_sum(
            self.local.ip(),
            self.remote.ip(),
            n - ip_len + payload.len(),
        ) + sum(&out[ip_len..n])
            + sum(payload);
        out[ip_len + 16..ip_len + 18].copy_from_slice(&(!fold(s)).to_be_bytes());
        n
    }

    /// A data segment carrying `datagram` as one frame: writes the headers
    /// and the frame's length into `out` (at least MAX_HEADER +
    /// FRAME_HEADER bytes), the checksum covering the datagram too; returns
    /// their length (the datagram follows on the wire).
    pub fn write_frame(&self, datagram: &[u8], tos: u8, out: &mut [u8]) -> usize {
        let (ip_len, n) = self.headers(FRAME_HEADER + datagram.len(), tos, out);
        out[n..n + FRAME_HEADER].copy_from_slice(&(datagram.len() as u16).to_be_bytes());
        let tcp_len = n - ip_len + FRAME_HEADER + datagram.len();
        let s = pseudo_sum(self.local.ip(), self.remote.ip(), tcp_len)
            + sum(&out[ip_len..n + FRAME_HEADER])
            + sum(datagram);
        out[ip_len + 16..ip_len + 18].copy_from_slice(&(!fold(s)).to_be_bytes());
        n + FRAME_HEADER
    }

    /// Headers for a run of `payload_len` bytes of frames that the kernel
    /// cuts into segments and checksums (TSO through a packet socket): the
    /// TCP checksum field holds the pseudo-header's sum only, for the
    /// whole run, as the offload expects; the IPv4 header is complete
    /// (`ip_id`, its checksum), since nothing fills it in on this path.
    pub fn write_offloaded(
        &self,
        payload_len: usize,
        tos: u8,
        ip_id: u16,
        out: &mut [u8],
    ) -> usize {
        let (ip_len, n) = self.headers(payload_len, tos, out);
        let tcp_len = n - ip_len + payload_len;
        let pseudo = fold(pseudo_sum(self.local.ip(), self.remote.ip(), tcp_len));
        out[ip_len + 16..ip_len + 18].copy_from_slice(&pseudo.to_be_bytes());
        if ip_len == IPV4_HEADER {
            out[4..6].copy_from_slice(&ip_id.to_be_bytes());
            let ck = !fold(sum(&out[..IPV4_HEADER]));
            out[10..12].copy_from_slice(&ck.to_be_bytes());
        }
        n
    }

    /// The IP and TCP headers (checksum field zero) for a payload of
    /// `payload_len` bytes; returns (IP header length, both headers' length).
    fn headers(&self, payload_len: usize, tos: u8, out: &mut [u8]) -> (usize, usize) {
        let opt_len = match self.syn {
            Some(_) => SYN_OPTIONS,
            None => 0,
        };
        let tcp_len = TCP_HEADER + opt_len + payload_len;
        let ip_len = match self.remote {
            SocketAddr::V4(_) => {
                let o = &mut out[..IPV4_HEADER];
                o[0] = 0x45;
                o[1] = tos;
                o[2..4].copy_from_slice(&((IPV4_HEADER + tcp_len) as u16).to_be_bytes());
                o[4..6].fill(0);
                o[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF, as stacks send
                o[8] = 64;
                o[9] = 6;
                o[10..12].fill(0);
                o[12..16].copy_from_slice(&v4(self.local.ip()).octets());
                o[16..20].copy_from_slice(&v4(self.remote.ip()).octets());
                IPV4_HEADER
            }
            SocketAddr::V6(_) => {
                let o = &mut out[..IPV6_HEADER];
                let vtf: u32 = (6 << 28) | ((tos as u32) << 20);
                o[0..4].copy_from_slice(&vtf.to_be_bytes());
                o[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
                o[6] = 6;
                o[7] = 64;
                o[8..24].copy_from_slice(&v6(self.local.ip()).octets());
                o[24..40].copy_from_slice(&v6(self.remote.ip()).octets());
                IPV6_HEADER
            }
        };
        let t = &mut out[ip_len..ip_len + TCP_HEADER + opt_len];
        t[0..2].copy_from_slice(&self.local.port().to_be_bytes());
        t[2..4].copy_from_slice(&self.remote.port().to_be_bytes());
        t[4..8].copy_from_slice(&self.seq.to_be_bytes());
        t[8..12].copy_from_slice(&self.ack.to_be_bytes());
        t[12] = (((TCP_HEADER + opt_len) / 4) as u8) << 4;
        t[13] = self.flags;
        t[14..16].copy_from_slice(&self.window.to_be_bytes());
        t[16..20].fill(0);
        if let Some((mss, ws)) = self.syn {
            let o = &mut t[TCP_HEADER..];
            o[0..4].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
            match ws {
                Some(ws) => o[4..8].copy_from_slice(&[1, 3, 3, ws]),
                None => o[4..8].copy_from_slice(&[1, 1, 1, 1]),
            }
            o[8..12].copy_from_slice(&[1, 1, 4, 2]);
        }
        (ip_len, ip_len + TCP_HEADER + opt_len)
    }
}

fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(v) => v,
        IpAddr::V6(v) => v.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    }
}

/// `a` comes after `b` in sequence space.
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Client: our SYN is out.
    SynSent {
        sent_at: u64,
    },
    Established,
}

#[derive(Debug, Clone)]
struct Conn {
    local: SocketAddr,
    state: State,
    isn: u32,
    snd_nxt: u32,
    rcv_nxt: u32,
    /// Whether our window is scaled (both SYNs carried the option).
    scaled: bool,
    last_rx: u64,
    last_probe: u64,
    /// Payload bytes received since we last sent a segment.
    unacked_rx: u32,
}

impl Conn {
    /// Always the largest field; scaled (both SYNs carried the option) it
    /// says 64 MiB, unscaled 64 KiB, the most either can say.
    fn window(&self) -> u16 {
        WINDOW
    }
}

/// Counters of the fake-TCP layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Connections opened (client) / flows proven (server).
    pub connects: u64,
    /// Client: connections given up (reset, or silent) and reopened.
    pub reconnects: u64,
    pub resets_in: u64,
    pub syns_out: u64,
    pub syns_in: u64,
    pub probes_out: u64,
    /// Malformed or mis-checksummed packets.
    pub bad: u64,
    /// Segments of no connection of ours (or failing their cookie).
    pub stray: u64,
    /// Segments far outside the window.
    pub out_of_window: u64,
    /// Datagrams dropped because there was no connection (yet) to carry them.
    pub no_connection: u64,
    /// Server: proven peers turned away because the flow table was full.
    pub table_full: u64,
    /// Connections now (client: 0 or 1; server: flows).
    pub connections: u64,
    /// Client: datagrams dropped while no connection was up (the queue
    /// that holds them meanwhile was full).
    pub pending_dropped: u64,
    /// Packets that arrived holding several frames (a run sent whole
    /// through virtual links, or merged by receive offload).
    pub merged_in: u64,
    /// Datagrams sent in runs the kernel segments (the packet path).
    pub offload_out: u64,
}

/// What the layer above should do with a received segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// A datagram for the endpoint (`seg.payload`).
    Data,
    /// Consumed here (handshake, probe, reset) or dropped and counted.
    None,
}

/// A control segment waiting to be sent (no payload).
pub type Control = Header;

/// Which side this is.
pub enum Side {
    Client,
    Server,
}

/// The connections of one transport, keyed by the peer's address.
pub struct FakeTcp {
    side: Side,
    conns: HashMap<SocketAddr, Conn>,
    /// Keyed hasher for SYN cookies and ISNs (random per process).
    keys: RandomState,
    /// Client: no new connection before this time (ms).
    retry_at: u64,
    /// The MSS our SYNs announce.
    mss: u16,
    control: Vec<Control>,
    pub stats: TcpStats,
}

impl FakeTcp {
    pub fn new(side: Side, mss: u16) -> FakeTcp {
        FakeTcp {
            side,
            conns: HashMap::new(),
            keys: RandomState::new(),
            retry_at: 0,
            mss,
            control: Vec::new(),
            stats: TcpStats::default(),
        }
    }

    fn hash(&self, parts: &[u64]) -> u32 {
        let mut h = self.keys.build_hasher();
        for p in parts {
            h.write_u64(*p);
        }
        let v = h.finish();
        (v ^ (v >> 32)) as u32
    }

    fn addr_word(a: &SocketAddr) -> [u64; 3] {
        let o = v6(a.ip()).octets();
        [
            u64::from_be_bytes(o[..8].try_into().unwrap()),
            u64::from_be_bytes(o[8..].try_into().unwrap()),
            a.port() as u64,
        ]
    }

    /// The server's cookie ISN for this 4-tuple in time step `step`; its low
    /// bit says whether the client's SYN asked for window scaling.
    fn cookie(&self, local: &SocketAddr, remote: &SocketAddr, step: u64, scaled: bool) -> u32 {
        let (l, r) = (Self::addr_word(local), Self::addr_word(remote));
        let h = self.hash(&[l[0], l[1], l[2], r[0], r[1], r[2], step]);
        (h & !1) | scaled as u32
    }

    /// Whether a connection to `remote` can carry data now.
    pub fn established(&self, remote: &SocketAddr) -> bool {
        matches!(
            self.conns.get(remote),
            Some(c) if c.state == State::Established
        )
    }

    /// Client: whether a connection to `remote` exists or is being opened.
    pub fn connecting(&self, remote: &SocketAddr) -> bool {
        self.conns.contains_key(remote)
    }

    /// Client: whether a new connection may be opened now.
    pub fn may_connect(&self, now: u64) -> bool {
        now >= self.retry_at
    }

    /// Client: opens a connection from `local` (a fresh port) to `remote`,
    /// replacing any other: the SYN is queued.
    pub fn connect(&mut self, now: u64, local: SocketAddr, remote: SocketAddr) {
        self.conns.clear();
        let (l, r) = (Self::addr_word(&local), Self::addr_word(&remote));
        let isn = self.hash(&[l[0], l[1], l[2], r[0], r[1], r[2], now]);
        let c = Conn {
            local,
            state: State::SynSent { sent_at: now },
            isn,
            snd_nxt: isn.wrapping_add(1),
            rcv_nxt: 0,
            scaled: false,
            last_rx: now,
            last_probe: now,
            unacked_rx: 0,
        };
        self.send_syn(&c, remote);
        self.conns.insert(remote, c);
        self.stats.connects += 1;
    }

    fn send_syn(&mut self, c: &Conn, remote: SocketAddr) {
        self.control.push(Header {
            local: c.local,
            remote,
            seq: c.isn,
            ack: 0,
            flags: SYN,
            window: WINDOW,
            syn: Some((self.mss, Some(WSCALE))),
        });
        self.stats.syns_out += 1;
    }

    /// The control segments due (SYN, SYN-ACK, ACK, probes), taken.
    pub fn take_control(&mut self) -> std::vec::Drain<'_, Control> {
        self.control.drain(..)
    }

    pub fn has_control(&self) -> bool {
        !self.control.is_empty()
    }

    /// The header for a data segment of `len` bytes to `remote` (None: no
    /// established connection; the datagram is dropped and counted).
    pub fn data_header(&mut self, remote: &SocketAddr, len: usize) -> Option<Header> {
        let Some(c) = self.conns.get_mut(remote) else {
            self.stats.no_connection += 1;
            return None;
        };
        if c.state != State::Established {
            self.stats.no_connection += 1;
            return None;
        }
        let h = Header {
            local: c.local,
            remote: *remote,
            seq: c.snd_nxt,
            ack: c.rcv_nxt,
            // PSH, as a stack sets it on the last segment of a write (a TSO
            // run keeps it on its last segment only; frames survive a GRO
            // merge either way).
            flags: ACK | PSH,
            window: c.window(),
            syn: None,
        };
        c.snd_nxt = c.snd_nxt.wrapping_add(len as u32);
        c.unacked_rx = 0;
        Some(h)
    }

    /// Takes in one received segment.
    pub fn input(&mut self, now: u64, seg: &Segment) -> Input {
        match self.side {
            Side::Client => self.client_input(now, seg),
            Side::Server => self.server_input(now, seg),
        }
    }

    fn client_input(&mut self, now: u64, seg: &Segment) -> Input {
        let Some(c) = self.conns.get_mut(&seg.src) else {
            self.stats.stray += 1;
            return Input::None;
        };
        if c.local.port() != seg.dst.port() {
            self.stats.stray += 1; // an older connection's port
            return Input::None;
        }
        match c.state {
            State::SynSent { .. } => {
                if seg.flags & RST != 0 && seg.flags & ACK != 0 && seg.ack == c.isn.wrapping_add(1)
                {
                    self.stats.resets_in += 1;
                    self.reset(now, seg.src);
                    return Input::None;
                }
                if seg.flags & (SYN | ACK) != SYN | ACK || seg.ack != c.isn.wrapping_add(1) {
                    self.stats.stray += 1;
                    return Input::None;
                }
                c.state = State::Established;
                c.rcv_nxt = seg.seq.wrapping_add(1);
                c.scaled = seg.wscale.is_some();
                c.last_rx = now;
                let ack = Header {
                    local: c.local,
                    remote: seg.src,
                    seq: c.snd_nxt,
                    ack: c.rcv_nxt,
                    flags: ACK,
                    window: c.window(),
                    syn: None,
                };
                self.control.push(ack);
                Input::None
            }
            State::Established => {
                if seg.flags & RST != 0 {
                    // In-window only (RFC 5961 spirit): a blind reset must
                    // guess the sequence number.
                    if seg.seq.wrapping_sub(c.rcv_nxt) < ACCEPT_AHEAD
                        || c.rcv_nxt.wrapping_sub(seg.seq) < 2
                    {
                        self.stats.resets_in += 1;
                        self.reset(now, seg.src);
                    } else {
                        self.stats.out_of_window += 1;
                    }
                    return Input::None;
                }
                if seg.flags & SYN != 0 {
                    // A repeated SYN-ACK: our ACK was lost; say it again.
                    if seg.flags & ACK != 0 && seg.seq.wrapping_add(1) == c.rcv_nxt {
                        c.last_rx = now;
                        let ack = Header {
                            local: c.local,
                            remote: seg.src,
                            seq: c.snd_nxt,
                            ack: c.rcv_nxt,
                            flags: ACK,
                            window: c.window(),
                            syn: None,
                        };
                        self.control.push(ack);
                    } else {
                        self.stats.stray += 1;
                    }
                    return Input::None;
                }
                Self::data_in(&mut self.stats, c, now, seg)
            }
        }
    }

    /// An established connection's data or ACK segment.
    fn data_in(stats: &mut TcpStats, c: &mut Conn, now: u64, seg: &Segment) -> Input {
        if seg.flags & ACK == 0 {
            stats.stray += 1;
            return Input::None;
        }
        let len = seg.payload.len() as u32;
        let end = seg.seq.wrapping_add(len);
        if end.wrapping_sub(c.rcv_nxt) > ACCEPT_AHEAD && c.rcv_nxt.wrapping_sub(end) > ACCEPT_AHEAD
        {
            stats.out_of_window += 1;
            return Input::None;
        }
        c.last_rx = now;
        if after(end, c.rcv_nxt) {
            c.rcv_nxt = end;
        }
        if len == 0 {
            return Input::None;
        }
        c.unacked_rx = c.unacked_rx.saturating_add(len);
        Input::Data
    }

    /// Client: the connection to `remote` is gone; a new one (new port)
    /// opens on the next datagram after SYN_RETRY_MS.
    fn reset(&mut self, now: u64, remote: SocketAddr) {
        self.conns.remove(&remote);
        self.stats.reconnects += 1;
        self.retry_at = now + SYN_RETRY_MS;
    }

    fn server_input(&mut self, now: u64, seg: &Segment) -> Input {
        if seg.flags & RST != 0 {
            if let Some(c) = self.conns.get(&seg.src) {
                if seg.seq.wrapping_sub(c.rcv_nxt) < ACCEPT_AHEAD {
                    self.conns.remove(&seg.src);
                    self.stats.resets_in += 1;
                    return Input::None;
                }
            }
            self.stats.stray += 1;
            return Input::None;
        }
        if seg.flags & SYN != 0 {
            if seg.flags & ACK != 0 {
                self.stats.stray += 1;
                return Input::None;
            }
            // A new connection (the client's old one, if any, is over: it
            // never sends a SYN on a live one). Answered without state.
            self.stats.syns_in += 1;
            if self.conns.get(&seg.src).is_some_and(|c| c.local == seg.dst) {
                self.conns.remove(&seg.src);
            }
            let scaled = seg.wscale.is_some();
            let isn = self.cookie(&seg.dst, &seg.src, now / COOKIE_STEP_MS, scaled);
            self.control.push(Header {
                local: seg.dst,
                remote: seg.src,
                seq: isn,
                ack: seg.seq.wrapping_add(1),
                flags: SYN | ACK,
                window: WINDOW,
                syn: Some((self.mss, scaled.then_some(WSCALE))),
            });
            return Input::None;
        }
        if let Some(c) = self.conns.get_mut(&seg.src) {
            if c.local == seg.dst {
                // A keepalive probe (one below what we acknowledged): ACK it.
                let probe = seg.payload.is_empty() && seg.seq.wrapping_add(1) == c.rcv_nxt;
                let r = Self::data_in(&mut self.stats, c, now, seg);
                if probe {
                    let h = Header {
                        local: c.local,
                        remote: seg.src,
                        seq: c.snd_nxt,
                        ack: c.rcv_nxt,
                        flags: ACK,
                        window: c.window(),
                        syn: None,
                    };
                    self.control.push(h);
                }
                return r;
            }
        }
        // No flow: the handshake's last ACK, or the first data after it.
        if seg.flags & ACK == 0 {
            self.stats.stray += 1;
            return Input::None;
        }
        let isn = seg.ack.wrapping_sub(1);
        let step = now / COOKIE_STEP_MS;
        let scaled = isn & 1 == 1;
        let valid = [step, step.wrapping_sub(1)]
            .iter()
            .any(|&s| self.cookie(&seg.dst, &seg.src, s, scaled) == isn);
        if !valid {
            self.stats.stray += 1;
            return Input::None;
        }
        if self.conns.len() >= MAX_FLOWS {
            self.expire(now);
            if self.conns.len() >= MAX_FLOWS {
                self.stats.table_full += 1;
                return Input::None;
            }
        }
        let mut c = Conn {
            local: seg.dst,
            state: State::Established,
            isn,
            snd_nxt: seg.ack,
            rcv_nxt: seg.seq,
            scaled,
            last_rx: now,
            last_probe: now,
            unacked_rx: 0,
        };
        self.stats.connects += 1;
        let r = Self::data_in(&mut self.stats, &mut c, now, seg);
        self.conns.insert(seg.src, c);
        r
    }

    fn expire(&mut self, now: u64) {
        self.conns
            .retain(|_, c| now.saturating_sub(c.last_rx) < FLOW_IDLE_MS);
    }

    /// Timers: SYN retransmissions and keepalive probes, dead connections
    /// (client); idle flows (server). Call every few hundred ms at most.
    pub fn poll(&mut self, now: u64) {
        match self.side {
            Side::Server => {
                if self.conns.len() > MAX_FLOWS / 2
                    || self
                        .conns
                        .values()
                        .any(|c| now.saturating_sub(c.last_rx) >= FLOW_IDLE_MS)
                {
                    self.expire(now);
                }
                // A side that only receives still acknowledges now and then,
                // as a stack would: the sender's window keeps moving.
                let mut acks = Vec::new();
                for (remote, c) in self.conns.iter_mut() {
                    if c.unacked_rx >= 1 << 20 {
                        c.unacked_rx = 0;
                        acks.push(Header {
                            local: c.local,
                            remote: *remote,
                            seq: c.snd_nxt,
                            ack: c.rcv_nxt,
                            flags: ACK,
                            window: c.window(),
                            syn: None,
                        });
                    }
                }
                self.control.extend(acks);
            }
            Side::Client => {
                let Some((&remote, c)) = self.conns.iter_mut().next() else {
                    return;
                };
                match c.state {
                    State::SynSent { sent_at } => {
                        if now.saturating_sub(c.last_rx) >= DEAD_AFTER_MS {
                            // No answer to our SYNs: try again from a new port.
                            self.reset(now, remote);
                            self.retry_at = now;
                        } else if now.saturating_sub(sent_at) >= SYN_RETRY_MS {
                            c.state = State::SynSent { sent_at: now };
                            let c = c.clone();
                            self.send_syn(&c, remote);
                        }
                    }
                    State::Established => {
                        let quiet = now.saturating_sub(c.last_rx);
                        if quiet >= DEAD_AFTER_MS {
                            self.reset(now, remote);
                            self.retry_at = now;
                        } else if quiet >= PROBE_AFTER_MS
                            && now.saturating_sub(c.last_probe) >= PROBE_AFTER_MS
                        {
                            c.last_probe = now;
                            let h = Header {
                                local: c.local,
                                remote,
                                seq: c.snd_nxt.wrapping_sub(1),
                                ack: c.rcv_nxt,
                                flags: ACK,
                                window: c.window(),
                                syn: None,
                            };
                            self.control.push(h);
                            self.stats.probes_out += 1;
                        } else if c.unacked_rx >= 1 << 20 {
                            c.unacked_rx = 0;
                            let h = Header {
                                local: c.local,
                                remote,
                                seq: c.snd_nxt,
                                ack: c.rcv_nxt,
                                flags: ACK,
                                window: c.window(),
                                syn: None,
                            };
                            self.control.push(h);
                        }
                    }
                }
            }
        }
    }

    /// Connections (client: 0 or 1; server: proven flows).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }
}

#[cfg(test)]
mod tests;
