//! The lab's load driver: N real client sessions in one process, for
//! `kcpvpn lab load`. Each simulated client is the product's own sans-IO
//! client endpoint (`kcpvpn_tunnel::endpoint::Endpoint`) with its own UDP
//! socket, so it handshakes, honours cookies and retries exactly as the
//! `kcpvpn client` data path does; only the interface is replaced by this
//! driver, which writes one ICMP echo request into each session and waits
//! for the reply to come back through the tunnel.
//!
//! One thread runs every client (epoll over the sockets, a timer heap over
//! the endpoints); the caller steers it with commands and reads counters.
use kcpvpn_crypto::handshake::{InitPayload, IP_MODE_SERVER_ASSIGNS};
use kcpvpn_tunnel::endpoint::messages::MessageType;
use kcpvpn_tunnel::endpoint::{
    CloseReason, ConnectFailure, Endpoint, EndpointConfig, Event, Handle, Io, Now, Role,
};
use kcpvpn_tunnel::params::{defaults, SessionParams};
use kcpvpn_tunnel::sys::epoll::Epoll;
use kcpvpn_tunnel::sys::{monotonic_ms, unix_ms, EventFd};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

pub mod icmp;

/// What the load consists of.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub server: SocketAddr,
    /// Local addresses the clients' sockets bind to, used in turn (client i
    /// binds `sources[i % len]`): many sources as behind many hosts, so the
    /// server's per-source handshake limit sees what real clients make.
    pub sources: Vec<IpAddr>,
    pub clients: usize,
    /// The stretched secret (`kcpvpn_crypto::handshake::stretch_secret`).
    pub psk: [u8; 32],
    pub params: SessionParams,
    /// Client ids are `<prefix><i>` (the server replaces a session when the
    /// same id connects again, so they must differ).
    pub id_prefix: String,
    pub seed: u64,
}

/// Counters of the whole load, as the caller reads them.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub clients: usize,
    /// Sessions up now.
    pub connected: usize,
    /// Connections completed since the last `Connect` command, and the
    /// milliseconds from that command to the first and last of them.
    pub connects: usize,
    pub first_connect_ms: Option<u64>,
    pub last_connect_ms: Option<u64>,
    /// Milliseconds each connection took (command to session), sorted.
    pub connect_ms: Vec<u64>,
    /// Message 1s sent, cookies received, failed attempts by reason.
    pub handshake_attempts: u64,
    pub cookies_in: u64,
    pub failures: BTreeMap<String, u64>,
    /// Pings: sent, answered (echo reply through the tunnel), and the
    /// round trips of the answered ones (ms, sorted).
    pub pings_sent: usize,
    pub pings_answered: usize,
    pub ping_ms: Vec<u64>,
    /// Sessions that ended, by reason.
    pub closed: BTreeMap<String, u64>,
    /// Datagrams in and out, and sends the socket refused.
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub send_errors: u64,
    /// Packets a session delivered that were not our echo replies.
    pub other_packets: u64,
    /// The driver thread's fatal error, if it stopped on one.
    pub error: Option<String>,
}

enum Command {
    /// Connect every client that has no session.
    Connect,
    /// One echo request from every connected client.
    Ping,
    /// Every client says goodbye and stops connecting.
    Close,
}

/// One simulated client.
struct Client {
    ep: Endpoint,
    sock: UdpSocket,
    payload: InitPayload,
    handle: Option<Handle>,
    /// Tunnel addresses: ours and the server's (from its answer).
    ips: Option<(Ipv4Addr, Ipv4Addr)>,
    /// Wanted: connect (again) when not connected.
    want: bool,
    /// When the current connection attempt began (ms, monotonic).
    connecting_since: Option<u64>,
    /// The next attempt after a failure with an answer, and its backoff.
    retry_at: Option<u64>,
    backoff_ms: u64,
    /// The echo request in flight: (sequence, when sent).
    ping: Option<(u16, u64)>,
    seq: u16,
    /// Earliest entry of this client on the timer heap (`u64::MAX`: none).
    deadline: u64,
}

