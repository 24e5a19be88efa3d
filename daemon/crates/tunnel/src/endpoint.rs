//! The data-path driver: one thread running an epoll loop over the UDP socket,
//! every session's TUN/TAP descriptor and a command eventfd. It owns all
//! sessions, so the protocol state needs no locks; Python talks to it through
//! a command queue and reads events and counters back.
//!
//! One thread serves any number of sessions (no thread per client).
use crate::session::{Closed, Received, Session, SessionConfig, SessionStats, Transmit};
use crate::sys::epoll::Epoll;
use crate::sys::udp::{RecvBatch, SendQueue};
use crate::sys::{self, EventFd};
use kcpvpn_crypto::handshake::{InitRequest, PendingAccept, Responder, ServerConfigPayload};
use kcpvpn_crypto::packet;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

const TOKEN_UDP: u64 = u64::MAX;
const TOKEN_CMD: u64 = u64::MAX - 1;
/// Packets read from one interface per wake-up, so one busy session can't
/// starve the others or the socket.
const TUN_READ_BUDGET: usize = 64;
/// Handshakes authenticated but not yet answered by the control plane.
const MAX_PENDING: usize = 256;
/// An unanswered handshake is forgotten after this long (ms).
const PENDING_TTL_MS: u32 = 10_000;
const STATS_PERIOD_MS: u32 = 250;
/// At most this many rejection hints per second, so the server can't be used
/// to reflect traffic (each hint is also smaller than the message it answers).
const REJECT_HINTS_PER_SEC: u32 = 20;

/// Outer type of the unauthenticated rejection hint a server sends when a
/// handshake initiation fails: `[5, code, 0, 0, initiator's sender id u32 LE]`.
/// It lets a client with the wrong secret say so instead of timing out; it
/// carries nothing secret and changes no state (docs/protocol.md, section 6).
pub const MSG_REJECT: u8 = 5;
pub const REJECT_AUTH_FAILED: u8 = 1;
pub const REJECT_STALE: u8 = 2;
pub const REJECT_REPLAYED: u8 = 3;
pub const REJECT_LEN: usize = 8;

pub enum Command {
    /// Client side: a session whose handshake the control plane completed.
    AddSession {
        session_id: u32,
        peer_id: u32,
        conv: u32,
        send_key: [u8; 32],
        recv_key: [u8; 32],
        peer: SocketAddr,
        tun: OwnedFd,
        cfg: SessionConfig,
    },
    /// Server side: answer a pending handshake and start its session.
    Accept {
        pending_id: u64,
        session_id: u32,
        config: ServerConfigPayload,
        tun: OwnedFd,
        cfg: SessionConfig,
    },
    Refuse {
        pending_id: u64,
        reason: String,
    },
    Close {
        session_id: u32,
    },
}

#[derive(Debug, Clone)]
pub enum Event {
    HandshakeRequest {
        pending_id: u64,
        request: InitRequest,
        from: SocketAddr,
    },
    SessionUp {
        session_id: u32,
    },
    SessionClosed {
        session_id: u32,
        reason: Closed,
    },
    PeerMoved {
        session_id: u32,
        to: SocketAddr,
    },
    Error {
        message: String,
    },
}

#[derive(Debug, Clone, Default)]
pub struct EndpointStats {
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub unknown_session: u64,
    pub malformed: u64,
    pub handshake_failures: u64,
    pub handshake_requests: u64,
    pub send_errors: u64,
    /// Messages that carried a run of datagrams with UDP GSO (0: the kernel refused it).
    pub gso_messages: u64,
    pub tun_write_drops: u64,
    pub loop_iterations: u64,
}

#[derive(Debug, Clone)]
pub struct SessionSnapshot {
    pub session_id: u32,
    pub peer: SocketAddr,
    pub stats: SessionStats,
    pub kcp: kcpvpn_kcp::KcpStats,
    pub fec_recovered: u64,
}

