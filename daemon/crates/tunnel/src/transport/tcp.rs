//! The fake-TCP transport: datagrams ride as TCP segments over raw sockets
//! (the state machine is [`crate::faketcp`]). The endpoint above sees the
//! same `(peer address, datagram)` pairs as on UDP; the peer address is the
//! peer's IP and TCP port.
//!
//! The host's own TCP stack would answer our segments with resets (no
//! socket of its own owns the flow): a listening socket of ours holds each
//! port we use, with a filter that drops every segment, so the stack
//! discards them silently instead (`sys::raw::hold_port`). The host's
//! firewall is not touched, and nothing outlives the process.
use super::{Inbound, InboundStats, Outbound, OutboundStats, Transport};
use crate::faketcp::{
    self, FakeTcp, Header, Input, Side, FRAME_HEADER, IPV4_HEADER, IPV6_HEADER, MAX_HEADER,
    TCP_HEADER,
};
use crate::sys::nexthop::{NextHop, Resolver};
use crate::sys::packet::{self, Frame, ETH_HDR, VNET_HDR};
use crate::sys::raw::{self, PortMatch, RawRecv};
use crate::sys::udp::{IoErrors, BATCH};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

/// Receive room per packet: a run that crossed virtual links whole, or
/// segments merged by receive offload, make an IP packet of up to 64 KiB.
const RX_ROOM: usize = 65_536 + 64;
/// Packets per receive call (each with RX_ROOM bytes of buffer).
const RX_SLOTS: usize = 32;
/// The most datagrams in one run the kernel segments.
const MAX_RUN: usize = 64;
/// How long a looked-up next hop (or its absence) is trusted (ms).
const HOP_TTL_MS: u64 = 1000;
/// How often the host's connection tracking is looked at again (ms).
const TRACKING_CHECK_MS: u64 = 2000;

/// What the transport is for.
#[derive(Debug, Clone)]
pub enum TcpRole {
    /// Accepts connections on `port` (IPv4 and/or IPv6).
    Server { port: u16, ipv4: bool, ipv6: bool },
    /// Connects to `server`.
    Client { server: SocketAddr },
}

#[derive(Debug, Clone)]
pub struct TcpConfig {
    pub role: TcpRole,
    /// The largest datagram carried (the segment's payload).
    pub max_datagram: usize,
    /// IPv4 TOS / IPv6 traffic class byte of every segment.
    pub tos: u8,
    /// Socket buffer bytes.
    pub sockbuf: i32,
}

/// State both halves use (they run on one thread: the lock is never contended).
struct Shared {
    tcp: FakeTcp,
    /// Client: the socket holding the current connection's local port
    /// (see `raw::hold_port`).
    reservation: Option<OwnedFd>,
}

pub struct Tcp {
    cfg: TcpConfig,
    rx: Vec<(bool, OwnedFd)>,
    tx4: Option<OwnedFd>,
    tx6: Option<OwnedFd>,
    shared: Arc<Mutex<Shared>>,
    poll_fd: OwnedFd,
    /// Server: the socket that holds the port (see `raw::hold_port`).
    _held: Option<OwnedFd>,
}

fn now_ms() -> u64 {
    crate::sys::monotonic_ms()
}