/// What `Io` needs of a client while its endpoint is borrowed.
struct ClientIo<'a> {
    sock: &'a UdpSocket,
    buf: &'a mut Vec<u8>,
    index: usize,
    ping: &'a mut Option<(u16, u64)>,
    now_ms: u64,
    report: &'a mut Report,
    answered: &'a mut Option<u64>,
}

impl Io for ClientIo<'_> {
    fn buf(&mut self) -> &mut Vec<u8> {
        self.buf.clear();
        self.buf
    }

    fn send(&mut self, to: SocketAddr) {
        match self.sock.send_to(self.buf, to) {
            Ok(_) => self.report.datagrams_out += 1,
            Err(_) => self.report.send_errors += 1,
        }
    }

    fn deliver(&mut self, _h: Handle, packet: &[u8]) -> bool {
        match (*self.ping, icmp::echo_reply(packet)) {
            (Some((seq, sent)), Some((id, s))) if id == icmp::ident(self.index) && s == seq => {
                *self.ping = None;
                *self.answered = Some(self.now_ms.saturating_sub(sent));
            }
            _ => self.report.other_packets += 1,
        }
        true
    }
}

struct Shared {
    /// Commands, each with the channel that says it was carried out.
    commands: Mutex<Vec<(Command, mpsc::Sender<()>)>>,
    wake: EventFd,
    stop: AtomicBool,
    report: Mutex<Report>,
}