#[derive(Default)]
pub struct Snapshot {
    pub endpoint: EndpointStats,
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

pub struct EndpointConfig {
    /// Server side: answers handshakes. Client side: None.
    pub responder: Option<Responder>,
    /// Largest datagram we expect (receive buffers).
    pub max_datagram: usize,
}

/// The handle Python holds.
pub struct Endpoint {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<io::Result<()>>>>,
}

impl Endpoint {
    /// Starts the data-path thread on `udp` (a bound, non-blocking UDP socket).
    pub fn start(udp: OwnedFd, cfg: EndpointConfig) -> io::Result<Endpoint> {
        sys::set_nonblocking(udp.as_raw_fd())?;
        let shared = Arc::new(Shared {
            commands: Mutex::new(VecDeque::new()),
            cmd_event: EventFd::new()?,
            events: Mutex::new(VecDeque::new()),
            event_fd: EventFd::new()?,
            stop: AtomicBool::new(false),
            snapshot: Mutex::new(Snapshot::default()),
        });
        let worker = Worker::new(udp, cfg, shared.clone())?;
        let thread = std::thread::Builder::new()
            .name("kcpvpn-datapath".into())
            .spawn(move || worker.run())?;
        Ok(Endpoint {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn command(&self, c: Command) {
        self.shared.commands.lock().unwrap().push_back(c);
        self.shared.cmd_event.notify();
    }

    /// A descriptor that becomes readable when events are waiting.
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

    /// Stops the thread: every session sends an authenticated close first.
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

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

struct Peer {
    session_id: u32,
    session: Session,
    addr: SocketAddr,
    tun: OwnedFd,
    reading: bool,
    dirty: bool,
    next_timeout: u32,
    max_counter: Option<u64>,
}

struct Pending {
    accept: PendingAccept,
    from: SocketAddr,
    since: u32,
}

struct TxTo<'a> {
    q: &'a mut SendQueue,
    fd: RawFd,
    addr: SocketAddr,
}

impl Transmit for TxTo<'_> {
    fn buf(&mut self) -> &mut Vec<u8> {
        if self.q.is_full() {
            let _ = self.q.flush(self.fd);
        }
        self.q.next_buf()
    }
    fn commit(&mut self) {
        self.q.commit(&self.addr);
    }
}

struct Worker {
    udp: OwnedFd,
    epoll: Epoll,
    shared: Arc<Shared>,
    responder: Option<Responder>,
    rx: RecvBatch,
    tx: SendQueue,
    /// Slab of sessions; the index is the epoll token of its interface.
    peers: Vec<Option<Peer>>,
    by_id: HashMap<u32, usize>,
    pending: HashMap<u64, Pending>,
    next_pending: u64,
    stats: EndpointStats,
    last_snapshot: u32,
    pkt_buf: Vec<u8>,
    /// Rejection hints left in the current second, and that second.
    hints_left: u32,
    hint_second: u32,
}

impl Worker {
    fn new(udp: OwnedFd, cfg: EndpointConfig, shared: Arc<Shared>) -> io::Result<Worker> {
        let epoll = Epoll::new(256)?;
        epoll.add(udp.as_raw_fd(), true, TOKEN_UDP)?;
        epoll.add(shared.cmd_event.as_raw_fd(), true, TOKEN_CMD)?;
        Ok(Worker {
            udp,
            epoll,
            shared,
            responder: cfg.responder,
            rx: RecvBatch::new(cfg.max_datagram.max(2048)),
            tx: SendQueue::new(cfg.max_datagram.max(2048)),
            peers: Vec::new(),
            by_id: HashMap::new(),
            pending: HashMap::new(),
            next_pending: 1,
            stats: EndpointStats::default(),
            last_snapshot: sys::now_ms(),
            pkt_buf: vec![0u8; 65536 + 64],
            hints_left: REJECT_HINTS_PER_SEC,
            hint_second: 0,
        })
    }

    fn emit(&self, e: Event) {
        self.shared.events.lock().unwrap().push_back(e);
        self.shared.event_fd.notify();
    }

    fn run(mut self) -> io::Result<()> {
        let mut ready = Vec::with_capacity(256);
        let result = self.run_loop(&mut ready);
        // Say goodbye so peers release their side at once instead of timing out.
        let fd = self.udp.as_raw_fd();
        for p in self.peers.iter_mut().flatten() {
            let mut tx = TxTo {
                q: &mut self.tx,
                fd,
                addr: p.addr,
            };
            p.session.close(&mut tx);
        }
        let _ = self.tx.flush(fd);
        self.publish(sys::now_ms());
        result
    }

    fn run_loop(&mut self, ready: &mut Vec<u64>) -> io::Result<()> {
        loop {
            let now = sys::now_ms();
            let timeout = self.next_wakeup(now);
            self.epoll.wait(timeout, ready)?;
            if self.shared.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            self.stats.loop_iterations += 1;
            for &token in ready.iter() {
                match token {
                    TOKEN_UDP => self.on_udp()?,
                    TOKEN_CMD => self.on_commands(),
                    t => self.on_tun(t as usize),
                }
            }
            let now = sys::now_ms();
            self.service(now);
            self.tx.flush(self.udp.as_raw_fd())?;
            self.stats.datagrams_out = self.tx.sent;
            self.stats.send_errors = self.tx.send_errors;
            self.stats.gso_messages = self.tx.gso_messages;
            if after(now, self.last_snapshot.wrapping_add(STATS_PERIOD_MS)) {
                self.publish(now);
            }
        }
    }

    fn next_wakeup(&self, now: u32) -> i32 {
        let mut wait: i32 = STATS_PERIOD_MS as i32;
        for p in self.peers.iter().flatten() {
            let d = p.next_timeout.wrapping_sub(now) as i32;
            wait = wait.min(d.max(0));
        }
        wait
    }

    /// Flushes sessions that received or queued data, runs due timers, resumes
    /// reading interfaces whose send buffer drained, and reaps closed sessions.
    fn service(&mut self, now: u32) {
        let fd = self.udp.as_raw_fd();
        let mut closed = Vec::new();
        for (idx, slot) in self.peers.iter_mut().enumerate() {
            let Some(p) = slot else { continue };
            let mut tx = TxTo {
                q: &mut self.tx,
                fd,
                addr: p.addr,
            };
            if p.dirty {
                p.session.flush(now, &mut tx);
                p.dirty = false;
            }
            if after(now, p.next_timeout) {
                p.session.poll(now, &mut tx);
            }
            p.next_timeout = p.session.next_timeout(now);
            if !p.reading && p.session.wants_packets() {
                p.reading = self
                    .epoll
                    .set_readable(p.tun.as_raw_fd(), true, idx as u64)
                    .is_ok();
            }
            if let Some(reason) = p.session.closed() {
                closed.push((idx, reason));
            }
        }
        for (idx, reason) in closed {
            if let Some(p) = self.peers[idx].take() {
                let _ = self.epoll.delete(p.tun.as_raw_fd());
                self.by_id.remove(&p.session_id);
                self.emit(Event::SessionClosed {
                    session_id: p.session_id,
                    reason,
                });
            }
        }
        self.pending
            .retain(|_, pd| !after(now, pd.since.wrapping_add(PENDING_TTL_MS)));
    }

    fn on_udp(&mut self) -> io::Result<()> {
        let fd = self.udp.as_raw_fd();
        loop {
            let n = self.rx.recv(fd)?;
            if n == 0 {
                return Ok(());
            }
            let now = sys::now_ms();
            for i in 0..n {
                self.stats.datagrams_in += 1;
                let (dgram, from) = self.rx.get_mut(i);
                let Some(from) = from else { continue };
                match dgram.first().copied() {
                    Some(t) if packet::is_sealed_type(t) => {
                        Self::on_data(
                            dgram,
                            from,
                            now,
                            &mut self.peers,
                            &self.by_id,
                            &mut self.stats,
                            &self.shared,
                        );
                    }
                    Some(kcpvpn_crypto::handshake::MSG_INIT) if self.responder.is_some() => {
                        let dgram = dgram.to_vec();
                        self.on_handshake_init(&dgram, from, now);
                    }
                    _ => self.stats.malformed += 1,
                }
            }
            if n < crate::sys::udp::BATCH {
                return Ok(());
            }
        }
    }

    fn on_data(
        dgram: &mut [u8],
        from: SocketAddr,
        now: u32,
        peers: &mut [Option<Peer>],
        by_id: &HashMap<u32, usize>,
        stats: &mut EndpointStats,
        shared: &Shared,
    ) {
        let Some(hdr) = packet::peek_header(dgram) else {
            stats.malformed += 1;
            return;
        };
        let Some(p) = by_id.get(&hdr.receiver_id).and_then(|&i| peers[i].as_mut()) else {
            stats.unknown_session += 1;
            return;
        };
        let tun = p.tun.as_raw_fd();
        let mut drops = 0u64;
        let got = p.session.input(dgram, now, &mut |pkt: &[u8]| {
            if !matches!(sys::write_packet(tun, pkt), Ok(true)) {
                drops += 1;
            }
        });
        stats.tun_write_drops += drops;
        if got == Received::Dropped {
            return;
        }
        p.dirty = true;
        // Follow the peer to a new address (NAT rebinding, new uplink) on the
        // newest authenticated datagram only, so a delayed old one can't pull it back.
        let newest = p.max_counter.is_none_or(|m| hdr.counter > m);
        if newest {
            p.max_counter = Some(hdr.counter);
            if from != p.addr {
                p.addr = from;
                shared.events.lock().unwrap().push_back(Event::PeerMoved {
                    session_id: p.session_id,
                    to: from,
                });
                shared.event_fd.notify();
            }
        }
    }

    fn on_handshake_init(&mut self, dgram: &[u8], from: SocketAddr, now: u32) {
        let Some(responder) = self.responder.as_mut() else {
            return;
        };
        match responder.read_init(dgram, sys::unix_ms()) {
            Ok((request, accept)) => {
                self.stats.handshake_requests += 1;
                if self.pending.len() >= MAX_PENDING {
                    // The control plane is behind; the client will retry.
                    self.stats.handshake_failures += 1;
                    return;
                }
                let id = self.next_pending;
                self.next_pending += 1;
                self.pending.insert(
                    id,
                    Pending {
                        accept,
                        from,
                        since: now,
                    },
                );
                self.emit(Event::HandshakeRequest {
                    pending_id: id,
                    request,
                    from,
                });
            }
            Err(e) => {
                use kcpvpn_crypto::handshake::HandshakeError as H;
                self.stats.handshake_failures += 1;
                let code = match e {
                    H::AuthFailed => REJECT_AUTH_FAILED,
                    H::Stale { .. } => REJECT_STALE,
                    H::Replayed => REJECT_REPLAYED,
                    _ => return, // garbage: stay silent
                };
                self.send_reject_hint(dgram, code, from, now);
            }
        }
    }

    fn send_reject_hint(&mut self, init: &[u8], code: u8, to: SocketAddr, now: u32) {
        if init.len() < 8 {
            return;
        }
        let second = now / 1000;
        if second != self.hint_second {
            self.hint_second = second;
            self.hints_left = REJECT_HINTS_PER_SEC;
        }
        if self.hints_left == 0 {
            return;
        }
        self.hints_left -= 1;
        let mut hint = [MSG_REJECT, code, 0, 0, 0, 0, 0, 0];
        hint[4..].copy_from_slice(&init[4..8]);
        self.send_raw(to, &hint);
    }

    /// Queues a datagram built elsewhere (handshake answers, hints).
    fn send_raw(&mut self, to: SocketAddr, bytes: &[u8]) {
        let fd = self.udp.as_raw_fd();
        let mut tx = TxTo {
            q: &mut self.tx,
            fd,
            addr: to,
        };
        tx.buf().extend_from_slice(bytes);
        tx.commit();
    }

    fn on_tun(&mut self, idx: usize) {
        let Some(Some(p)) = self.peers.get_mut(idx) else {
            return;
        };
        let fd = p.tun.as_raw_fd();
        let mut n = 0;
        while n < TUN_READ_BUDGET && p.session.wants_packets() {
            match sys::read_packet(fd, &mut self.pkt_buf) {
                Ok(Some(len)) => {
                    p.session.send_packet(&mut self.pkt_buf[..len]);
                    n += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    self.shared.events.lock().unwrap().push_back(Event::Error {
                        message: format!(
                            "reading the interface of session {:#x} failed: {e}",
                            p.session_id
                        ),
                    });
                    self.shared.event_fd.notify();
                    break;
                }
            }
        }
        if n > 0 {
            p.dirty = true;
        }
        if !p.session.wants_packets() && p.reading {
            // Back-pressure: leave packets in the interface queue until KCP drains.
            p.reading = self.epoll.set_readable(fd, false, idx as u64).is_err();
        }
    }

    fn on_commands(&mut self) {
        self.shared.cmd_event.drain();
        let cmds: Vec<Command> = self.shared.commands.lock().unwrap().drain(..).collect();
        let now = sys::now_ms();
        for c in cmds {
            match c {
                Command::AddSession {
                    session_id,
                    peer_id,
                    conv,
                    send_key,
                    recv_key,
                    peer,
                    tun,
                    cfg,
                } => match Session::new(cfg, conv, &send_key, &recv_key, peer_id, now) {
                    Ok(s) => self.insert_peer(session_id, s, peer, tun, now),
                    Err(e) => self.emit(Event::Error {
                        message: format!("cannot start the session: {e}"),
                    }),
                },
                Command::Accept {
                    pending_id,
                    session_id,
                    config,
                    tun,
                    cfg,
                } => {
                    let Some(pd) = self.pending.remove(&pending_id) else {
                        self.emit(Event::Error {
                            message: format!(
                                "handshake {pending_id} is no longer pending (expired?)"
                            ),
                        });
                        continue;
                    };
                    let client_id = pd.accept.sender_id();
                    // Build the session before answering, so a session we can't
                    // run (bad FEC parameters from the peer) is refused instead.
                    let probe =
                        Session::new(cfg.clone(), client_id, &[0; 32], &[0; 32], client_id, now);
                    if let Err(e) = probe {
                        let msg2 = pd
                            .accept
                            .refuse(&format!("the server cannot run this session: {e}"));
                        self.send_raw(pd.from, &msg2);
                        self.emit(Event::Error {
                            message: format!("refused session {session_id:#x}: {e}"),
                        });
                        continue;
                    }
                    let (msg2, keys) = pd.accept.accept(&config, session_id);
                    self.send_raw(pd.from, &msg2);
                    let s = Session::new(cfg, client_id, &keys.send, &keys.recv, client_id, now)
                        .expect("parameters were checked above");
                    self.insert_peer(session_id, s, pd.from, tun, now);
                }
                Command::Refuse { pending_id, reason } => {
                    if let Some(pd) = self.pending.remove(&pending_id) {
                        let msg2 = pd.accept.refuse(&reason);
                        self.send_raw(pd.from, &msg2);
                    }
                }
                Command::Close { session_id } => {
                    if let Some(idx) = self.by_id.remove(&session_id) {
                        if let Some(mut p) = self.peers[idx].take() {
                            let fd = self.udp.as_raw_fd();
                            let mut tx = TxTo {
                                q: &mut self.tx,
                                fd,
                                addr: p.addr,
                            };
                            p.session.close(&mut tx);
                            let _ = self.epoll.delete(p.tun.as_raw_fd());
                        }
                    }
                }
            }
        }
    }

    fn insert_peer(
        &mut self,
        session_id: u32,
        session: Session,
        addr: SocketAddr,
        tun: OwnedFd,
        now: u32,
    ) {
        let idx = match self.peers.iter().position(|p| p.is_none()) {
            Some(i) => i,
            None => {
                self.peers.push(None);
                self.peers.len() - 1
            }
        };
        let reading = sys::set_nonblocking(tun.as_raw_fd()).is_ok()
            && self.epoll.add(tun.as_raw_fd(), true, idx as u64).is_ok();
        if !reading {
            self.emit(Event::Error {
                message: format!("cannot watch the interface of session {session_id:#x}"),
            });
        }
        self.peers[idx] = Some(Peer {
            session_id,
            next_timeout: session.next_timeout(now),
            session,
            addr,
            tun,
            reading,
            dirty: false,
            max_counter: None,
        });
        if let Some(old) = self.by_id.insert(session_id, idx) {
            // Same id reused: the old session is replaced.
            if let Some(p) = self.peers[old].take() {
                let _ = self.epoll.delete(p.tun.as_raw_fd());
            }
        }
        self.emit(Event::SessionUp { session_id });
    }

    fn publish(&mut self, now: u32) {
        self.last_snapshot = now;
        let sessions = self
            .peers
            .iter()
            .flatten()
            .map(|p| SessionSnapshot {
                session_id: p.session_id,
                peer: p.addr,
                stats: p.session.stats.clone(),
                kcp: p.session.kcp_stats(),
                fec_recovered: p.session.fec_recovered(),
            })
            .collect();
        let mut snap = self.shared.snapshot.lock().unwrap();
        snap.endpoint = self.stats.clone();
        snap.sessions = sessions;
    }
}

fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

/// Takes ownership of a descriptor number handed over by Python (which has
/// dup'ed it, so both sides can close theirs independently).
///
/// # Safety
/// `fd` must be an open descriptor that nothing else will close.
pub unsafe fn owned(fd: RawFd) -> OwnedFd {
    OwnedFd::from_raw_fd(fd)
}