impl Tcp {
    pub fn new(cfg: TcpConfig) -> io::Result<Tcp> {
        let (families, port, side) = match &cfg.role {
            TcpRole::Server { port, ipv4, ipv6 } => {
                let mut f = Vec::new();
                if *ipv4 {
                    f.push(false);
                }
                if *ipv6 {
                    f.push(true);
                }
                (f, PortMatch::Dst(*port), Side::Server)
            }
            TcpRole::Client { server } => (
                vec![server.is_ipv6()],
                PortMatch::Src(server.port()),
                Side::Client,
            ),
        };
        let held = match &cfg.role {
            TcpRole::Server { port, ipv4, ipv6 } => Some(
                raw::hold_port(*ipv6, *ipv4 && *ipv6, *port)
                    .map(|(fd, _)| fd)
                    .map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!(
                                "cannot hold TCP port {port}: {e} (another program has it? \
                                 choose another --port)"
                            ),
                        )
                    })?,
            ),
            TcpRole::Client { .. } => None,
        };
        let mut rx = Vec::new();
        let (mut tx4, mut tx6) = (None, None);
        for &v6 in &families {
            rx.push((v6, raw::recv_socket(v6, port, cfg.sockbuf)?));
            if v6 {
                tx6 = Some(raw::send_socket(true, cfg.sockbuf)?);
            } else {
                tx4 = Some(raw::send_socket(false, cfg.sockbuf)?);
            }
        }
        // One descriptor for the driver to wait on, whatever the families.
        // SAFETY: plain syscall returning a descriptor we own.
        let ep = crate::sys::cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        let poll_fd = unsafe { OwnedFd::from_raw_fd(ep) };
        for (_, fd) in &rx {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: fd.as_raw_fd() as u64,
            };
            // SAFETY: ev is valid for the call.
            crate::sys::cvt(unsafe {
                libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut ev)
            })?;
        }
        // The MSS our SYNs announce: what one segment carries at most.
        let mss = cfg.max_datagram.min(u16::MAX as usize) as u16;
        Ok(Tcp {
            shared: Arc::new(Mutex::new(Shared {
                tcp: FakeTcp::new(side, mss),
                reservation: None,
            })),
            cfg,
            rx,
            tx4,
            tx6,
            poll_fd,
            _held: held,
        })
    }
}

impl Transport for Tcp {
    type In = TcpIn;
    type Out = TcpOut;
    fn split(self) -> (TcpIn, TcpOut) {
        let rx = self
            .rx
            .into_iter()
            .map(|(v6, fd)| (v6, fd, RawRecv::new(RX_SLOTS, RX_ROOM)))
            .collect();
        // Without it, every segment takes the raw socket (as it does where
        // the host tracks connections).
        let packet = packet::packet_socket(self.cfg.sockbuf)
            .and_then(|fd| Ok((fd, Resolver::new()?)))
            .ok()
            .map(|(fd, resolver)| PacketPath {
                fd,
                resolver,
                hops: HashMap::new(),
                tracked: true,
                tracked_at: None,
                ip_id: 0,
            });
        (
            TcpIn {
                _held: self._held,
                poll_fd: self.poll_fd,
                rx,
                next: 0,
                current: 0,
                shared: self.shared.clone(),
                slots: Vec::with_capacity(BATCH),
                ranges: Vec::new(),
                received: 0,
            },
            TcpOut {
                cfg: self.cfg,
                tx4: self.tx4,
                tx6: self.tx6,
                shared: self.shared,
                bufs: (0..BATCH).map(|_| Vec::with_capacity(2048)).collect(),
                hdrs: vec![[0u8; MAX_HEADER + FRAME_HEADER]; BATCH],
                meta: Vec::with_capacity(BATCH),
                sent: 0,
                errors: IoErrors::default(),
                last_poll: 0,
                pending: std::collections::VecDeque::new(),
                pending_dropped: 0,
                packet,
                gso_messages: 0,
            },
        )
    }
}

pub struct TcpIn {
    /// Server: the socket that holds the port, for as long as the data path runs.
    _held: Option<OwnedFd>,
    poll_fd: OwnedFd,
    rx: Vec<(bool, OwnedFd, RawRecv)>,
    /// The family socket to read first next time (turns alternate).
    next: usize,
    /// The socket the current batch came from.
    current: usize,
    shared: Arc<Mutex<Shared>>,
    /// Per datagram of the batch: its packet, its place there, its peer.
    slots: Vec<(usize, Range<usize>, SocketAddr)>,
    /// Scratch for one packet's frames.
    ranges: Vec<Range<usize>>,
    received: u64,
}

impl Inbound for TcpIn {
    fn fd(&self) -> RawFd {
        self.poll_fd.as_raw_fd()
    }

