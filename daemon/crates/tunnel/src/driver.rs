//! The driver: one thread that moves bytes between the transport, the
//! sessions' interfaces and the sans-IO [`Endpoint`], and makes no protocol
//! decision of its own. Each turn: wait (epoll) until the endpoint's next
//! timeout or input; hand in a bounded number of datagram batches, interface
//! packets and control-plane commands; run due timers; send what came out.
//!
//! Python holds a [`DriverHandle`]: it sends commands, reads events (an
//! eventfd says when some wait) and reads a counters snapshot.
use crate::endpoint::{
    AcceptError, CloseReason, Endpoint, EndpointConfig, EndpointStats, Event, Handle, Io, Now,
};
use crate::offload::{self, Coalescer, VnetHdr};
use crate::session::SessionStats;
use crate::sys::epoll::Epoll;
use crate::sys::{self, EventFd};
use crate::transport::{Inbound, InboundStats, Outbound, OutboundStats, Transport};
use kcpvpn_crypto::handshake::{InitPayload, ServerConfigPayload};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

const TOKEN_NET: u64 = u64::MAX;
const TOKEN_CMD: u64 = u64::MAX - 1;
/// Packets read from one interface per turn, so one busy session cannot
/// starve the others or the network.
const TUN_READ_BUDGET: usize = 64;
/// Datagram batches read per turn: under a flood, timers, ACKs, interfaces,
/// commands and shutdown still get their turn (the socket stays readable,
/// so the next turn reads on at once).
const NET_BATCHES_PER_TURN: usize = 8;
/// The counters snapshot is refreshed this often (ms).
const STATS_PERIOD_MS: u64 = 250;
/// How stale an idle session's `heap_bytes` may get.
const HEAP_RECOUNT_MS: u64 = 5000;
/// The host's own addresses are looked up again this often (ms).
const OWN_ADDRESSES_PERIOD_MS: u64 = 30_000;

/// What the control plane asks of the data path.
pub enum Command {
    /// Client: connect to `server` (attempts until answered, or `max_attempts`).
    Connect {
        server: SocketAddr,
        payload: InitPayload,
        max_attempts: Option<u32>,
    },
    CancelConnect,
    /// Client: the interface of connected session `session_id`.
    Attach {
        session_id: u32,
        tun: OwnedFd,
        reply: mpsc::Sender<Result<(), String>>,
    },
    /// Server: accept a pending handshake with this offer (and interface,
    /// or later with `Attach` once the session is confirmed).
    Accept {
        pending_id: u64,
        offer: ServerConfigPayload,
        tun: Option<OwnedFd>,
        reply: mpsc::Sender<Result<u32, AcceptError>>,
    },
    Refuse {
        pending_id: u64,
        reason: String,
    },
    Close {
        session_id: u32,
    },
    /// Server in identity mode: a new list of peers (SIGHUP).
    SetPeers {
        identity: kcpvpn_crypto::handshake::ServerIdentity,
    },
}

/// One session's figures.
#[derive(Debug, Clone)]
pub struct SessionSnapshot {
    pub session_id: u32,
    pub peer: SocketAddr,
    pub attached: bool,
    pub stats: SessionStats,
    pub kcp: kcpvpn_kcp::KcpStats,
    pub fec_recovered: u64,
    /// FEC parity shards sent (0 with FEC off).
    pub parity_out: u64,
    /// Full FEC groups given strict parity for interactive traffic.
    pub protected_groups: u64,
    /// Full FEC groups of small datagrams (ACKs) given parity for 1%.
    pub small_groups: u64,
    /// Heap bytes the session's buffers hold.
    pub heap_bytes: u64,
    /// The flow scheduler's counters (default without flow queueing), and
    /// the bytes it holds.
    pub scheduler: crate::scheduler::SchedulerStats,
    pub queued_bytes: u64,
    /// Messages that waited for an earlier one of their flow.
    pub flow_waits: u64,
    /// Key epoch and updates.
    pub keys: crate::keys::KeyStats,
    /// Its interface offloads (virtio_net_hdr: TSO reads, merged writes).
    pub offload: bool,
}