/// The running load: a thread with every client; commands in, counters out.
pub struct LoadDriver {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

const TOKEN_WAKE: u64 = u64::MAX;
/// Datagrams read from one socket per turn.
const READ_BUDGET: usize = 32;
/// Failed attempts (with an answer) back off as `kcpvpn client` does:
/// doubling from one second to thirty, with ±20% jitter.
const BACKOFF_FIRST_MS: u64 = 1000;
const BACKOFF_CAP_MS: u64 = 30_000;

impl LoadDriver {
    /// Opens every client's socket (bound to its source address) and starts
    /// the thread. Nothing is sent before `connect`.
    pub fn start(cfg: LoadConfig) -> io::Result<LoadDriver> {
        if cfg.sources.is_empty() || cfg.clients == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the load needs at least one client and one source address",
            ));
        }
        raise_fd_limit(cfg.clients + 64)?;
        let mut clients = Vec::with_capacity(cfg.clients);
        for i in 0..cfg.clients {
            let src = cfg.sources[i % cfg.sources.len()];
            let sock = UdpSocket::bind(SocketAddr::new(src, 0)).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("client {i}: cannot bind a UDP socket to {src}: {e} (is the address on an interface here?)"),
                )
            })?;
            sock.set_nonblocking(true)?;
            let ep = Endpoint::new(EndpointConfig {
                role: Role::Client {
                    psk: cfg.psk,
                    identity: None,
                },
                params: cfg.params.clone(),
                seed: cfg.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            });
            let payload = InitPayload {
                client_id: format!("{}{i}", cfg.id_prefix),
                mtu: defaults::VNI_MTU,
                ip_mode: IP_MODE_SERVER_ASSIGNS,
                ip: None,
                // Filled in from the endpoint's parameters by `connect`.
                fec: None,
                cipher: cfg.params.cipher,
                udp_mtu: 0,
                keepalive_s: 0,
            };
            clients.push(Client {
                ep,
                sock,
                payload,
                handle: None,
                ips: None,
                want: false,
                connecting_since: None,
                retry_at: None,
                backoff_ms: BACKOFF_FIRST_MS,
                ping: None,
                seq: 0,
                deadline: u64::MAX,
            });
        }
        let shared = Arc::new(Shared {
            commands: Mutex::new(Vec::new()),
            wake: EventFd::new()?,
            stop: AtomicBool::new(false),
            report: Mutex::new(Report {
                clients: cfg.clients,
                ..Report::default()
            }),
        });
        let mut epoll = Epoll::new(256)?;
        epoll.add(shared.wake.as_raw_fd(), true, TOKEN_WAKE)?;
        for (i, c) in clients.iter().enumerate() {
            epoll.add(c.sock.as_raw_fd(), true, i as u64)?;
        }
        let (ready_tx, ready_rx) = mpsc::channel();
        let sh = shared.clone();
        let server = cfg.server;
        let seed = cfg.seed;
        let thread = std::thread::Builder::new()
            .name("kcpvpn-load".into())
            .spawn(move || {
                let _ = ready_tx.send(());
                let mut run = Run {
                    clients,
                    server,
                    shared: sh.clone(),
                    timers: BinaryHeap::new(),
                    report: Report {
                        clients: sh.report.lock().unwrap().clients,
                        ..Report::default()
                    },
                    connect_start: 0,
                    ping_start: 0,
                    rng: seed | 1,
                    buf: Vec::with_capacity(2048),
                };
                if let Err(e) = run.run(&mut epoll) {
                    sh.report.lock().unwrap().error = Some(e.to_string());
                }
            })?;
        let _ = ready_rx.recv();
        Ok(LoadDriver {
            shared,
            thread: Some(thread),
        })
    }

    /// Hands `c` to the thread and waits until it was carried out, so the
    /// report read next reflects it.
    fn command(&self, c: Command) {
        let (tx, rx) = mpsc::channel();
        self.shared.commands.lock().unwrap().push((c, tx));
        self.shared.wake.notify();
        let _ = rx.recv_timeout(std::time::Duration::from_secs(10));
    }

    /// Every client without a session connects (the clock of `connect_ms`
    /// starts now).
    pub fn connect(&self) {
        self.command(Command::Connect);
    }

    /// Every connected client sends one echo request to the server's
    /// tunnel address.
    pub fn ping(&self) {
        self.command(Command::Ping);
    }

    /// Every client says goodbye and stops connecting.
    pub fn close(&self) {
        self.command(Command::Close);
    }

    pub fn report(&self) -> Report {
        let mut r = self.shared.report.lock().unwrap().clone();
        r.connect_ms.sort_unstable();
        r.ping_ms.sort_unstable();
        r
    }

    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the thread; sessions end without goodbyes (call `close` first
    /// for those).
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LoadDriver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One descriptor per client: lift the soft limit as far as needed (up to
/// the hard one) instead of failing at the 1024 most shells start with.
fn raise_fd_limit(need: usize) -> io::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let need = need as libc::rlim_t;
    if lim.rlim_cur >= need {
        return Ok(());
    }
    if lim.rlim_max < need {
        return Err(io::Error::other(format!(
            "{need} file descriptors are needed but the hard limit is {} (raise it with ulimit -Hn)",
            lim.rlim_max
        )));
    }
    lim.rlim_cur = need;
    // SAFETY: lim is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

struct Run {
    clients: Vec<Client>,
    server: SocketAddr,
    shared: Arc<Shared>,
    timers: BinaryHeap<Reverse<(u64, usize)>>,
    /// The thread's own copy; published after each turn.
    report: Report,
    connect_start: u64,
    ping_start: u64,
    rng: u64,
    buf: Vec<u8>,
}

fn now() -> Now {
    Now {
        ms: monotonic_ms(),
        unix_ms: unix_ms(),
    }
}

fn reason_name(r: CloseReason) -> &'static str {
    match r {
        CloseReason::ByPeer => "by_peer",
        CloseReason::IdleTimeout => "idle_timeout",
        CloseReason::Local => "local",
        CloseReason::Replaced => "replaced",
        CloseReason::Shutdown => "shutdown",
        CloseReason::InterfaceGone => "interface_gone",
    }
}

fn failure_name(f: &ConnectFailure) -> String {
    match f {
        ConnectFailure::Refused(why) => format!("refused: {why}"),
        other => other.to_string(),
    }
}

impl Run {
    fn run(&mut self, epoll: &mut Epoll) -> io::Result<()> {
        let mut ready = Vec::new();
        let mut dgram = vec![0u8; 65536];
        while !self.shared.stop.load(Ordering::SeqCst) {
            let wait = match self.timers.peek() {
                Some(Reverse((at, _))) => at.saturating_sub(monotonic_ms()).min(1000) as i32,
                None => 1000,
            };
            epoll.wait(wait, &mut ready)?;
            for &(token, _) in &ready {
                if token == TOKEN_WAKE {
                    self.shared.wake.drain();
                    let cmds = std::mem::take(&mut *self.shared.commands.lock().unwrap());
                    for (c, done) in cmds {
                        self.command(c);
                        let _ = done.send(());
                    }
                    continue;
                }
                let i = token as usize;
                let t = now();
                for _ in 0..READ_BUDGET {
                    let (n, from) = match self.clients[i].sock.recv_from(&mut dgram) {
                        Ok(x) => x,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        // ICMP errors (port unreachable while the server restarts): go on.
                        Err(_) => break,
                    };
                    self.report.datagrams_in += 1;
                    if MessageType::of(&dgram[..n]) == Some(MessageType::Cookie) {
                        self.report.cookies_in += 1;
                    }
                    self.with_io(i, t, |ep, io| ep.handle(t, from, &mut dgram[..n], io));
                }
                self.after(i, t);
            }
            let t = now();
            while let Some(&Reverse((at, i))) = self.timers.peek() {
                if at > t.ms {
                    break;
                }
                self.timers.pop();
                if self.clients[i].deadline != at {
                    continue;
                }
                self.clients[i].deadline = u64::MAX;
                let c = &mut self.clients[i];
                if c.retry_at.is_some_and(|r| r <= t.ms) {
                    c.retry_at = None;
                    if c.want && c.handle.is_none() && !c.ep.is_connecting() {
                        self.start_connect(i, t);
                    }
                }
                self.with_io(i, t, |ep, io| ep.handle_timeout(t, io));
                self.after(i, t);
            }
            self.publish();
        }
        Ok(())
    }

    fn publish(&mut self) {
        let mut r = self.report.clone();
        r.handshake_attempts = self
            .clients
            .iter()
            .map(|c| c.ep.stats().handshake_attempts)
            .sum();
        r.connected = self.clients.iter().filter(|c| c.handle.is_some()).count();
        *self.shared.report.lock().unwrap() = r;
    }

    /// Runs `f` on client `i`'s endpoint with its `Io`, then records an
    /// echo reply it delivered.
    fn with_io(&mut self, i: usize, t: Now, f: impl FnOnce(&mut Endpoint, &mut ClientIo<'_>)) {
        let c = &mut self.clients[i];
        let mut answered = None;
        let mut io = ClientIo {
            sock: &c.sock,
            buf: &mut self.buf,
            index: i,
            ping: &mut c.ping,
            now_ms: t.ms,
            report: &mut self.report,
            answered: &mut answered,
        };
        f(&mut c.ep, &mut io);
        c.ep.flush(t, &mut io);
        if let Some(rtt) = answered {
            self.report.pings_answered += 1;
            self.report.ping_ms.push(rtt);
        }
    }

    /// After a client's endpoint ran: its events, then its next timer.
    fn after(&mut self, i: usize, t: Now) {
        while let Some(ev) = self.clients[i].ep.poll_event() {
            self.event(i, t, ev);
        }
        let c = &mut self.clients[i];
        let mut at = c.ep.poll_timeout().unwrap_or(u64::MAX);
        if let Some(r) = c.retry_at {
            at = at.min(r);
        }
        // Never earlier than 1 ms from now: a timer that is due again at
        // once must not spin the loop.
        let at = at.max(t.ms + 1);
        if at != u64::MAX && at < c.deadline {
            c.deadline = at;
            self.timers.push(Reverse((at, i)));
        }
    }

    fn event(&mut self, i: usize, t: Now, ev: Event) {
        match ev {
            Event::Connected { handle, config, .. } => {
                let c = &mut self.clients[i];
                c.handle = Some(handle);
                c.backoff_ms = BACKOFF_FIRST_MS;
                c.ips = match (config.client_ip, config.server_ip) {
                    (Some(IpAddr::V4(a)), Some(IpAddr::V4(b))) => Some((a, b)),
                    _ => None,
                };
                if c.connecting_since.take().is_some() {
                    let took = t.ms.saturating_sub(self.connect_start);
                    self.report.connects += 1;
                    self.report.connect_ms.push(took);
                    self.report.first_connect_ms.get_or_insert(took);
                    self.report.last_connect_ms = Some(took);
                }
                self.with_io(i, t, |ep, io| {
                    ep.attach(t, handle, io);
                });
            }
            Event::ConnectFailed(f) => {
                *self.report.failures.entry(failure_name(&f)).or_default() += 1;
                let jitter = self.next_rand() % (self.clients[i].backoff_ms * 2 / 5 + 1);
                let c = &mut self.clients[i];
                c.retry_at = Some(t.ms + c.backoff_ms * 4 / 5 + jitter);
                c.backoff_ms = (c.backoff_ms * 2).min(BACKOFF_CAP_MS);
            }
            Event::SessionClosed { handle, reason, .. } => {
                *self
                    .report
                    .closed
                    .entry(reason_name(reason).to_string())
                    .or_default() += 1;
                let c = &mut self.clients[i];
                if c.handle == Some(handle) {
                    c.handle = None;
                    c.ping = None;
                    if c.want && reason != CloseReason::Replaced {
                        // As `kcpvpn client --auto-reconnect`: connect again.
                        c.retry_at = Some(t.ms + BACKOFF_FIRST_MS);
                    }
                }
            }
            _ => {}
        }
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64: jitter only.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn start_connect(&mut self, i: usize, t: Now) {
        let server = self.server;
        let c = &mut self.clients[i];
        c.connecting_since.get_or_insert(t.ms);
        let payload = c.payload.clone();
        self.with_io(i, t, |ep, io| ep.connect(t, server, payload, None, io));
    }

    fn command(&mut self, cmd: Command) {
        let t = now();
        match cmd {
            Command::Connect => {
                self.connect_start = t.ms;
                self.report.connects = 0;
                self.report.connect_ms.clear();
                self.report.first_connect_ms = None;
                self.report.last_connect_ms = None;
                for i in 0..self.clients.len() {
                    let c = &mut self.clients[i];
                    c.want = true;
                    c.backoff_ms = BACKOFF_FIRST_MS;
                    c.retry_at = None;
                    c.connecting_since = None;
                    if c.handle.is_none() {
                        if c.ep.is_connecting() {
                            c.ep.cancel_connect();
                        }
                        self.start_connect(i, t);
                    }
                    self.after(i, t);
                }
            }
            Command::Ping => {
                self.ping_start = t.ms;
                self.report.pings_sent = 0;
                self.report.pings_answered = 0;
                self.report.ping_ms.clear();
                for i in 0..self.clients.len() {
                    let c = &mut self.clients[i];
                    let (Some(h), Some((src, dst))) = (c.handle, c.ips) else {
                        continue;
                    };
                    c.seq = c.seq.wrapping_add(1);
                    let seq = c.seq;
                    c.ping = Some((seq, t.ms));
                    let mut pkt = icmp::echo_request(src, dst, icmp::ident(i), seq);
                    self.report.pings_sent += 1;
                    self.with_io(i, t, |ep, _io| {
                        ep.send_packet(t, h, &mut pkt);
                    });
                    self.after(i, t);
                }
            }
            Command::Close => {
                for i in 0..self.clients.len() {
                    let c = &mut self.clients[i];
                    c.want = false;
                    c.retry_at = None;
                    c.connecting_since = None;
                    c.ep.cancel_connect();
                    if let Some(h) = c.handle {
                        self.with_io(i, t, |ep, io| {
                            ep.close(h, CloseReason::Local, io);
                        });
                    }
                    self.after(i, t);
                }
            }
        }
        self.publish();
    }
}