    /// Returns how many slots `get` may be asked for: the datagrams read
    /// (a packet can hold several frames).
    fn recv(&mut self) -> io::Result<usize> {
        let k = self.rx.len();
        self.slots.clear();
        for j in 0..k {
            let idx = (self.next + j) % k;
            let (v6, fd, batch) = &mut self.rx[idx];
            let n = batch.recv(fd.as_raw_fd())?;
            if n == 0 {
                continue;
            }
            self.next = (idx + 1) % k;
            self.current = idx;
            let now = now_ms();
            let mut sh = self.shared.lock().unwrap();
            for i in 0..n {
                let Some((pkt, src, dst)) = batch.get(i) else {
                    continue;
                };
                let seg = if *v6 {
                    match (src, dst) {
                        (Some(s), Some(d)) => faketcp::parse_tcp(s.ip(), d, pkt, 0),
                        _ => Err(faketcp::Bad::Short),
                    }
                } else {
                    faketcp::parse_ipv4(pkt)
                };
                let Ok(seg) = seg else {
                    sh.tcp.stats.bad += 1;
                    continue;
                };
                if sh.tcp.input(now, &seg) != Input::Data {
                    continue;
                }
                self.ranges.clear();
                if !faketcp::frames(pkt, seg.payload.clone(), &mut self.ranges) {
                    sh.tcp.stats.bad += 1;
                }
                if self.ranges.len() > 1 {
                    sh.tcp.stats.merged_in += 1;
                }
                let from = normal(seg.src);
                self.received += self.ranges.len() as u64;
                for r in self.ranges.drain(..) {
                    self.slots.push((i, r, from));
                }
            }
            // Never below the packets read: the driver takes a short count
            // as "the socket is drained" (control segments yield no slot).
            return Ok(self.slots.len().max(n));
        }
        Ok(0)
    }

    fn get(&mut self, i: usize) -> Option<(&mut [u8], SocketAddr)> {
        let (pkt, range, from) = self.slots.get(i)?.clone();
        let (_, _, batch) = &mut self.rx[self.current];
        let (bytes, _, _) = batch.get(pkt)?;
        Some((bytes.get_mut(range)?, from))
    }

    fn batch(&self) -> usize {
        RX_SLOTS
    }

    fn stats(&self) -> InboundStats {
        let mut errors = IoErrors::default();
        let mut oversize = 0;
        for (_, _, b) in &self.rx {
            oversize += b.oversize;
            errors.other += b.errors.total();
        }
        InboundStats {
            datagrams: self.received,
            oversize,
            errors,
        }
    }
}