/// The interfaces' counters (all sessions together).
#[derive(Debug, Clone, Default)]
pub struct TunStats {
    /// Reads that were super-packets (TSO/USO), and the packets cut from them.
    pub gso_reads: u64,
    pub gso_segments: u64,
    /// Reads whose virtio header or packet made no sense (dropped).
    pub bad_reads: u64,
    /// Writes the interface refused (its queue was full, or it is down)
    /// on the offload path (the plain path counts in the endpoint's).
    pub write_drops: u64,
    /// Merged writes, and the packets they held.
    pub merged_writes: u64,
    pub merged_segments: u64,
    /// Interfaces attached now, and those of them that offload.
    pub interfaces: u64,
    pub offload_interfaces: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub endpoint: EndpointStats,
    pub inbound: InboundStats,
    pub outbound: OutboundStats,
    pub tun: TunStats,
    pub turns: u64,
    pub sessions: Vec<SessionSnapshot>,
}

struct Shared {
    commands: Mutex<VecDeque<Command>>,
    cmd_event: EventFd,
    events: Mutex<VecDeque<Event>>,
    event_fd: EventFd,
    stop: AtomicBool,
    snapshot: Mutex<Snapshot>,
}

/// What Python holds: commands in, events and counters out.
pub struct DriverHandle {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<io::Result<()>>>>,
}

impl DriverHandle {
    /// Starts the data-path thread on `transport` with a new endpoint.
    pub fn start<T: Transport>(transport: T, cfg: EndpointConfig) -> io::Result<DriverHandle> {
        let shared = Arc::new(Shared {
            commands: Mutex::new(VecDeque::new()),
            cmd_event: EventFd::new()?,
            events: Mutex::new(VecDeque::new()),
            event_fd: EventFd::new()?,
            stop: AtomicBool::new(false),
            snapshot: Mutex::new(Snapshot::default()),
        });
        let (inb, out) = transport.split();
        let driver = Driver::new(inb, out, Endpoint::new(cfg), shared.clone())?;
        let thread = std::thread::Builder::new()
            .name("kcpvpn-datapath".into())
            .spawn(move || driver.run())?;
        Ok(DriverHandle {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn command(&self, c: Command) {
        self.shared.commands.lock().unwrap().push_back(c);
        self.shared.cmd_event.notify();
    }

    /// Readable when events wait.
    pub fn event_fd(&self) -> RawFd {
        self.shared.event_fd.as_raw_fd()
    }

    pub fn take_events(&self) -> Vec<Event> {
        self.shared.event_fd.drain();
        self.shared.events.lock().unwrap().drain(..).collect()
    }

    pub fn with_snapshot<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        f(&self.shared.snapshot.lock().unwrap())
    }

    pub fn is_running(&self) -> bool {
        self.thread
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }

    /// Stops the thread; every session says goodbye first.
    pub fn stop(&self) -> io::Result<()> {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.cmd_event.notify();
        let handle = self.thread.lock().unwrap().take();
        match handle {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("data-path thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for DriverHandle {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

struct Tun {
    session_id: u32,
    fd: OwnedFd,
    reading: bool,
    /// Opened with IFF_VNET_HDR: every read and write starts with a
    /// `virtio_net_hdr` (see `offload`).
    vnet: bool,
    /// Carries IP packets (TUN, not TAP): what it is written may be merged.
    ip: bool,
}

/// The driver's `Io`: the transport's send half and the interfaces.
struct DriverIo<'a, O: Outbound> {
    out: &'a mut O,
    tuns: &'a [Option<Tun>],
    /// Interfaces that failed for good while written.
    gone: &'a mut Vec<Handle>,
    /// Packets for offloading interfaces wait here to be merged (until
    /// `Driver::flush_merged`).
    merge: &'a mut Coalescer,
    tun_stats: &'a mut TunStats,
}

/// Writes one packet (behind its virtio header) to interface `h`.
fn write_vnet(
    tuns: &[Option<Tun>],
    gone: &mut Vec<Handle>,
    stats: &mut TunStats,
    h: Handle,
    hdr: &[u8],
    pkt: &[u8],
) {
    let Some(Some(t)) = tuns.get(h.0) else {
        return;
    };
    match sys::write_vnet_packet(t.fd.as_raw_fd(), hdr, pkt) {
        Ok(true) => {}
        Ok(false) => stats.write_drops += 1,
        Err(_) => {
            if !gone.contains(&h) {
                gone.push(h);
            }
        }
    }
}

impl<O: Outbound> Io for DriverIo<'_, O> {
    fn buf(&mut self) -> &mut Vec<u8> {
        self.out.buf()
    }
    fn send(&mut self, to: SocketAddr) {
        self.out.commit(to);
    }
    fn deliver(&mut self, h: Handle, packet: &[u8]) -> bool {
        let Some(Some(t)) = self.tuns.get(h.0) else {
            return false;
        };
        if t.vnet {
            let (tuns, gone, stats) = (self.tuns, &mut *self.gone, &mut *self.tun_stats);
            let mut write = |tag: usize, hdr: &[u8; offload::VNET_HDR_LEN], pkt: &[u8]| {
                write_vnet(tuns, gone, stats, Handle(tag), hdr, pkt)
            };
            if t.ip {
                self.merge.push(h.0, packet, &mut write);
            } else {
                write(h.0, &VnetHdr::default().encode(), packet);
            }
            return true;
        }
        match sys::write_packet(t.fd.as_raw_fd(), packet) {
            Ok(written) => written,
            Err(_) => {
                if !self.gone.contains(&h) {
                    self.gone.push(h);
                }
                false
            }
        }
    }
}

struct Driver<I: Inbound, O: Outbound> {
    inb: I,
    out: O,
    endpoint: Endpoint,
    epoll: Epoll,
    shared: Arc<Shared>,
    tuns: Vec<Option<Tun>>,
    gone: Vec<Handle>,
    pkt_buf: Vec<u8>,
    /// Where a super-packet's segments are built.
    seg_buf: Vec<u8>,
    merge: Coalescer,
    tun_stats: TunStats,
    turns: u64,
    last_publish: u64,
    last_own_addresses: Option<u64>,
    /// Per handle: (session id, activity, when, heap bytes) of the last
    /// `heap_bytes` count (see `publish`).
    heap_seen: Vec<(u64, u64, u64, u64)>,
}

fn now() -> Now {
    Now {
        ms: sys::monotonic_ms(),
        unix_ms: sys::unix_ms(),
    }
}

impl<I: Inbound, O: Outbound> Driver<I, O> {
    fn new(inb: I, out: O, endpoint: Endpoint, shared: Arc<Shared>) -> io::Result<Self> {
        let epoll = Epoll::new(256)?;
        epoll.add(inb.fd(), true, TOKEN_NET)?;
        epoll.add(shared.cmd_event.as_raw_fd(), true, TOKEN_CMD)?;
        Ok(Driver {
            inb,
            out,
            endpoint,
            epoll,
            shared,
            tuns: Vec::new(),
            gone: Vec::new(),
            // A super-packet and its virtio header.
            pkt_buf: vec![0u8; 65536 + 64],
            seg_buf: Vec::with_capacity(65536),
            merge: Coalescer::new(),
            tun_stats: TunStats::default(),
            turns: 0,
            last_publish: 0,
            last_own_addresses: None,
            heap_seen: Vec::new(),
        })
    }

    fn io(&mut self) -> (&mut Endpoint, DriverIo<'_, O>) {
        (
            &mut self.endpoint,
            DriverIo {
                out: &mut self.out,
                tuns: &self.tuns,
                gone: &mut self.gone,
                merge: &mut self.merge,
                tun_stats: &mut self.tun_stats,
            },
        )
    }

    /// Writes the merged packets waiting for the interfaces.
    fn flush_merged(&mut self) {
        if self.merge.is_empty() {
            return;
        }
        let Driver {
            tuns,
            gone,
            merge,
            tun_stats,
            ..
        } = self;
        merge.flush(&mut |tag, hdr, pkt| write_vnet(tuns, gone, tun_stats, Handle(tag), hdr, pkt));
    }

    fn run(mut self) -> io::Result<()> {
        let result = self.run_loop();
        // Say goodbye so peers release their side at once instead of timing out.
        let (ep, mut io) = self.io();
        ep.close_all(&mut io);
        self.flush_merged();
        let _ = self.out.flush();
        self.pump_events();
        self.publish(now().ms);
        result
    }

    fn run_loop(&mut self) -> io::Result<()> {
        let mut ready = Vec::with_capacity(256);
        loop {
            let t = now();
            let wait = match self.endpoint.poll_timeout() {
                Some(at) => at.saturating_sub(t.ms).min(STATS_PERIOD_MS),
                None => STATS_PERIOD_MS,
            };
            self.epoll.wait(wait as i32, &mut ready)?;
            if self.shared.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            self.turns += 1;
            for &(token, hung_up) in ready.iter() {
                match token {
                    TOKEN_NET => self.read_net()?,
                    TOKEN_CMD => self.commands(),
                    h => self.read_tun(Handle(h as usize), hung_up),
                }
            }
            let t = now();
            let (ep, mut io) = self.io();
            ep.handle_timeout(t, &mut io);
            ep.flush(t, &mut io);
            self.flush_merged();
            self.out.flush()?;
            self.end_gone_interfaces(t);
            self.pump_events();
            self.resume_reading();
            if t.ms >= self.last_publish + STATS_PERIOD_MS {
                self.publish(t.ms);
            }
            if self
                .last_own_addresses
                .is_none_or(|at| t.ms >= at + OWN_ADDRESSES_PERIOD_MS)
            {
                self.refresh_own_addresses(t.ms);
            }
        }
    }

    /// Tells the endpoint this host's addresses with our port, so that a
    /// datagram forged to come from them is never answered.
    fn refresh_own_addresses(&mut self, now_ms: u64) {
        self.last_own_addresses = Some(now_ms);
        let Some(port) = sys::local_port(self.inb.fd()) else {
            return;
        };
        let (ips, broadcast) = sys::local_ips();
        let own = ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        self.endpoint.set_own_addresses(own, broadcast);
    }

    fn read_net(&mut self) -> io::Result<()> {
        for _ in 0..NET_BATCHES_PER_TURN {
            let n = self.inb.recv()?;
            if n == 0 {
                return Ok(());
            }
            let t = now();
            let Driver {
                inb,
                out,
                endpoint,
                tuns,
                gone,
                merge,
                tun_stats,
                ..
            } = self;
            let mut io = DriverIo {
                out,
                tuns,
                gone: &mut *gone,
                merge,
                tun_stats,
            };
            for i in 0..n {
                if let Some((dgram, from)) = inb.get(i) {
                    endpoint.handle(t, from, dgram, &mut io);
                }
            }
            // ACKs and answers for this batch leave before the next is read;
            // what it delivered reaches the interfaces merged.
            endpoint.flush(t, &mut io);
            self.flush_merged();
            self.out.flush()?;
            if n < self.inb.batch() {
                return Ok(());
            }
        }
        Ok(())
    }

    fn read_tun(&mut self, h: Handle, hung_up: bool) {
        let Some(Some(tun)) = self.tuns.get(h.0) else {
            return;
        };
        let fd = tun.fd.as_raw_fd();
        let vnet = tun.vnet;
        if hung_up {
            self.gone.push(h);
            return;
        }
        let mut n = 0;
        let t = now();
        while n < TUN_READ_BUDGET && self.endpoint.wants_packets(h) {
            match sys::read_packet(fd, &mut self.pkt_buf) {
                Ok(Some(len)) if vnet => n += self.send_offloaded(t, h, len),
                Ok(Some(len)) => {
                    self.endpoint.send_packet(t, h, &mut self.pkt_buf[..len]);
                    n += 1;
                }
                Ok(None) => break,
                Err(_) => {
                    self.gone.push(h);
                    return;
                }
            }
        }
        if !self.endpoint.wants_packets(h) {
            // Back-pressure: leave packets in the interface queue until KCP drains.
            self.endpoint.pause_reading(h);
            self.set_reading(h, false);
        }
    }

    /// One read from an offloading interface: its packets, cut from a
    /// super-packet if it is one, go to the session. Returns how many.
    fn send_offloaded(&mut self, t: Now, h: Handle, len: usize) -> usize {
        let Driver {
            endpoint,
            pkt_buf,
            seg_buf,
            tun_stats,
            ..
        } = self;
        let Some(hdr) = VnetHdr::parse(&pkt_buf[..len]) else {
            tun_stats.bad_reads += 1;
            return 1;
        };
        let pkt = &mut pkt_buf[offload::VNET_HDR_LEN..len];
        let r = offload::segment(&hdr, pkt, seg_buf, &mut |p: &mut [u8]| {
            endpoint.send_packet(t, h, p);
        });
        match r {
            Ok(n) => {
                if hdr.gso_type != offload::GSO_NONE {
                    tun_stats.gso_reads += 1;
                    tun_stats.gso_segments += n as u64;
                }
                n.max(1)
            }
            Err(_) => {
                tun_stats.bad_reads += 1;
                1
            }
        }
    }

    fn set_reading(&mut self, h: Handle, on: bool) {
        if let Some(Some(t)) = self.tuns.get_mut(h.0) {
            if t.reading != on
                && self
                    .epoll
                    .set_readable(t.fd.as_raw_fd(), on, h.0 as u64)
                    .is_ok()
            {
                t.reading = on;
            }
        }
    }

    fn resume_reading(&mut self) {
        while let Some(h) = self.endpoint.poll_resumed() {
            self.set_reading(h, true);
        }
    }

    /// An interface that failed (deleted underneath, or broken) ends its
    /// session: the peer is told, the control plane hears it once.
    fn end_gone_interfaces(&mut self, t: Now) {
        while let Some(h) = self.gone.pop() {
            self.drop_tun(h);
            let (ep, mut io) = self.io();
            ep.close(h, CloseReason::InterfaceGone, &mut io);
            let _ = t;
        }
        let _ = self.out.flush();
    }

    fn install_tun(&mut self, h: Handle, session_id: u32, fd: OwnedFd) -> io::Result<()> {
        sys::set_nonblocking(fd.as_raw_fd())?;
        self.drop_tun(h);
        if self.tuns.len() <= h.0 {
            self.tuns.resize_with(h.0 + 1, || None);
        }
        self.epoll.add(fd.as_raw_fd(), true, h.0 as u64)?;
        // The control plane chose offload when it created the device; the
        // descriptor says which (a TAP, or a kernel that refused, has none).
        let flags = sys::tun_flags(fd.as_raw_fd()).unwrap_or(0);
        self.tuns[h.0] = Some(Tun {
            session_id,
            fd,
            reading: true,
            vnet: flags & sys::IFF_VNET_HDR != 0,
            ip: flags & sys::IFF_TUN != 0,
        });
        Ok(())
    }

    fn drop_tun(&mut self, h: Handle) {
        self.merge.discard(h.0);
        if let Some(t) = self.tuns.get_mut(h.0).and_then(|t| t.take()) {
            // Python keeps its own descriptor of the same device, so closing
            // ours would not remove it from the epoll set: remove it first.
            let _ = self.epoll.delete(t.fd.as_raw_fd());
        }
    }

    fn commands(&mut self) {
        self.shared.cmd_event.drain();
        let cmds: Vec<Command> = self.shared.commands.lock().unwrap().drain(..).collect();
        let t = now();
        for c in cmds {
            match c {
                Command::Connect {
                    server,
                    payload,
                    max_attempts,
                } => {
                    let (ep, mut io) = self.io();
                    ep.connect(t, server, payload, max_attempts, &mut io);
                }
                Command::CancelConnect => self.endpoint.cancel_connect(),
                Command::Attach {
                    session_id,
                    tun,
                    reply,
                } => {
                    let r = match self.endpoint.handle_of(session_id) {
                        None => Err(format!("session {session_id:#x} is gone")),
                        Some(h) => match self.install_tun(h, session_id, tun) {
                            Err(e) => Err(format!("cannot watch the interface: {e}")),
                            Ok(()) => {
                                let (ep, mut io) = self.io();
                                ep.attach(t, h, &mut io);
                                Ok(())
                            }
                        },
                    };
                    let _ = reply.send(r);
                }
                Command::Accept {
                    pending_id,
                    offer,
                    tun,
                    reply,
                } => {
                    let (ep, mut io) = self.io();
                    let r = ep.accept(t, pending_id, offer, &mut io);
                    let r = match (r, tun) {
                        (Ok((id, _)), None) => Ok(id),
                        (Ok((id, h)), Some(tun)) => match self.install_tun(h, id, tun) {
                            Ok(()) => {
                                let (ep, mut io) = self.io();
                                ep.attach(t, h, &mut io);
                                Ok(id)
                            }
                            Err(e) => {
                                let (ep, mut io) = self.io();
                                ep.close(h, CloseReason::InterfaceGone, &mut io);
                                Err(AcceptError::Unusable(crate::params::ParamError(format!(
                                    "cannot watch the interface: {e}"
                                ))))
                            }
                        },
                        (Err(e), _) => Err(e),
                    };
                    let _ = reply.send(r);
                }
                Command::SetPeers { identity } => {
                    self.endpoint.set_server_identity(identity);
                }
                Command::Refuse { pending_id, reason } => {
                    let (ep, mut io) = self.io();
                    ep.refuse(pending_id, &reason, &mut io);
                }
                Command::Close { session_id } => {
                    if let Some(h) = self.endpoint.handle_of(session_id) {
                        self.drop_tun(h);
                        let (ep, mut io) = self.io();
                        ep.close(h, CloseReason::Local, &mut io);
                    }
                }
            }
        }
    }

    /// Endpoint events to Python; a closed session's interface is let go.
    fn pump_events(&mut self) {
        let mut any = false;
        while let Some(ev) = self.endpoint.poll_event() {
            if let Event::SessionClosed {
                session_id, handle, ..
            } = &ev
            {
                // Only if it is still that session's (the slot may hold a new one).
                let ours =
                    matches!(self.tuns.get(handle.0), Some(Some(t)) if t.session_id == *session_id);
                if ours {
                    self.drop_tun(*handle);
                }
            }
            self.shared.events.lock().unwrap().push_back(ev);
            any = true;
        }
        if any {
            self.shared.event_fd.notify();
        }
    }

    fn publish(&mut self, now_ms: u64) {
        self.last_publish = now_ms;
        let heap_seen = &mut self.heap_seen;
        let tuns = &self.tuns;
        let sessions = self
            .endpoint
            .sessions()
            .map(|v| {
                // Counting a session's buffers walks its FEC groups and flow
                // queues: done 4 times a second for a thousand idle sessions,
                // that was most of an idle server's CPU. Counted again when
                // the session moved traffic, else every HEAP_RECOUNT_MS (an
                // idle session's trim shows then).
                let st = &v.session.stats;
                let activity = st.datagrams_in + st.datagrams_out + st.packets_in + st.packets_out;
                if heap_seen.len() <= v.handle.0 {
                    heap_seen.resize(v.handle.0 + 1, (0, 0, 0, 0));
                }
                let seen = &mut heap_seen[v.handle.0];
                if seen.0 != u64::from(v.session_id)
                    || seen.1 != activity
                    || now_ms >= seen.2 + HEAP_RECOUNT_MS
                {
                    *seen = (
                        u64::from(v.session_id),
                        activity,
                        now_ms,
                        v.session.heap_bytes() as u64,
                    );
                }
                (v, seen.3)
            })
            .map(|(v, heap_bytes)| {
                let fec = v.session.fec_encoder_stats().unwrap_or_default();
                SessionSnapshot {
                    session_id: v.session_id,
                    peer: v.peer,
                    attached: v.attached,
                    stats: v.session.stats.clone(),
                    kcp: v.session.kcp_stats(),
                    fec_recovered: v.session.fec_recovered(),
                    parity_out: fec.parity_shards,
                    protected_groups: fec.protected_groups,
                    small_groups: fec.small_groups,
                    heap_bytes,
                    scheduler: v.session.scheduler_stats().unwrap_or_default(),
                    queued_bytes: v.session.queued_bytes() as u64,
                    flow_waits: v.session.flow_waits(),
                    keys: v.session.key_stats().clone(),
                    offload: matches!(tuns.get(v.handle.0), Some(Some(t)) if t.vnet),
                }
            })
            .collect();
        let mut snap = self.shared.snapshot.lock().unwrap();
        snap.endpoint = self.endpoint.stats().clone();
        snap.inbound = self.inb.stats();
        snap.outbound = self.out.stats();
        let live = self.tuns.iter().flatten();
        snap.tun = TunStats {
            merged_writes: self.merge.stats.merged_writes,
            merged_segments: self.merge.stats.merged_segments,
            interfaces: live.clone().count() as u64,
            offload_interfaces: live.filter(|t| t.vnet).count() as u64,
            ..self.tun_stats.clone()
        };
        snap.turns = self.turns;
        snap.sessions = sessions;
    }
}

/// Takes ownership of a descriptor number handed over by Python (which has
/// dup'ed it, so both sides can close theirs independently).
///
/// # Safety
/// `fd` must be an open descriptor that nothing else will close.
pub unsafe fn owned(fd: RawFd) -> OwnedFd {
    use std::os::fd::FromRawFd;
    OwnedFd::from_raw_fd(fd)
}