/// IPv4-mapped IPv6 addresses as plain IPv4 (the endpoint compares addresses).
fn normal(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

pub struct TcpOut {
    cfg: TcpConfig,
    tx4: Option<OwnedFd>,
    tx6: Option<OwnedFd>,
    shared: Arc<Mutex<Shared>>,
    bufs: Vec<Vec<u8>>,
    /// Raw path: each datagram's headers and frame length.
    hdrs: Vec<[u8; MAX_HEADER + FRAME_HEADER]>,
    /// Per queued datagram: its segment's header and destination.
    meta: Vec<(Header, SocketAddr)>,
    sent: u64,
    errors: IoErrors,
    last_poll: u64,
    /// Client: datagrams committed while the connection opens (the
    /// handshake's first message, keepalives), sent once it is up.
    pending: std::collections::VecDeque<(Vec<u8>, SocketAddr)>,
    /// Client: datagrams dropped because the pending queue was full.
    pending_dropped: u64,
    /// Runs the kernel segments (None: no packet socket here).
    packet: Option<PacketPath>,
    /// Frames sent through the packet path.
    gso_messages: u64,
}

/// Datagrams held while a client connection opens; past this, the oldest go
/// (KCP retransmits what mattered).
const PENDING_MAX: usize = 64;

/// The packet path: where it may be used, and how frames reach each peer.
struct PacketPath {
    fd: OwnedFd,
    resolver: Resolver,
    /// Per peer address: its next hop (None: not usable now) and when
    /// that was looked up.
    hops: HashMap<IpAddr, (Option<NextHop>, u64)>,
    /// Whether the host tracks connections (then the path stays off).
    tracked: bool,
    tracked_at: Option<u64>,
    ip_id: u16,
}

impl PacketPath {
    /// How a frame reaches `ip` now, if the packet path may carry it.
    fn hop(&mut self, ip: IpAddr, now: u64) -> Option<NextHop> {
        if self.tracked_at.is_none_or(|t| now >= t + TRACKING_CHECK_MS) {
            self.tracked_at = Some(now);
            self.tracked = packet::host_tracks_connections();
        }
        if self.tracked {
            return None;
        }
        if let Some(&(hop, at)) = self.hops.get(&ip) {
            if now < at + HOP_TTL_MS {
                return hop;
            }
        }
        if self.hops.len() >= 4096 {
            self.hops.retain(|_, (_, at)| now < *at + HOP_TTL_MS);
        }
        // Unresolved (ARP pending, ...): the raw socket's segments make the
        // kernel resolve it; looked up again after HOP_TTL_MS.
        let hop = self.resolver.resolve(ip).ok().flatten();
        self.hops.insert(ip, (hop, now));
        hop
    }
}

/// A run of datagrams for the packet path: `count` from `first` on, each
/// `size` bytes but the last (which may be shorter).
struct Run {
    first: usize,
    count: usize,
    size: usize,
    bytes: usize,
    hop: NextHop,
}

impl TcpOut {
    /// Client: a new connection to `to` from a fresh port, if one may open now.
    fn open(&mut self, sh: &mut Shared, to: SocketAddr, now: u64) {
        if sh.tcp.connecting(&to) || !sh.tcp.may_connect(now) {
            return;
        }
        let opened = raw::source_for(&to).and_then(|ip| {
            let (fd, port) = raw::hold_port(to.is_ipv6(), false, 0)?;
            Ok((ip, fd, port))
        });
        match opened {
            Ok((ip, fd, port)) => {
                sh.reservation = Some(fd);
                sh.tcp.connect(now, SocketAddr::new(ip, port), to);
            }
            Err(e) => {
                // No route yet (interface down, ...): counted; tried again later.
                self.errors.count(e.raw_os_error().unwrap_or(0), 1);
            }
        }
    }

    fn send_now(&mut self, packets: &[(&[u8], &[u8], SocketAddr)]) -> io::Result<()> {
        for v6 in [false, true] {
            let fd = if v6 { &self.tx6 } else { &self.tx4 };
            let mine: Vec<_> = packets
                .iter()
                .filter(|p| p.2.is_ipv6() == v6)
                .copied()
                .collect();
            if mine.is_empty() {
                continue;
            }
            match fd {
                Some(fd) => self.sent += raw::send_batch(fd.as_raw_fd(), &mine, &mut self.errors)?,
                None => self.errors.bad_address += mine.len() as u64,
            }
        }
        Ok(())
    }
}

impl Outbound for TcpOut {
    fn buf(&mut self) -> &mut Vec<u8> {
        if self.meta.len() == BATCH {
            let _ = self.flush_data();
        }
        let b = &mut self.bufs[self.meta.len()];
        b.clear();
        b
    }

    fn commit(&mut self, to: SocketAddr) {
        let i = self.meta.len();
        let shared = self.shared.clone();
        let mut sh = shared.lock().unwrap();
        let h = sh.tcp.data_header(&to, FRAME_HEADER + self.bufs[i].len());
        match h {
            Some(h) => self.meta.push((h, to)),
            None => {
                if let TcpRole::Client { server } = self.cfg.role {
                    if to == server {
                        self.open(&mut sh, to, now_ms());
                        if self.pending.len() == PENDING_MAX {
                            self.pending.pop_front();
                            self.pending_dropped += 1;
                        }
                        self.pending.push_back((self.bufs[i].clone(), to));
                    }
                }
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let now = now_ms();
        let mut control: Vec<Header> = Vec::new();
        {
            let shared = self.shared.clone();
            let mut sh = shared.lock().unwrap();
            if now >= self.last_poll + 100 {
                self.last_poll = now;
                sh.tcp.poll(now);
                // Client: the connection is kept open, not only reopened by
                // the next datagram (an idle session's keepalive may be
                // seconds away).
                if let TcpRole::Client { server } = self.cfg.role {
                    self.open(&mut sh, server, now);
                }
            }
            if sh.tcp.has_control() {
                control.extend(sh.tcp.take_control());
            }
        }
        if !control.is_empty() {
            // Handshake segments before the data they make possible.
            let mut hdrs = vec![[0u8; MAX_HEADER]; control.len()];
            let mut lens = Vec::with_capacity(control.len());
            for (h, out) in control.iter().zip(hdrs.iter_mut()) {
                lens.push(h.write(&[], self.cfg.tos, out));
            }
            let packets: Vec<(&[u8], &[u8], SocketAddr)> = hdrs
                .iter()
                .zip(&lens)
                .zip(&control)
                .map(|((b, &n), h)| (&b[..n], &[][..], h.remote))
                .collect();
            self.send_now(&packets)?;
        }
        if !self.pending.is_empty() {
            self.flush_pending()?;
        }
        self.flush_data()
    }

    fn stats(&self) -> OutboundStats {
        let sh = self.shared.lock().unwrap();
        let mut tcp = sh.tcp.stats;
        tcp.connections = sh.tcp.connections() as u64;
        tcp.pending_dropped = self.pending_dropped;
        OutboundStats {
            datagrams: self.sent,
            gso_messages: self.gso_messages,
            errors: self.errors,
            tcp: Some(tcp),
        }
    }
}

impl TcpOut {
    /// Client: what waited for the connection, once it is up.
    fn flush_pending(&mut self) -> io::Result<()> {
        let Some(&(_, to)) = self.pending.front() else {
            return Ok(());
        };
        let shared = self.shared.clone();
        let mut sh = shared.lock().unwrap();
        if !sh.tcp.established(&to) {
            return Ok(());
        }
        let mut hdrs = Vec::with_capacity(self.pending.len());
        for (d, to) in &self.pending {
            let mut hdr = [0u8; MAX_HEADER + FRAME_HEADER];
            if let Some(h) = sh.tcp.data_header(to, FRAME_HEADER + d.len()) {
                let n = h.write_frame(d, self.cfg.tos, &mut hdr);
                hdrs.push((hdr, n));
            }
        }
        drop(sh);
        let pending = std::mem::take(&mut self.pending);
        let packets: Vec<(&[u8], &[u8], SocketAddr)> = pending
            .iter()
            .zip(&hdrs)
            .map(|((d, to), (h, n))| (&h[..*n], &d[..], *to))
            .collect();
        self.send_now(&packets)
    }

    /// Groups the queued datagrams: runs for the packet path (consecutive
    /// segments to one peer, one size but the last, fitting its interface),
    /// and the rest, one by one, for the raw socket.
    fn plan(&mut self, now: u64, raw_path: &mut Vec<usize>) -> Vec<Run> {
        let mut runs = Vec::new();
        let Some(pp) = self.packet.as_mut() else {
            raw_path.extend(0..self.meta.len());
            return runs;
        };
        let n = self.meta.len();
        let mut i = 0;
        while i < n {
            let (h, to) = self.meta[i];
            let size = self.bufs[i].len();
            let l3 = if to.is_ipv6() {
                IPV6_HEADER
            } else {
                IPV4_HEADER
            };
            let seg = FRAME_HEADER + size;
            let hop = pp
                .hop(to.ip(), now)
                .filter(|hop| l3 + TCP_HEADER + seg <= hop.mtu as usize);
            let Some(hop) = hop else {
                raw_path.push(i);
                i += 1;
                continue;
            };
            let mut run = Run {
                first: i,
                count: 1,
                size,
                bytes: seg,
                hop,
            };
            let mut next_seq = h.seq.wrapping_add(seg as u32);
            let mut j = i + 1;
            while j < n && run.count < MAX_RUN {
                let (hj, tj) = self.meta[j];
                let len = self.bufs[j].len();
                if tj != to
                    || hj.seq != next_seq
                    || len > size
                    || len == 0
                    || l3 + TCP_HEADER + run.bytes + FRAME_HEADER + len > u16::MAX as usize
                {
                    break;
                }
                run.count += 1;
                run.bytes += FRAME_HEADER + len;
                next_seq = next_seq.wrapping_add((FRAME_HEADER + len) as u32);
                j += 1;
                if len < size {
                    break; // a shorter segment ends a run
                }
            }
            runs.push(run);
            i = j;
        }
        runs
    }

    fn flush_data(&mut self) -> io::Result<()> {
        if self.meta.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut raw_path = Vec::new();
        let runs = self.plan(now, &mut raw_path);
        if !runs.is_empty() {
            self.send_runs(&runs)?;
        }
        if !raw_path.is_empty() {
            let meta = std::mem::take(&mut self.meta);
            let bufs = std::mem::take(&mut self.bufs);
            let mut hdrs = std::mem::take(&mut self.hdrs);
            let mut lens = Vec::with_capacity(raw_path.len());
            for &i in &raw_path {
                lens.push(meta[i].0.write_frame(&bufs[i], self.cfg.tos, &mut hdrs[i]));
            }
            let packets: Vec<(&[u8], &[u8], SocketAddr)> = raw_path
                .iter()
                .zip(&lens)
                .map(|(&i, &n)| (&hdrs[i][..n], &bufs[i][..], meta[i].1))
                .collect();
            let r = self.send_now(&packets);
            drop(packets);
            self.bufs = bufs;
            self.hdrs = hdrs;
            self.meta = meta;
            r?;
        }
        self.meta.clear();
        Ok(())
    }

    /// Sends each run as one frame through the packet socket.
    fn send_runs(&mut self, runs: &[Run]) -> io::Result<()> {
        let Some(pp) = self.packet.as_mut() else {
            return Ok(());
        };
        const ROOM: usize = VNET_HDR + ETH_HDR + MAX_HEADER;
        let mut heads = vec![[0u8; ROOM]; runs.len()];
        let mut head_lens = Vec::with_capacity(runs.len());
        let mut prefixes = vec![[0u8; FRAME_HEADER]; self.meta.len()];
        for (run, head) in runs.iter().zip(heads.iter_mut()) {
            let (h, to) = self.meta[run.first];
            let l3 = if to.is_ipv6() {
                IPV6_HEADER
            } else {
                IPV4_HEADER
            };
            let n = h.write_offloaded(
                run.bytes,
                self.cfg.tos,
                pp.ip_id,
                &mut head[VNET_HDR + ETH_HDR..],
            );
            pp.ip_id = pp.ip_id.wrapping_add(run.count as u16);
            let (prefix, _) = head.split_at_mut(VNET_HDR + ETH_HDR);
            packet::frame_prefix(
                prefix.try_into().expect("prefix size"),
                run.hop.mac,
                run.hop.src_mac,
                to.is_ipv6(),
                l3,
                n - l3,
                FRAME_HEADER + run.size,
                run.count,
            );
            head_lens.push(VNET_HDR + ETH_HDR + n);
            let span = run.first..run.first + run.count;
            for (p, b) in prefixes[span.clone()].iter_mut().zip(&self.bufs[span]) {
                *p = (b.len() as u16).to_be_bytes();
            }
        }
        // Every frame's parts in one list: its headers, then each datagram's
        // length and bytes.
        let mut parts: Vec<&[u8]> = Vec::with_capacity(runs.len() + 2 * self.meta.len());
        let mut frames = Vec::with_capacity(runs.len());
        for (r, run) in runs.iter().enumerate() {
            let from = parts.len();
            parts.push(&heads[r][..head_lens[r]]);
            let span = run.first..run.first + run.count;
            for (p, b) in prefixes[span.clone()].iter().zip(&self.bufs[span]) {
                parts.push(p);
                parts.push(b);
            }
            frames.push(Frame {
                ifindex: run.hop.ifindex,
                parts: from..parts.len(),
            });
        }
        let mut left = Vec::new();
        packet::send_frames(
            pp.fd.as_raw_fd(),
            &frames,
            &parts,
            &mut self.errors,
            &mut left,
        )?;
        if left.contains(&false) {
            // An interface or neighbour may have changed: look again.
            pp.hops.clear();
        }
        let mut datagrams = 0u64;
        for (run, _) in runs.iter().zip(&left).filter(|(_, &ok)| ok) {
            self.gso_messages += 1;
            datagrams += run.count as u64;
        }
        self.sent += datagrams;
        self.shared.lock().unwrap().tcp.stats.offload_out += datagrams;
        Ok(())
    }
}
