//! Deterministic simulation of whole endpoints: a server and many clients
//! on a simulated network with a seeded clock, loss, duplication,
//! reordering, blackouts, address changes, restarts and an attacker that
//! forges, truncates and replays datagrams. The "control plane" here is a
//! few lines that accept every request and attach interfaces after a
//! delay, as the Python daemons do.
use kcpvpn_crypto::handshake::{
    InitPayload, Responder, ServerConfigPayload, IP_MODE_SERVER_ASSIGNS,
};
use kcpvpn_crypto::packet::CipherKind;
use kcpvpn_tunnel::endpoint::{
    CloseReason, ConnectFailure, Endpoint, EndpointConfig, Event, Handle, Io, Now, Rejection, Role,
};
use kcpvpn_tunnel::params::SessionParams;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::SocketAddr;

mod common;
use common::flow_packet;

const PSK: [u8; 32] = [0x5a; 32];
const OTHER_PSK: [u8; 32] = [0xa5; 32];
/// Wall clock at the start of every simulation.
const UNIX_START: u64 = 1_780_000_000_000;

#[derive(Clone, Copy, Debug)]
struct Link {
    loss: f64,
    dup: f64,
    delay_ms: u64,
    jitter_ms: u64,
    /// Datagrams larger than this are dropped (a path that drops big ones).
    max_size: usize,
}

impl Link {
    fn clean(delay_ms: u64) -> Link {
        Link {
            loss: 0.0,
            dup: 0.0,
            delay_ms,
            jitter_ms: 0,
            max_size: usize::MAX,
        }
    }
    fn bad(delay_ms: u64, loss: f64) -> Link {
        Link {
            loss,
            dup: 0.02,
            delay_ms,
            jitter_ms: delay_ms / 2,
            max_size: usize::MAX,
        }
    }
}

/// Collects what an endpoint sends and delivers during one call.
#[derive(Default)]
struct SimIo {
    cur: Vec<u8>,
    out: Vec<(SocketAddr, Vec<u8>)>,
    delivered: Vec<(Handle, Vec<u8>)>,
}

impl Io for SimIo {
    fn buf(&mut self) -> &mut Vec<u8> {
        self.cur.clear();
        &mut self.cur
    }
    fn send(&mut self, to: SocketAddr) {
        self.out.push((to, self.cur.clone()));
    }
    fn deliver(&mut self, h: Handle, packet: &[u8]) -> bool {
        self.delivered.push((h, packet.to_vec()));
        true
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Server,
    Client,
}

struct Node {
    kind: Kind,
    ep: Endpoint,
    addr: SocketAddr,
    /// Uplink impairments (what this node sends).
    link: Link,
    /// Until this time, nothing this node sends or receives gets through.
    blackout_until: u64,
    /// Session id → packets delivered to its interface, in order.
    delivered: BTreeMap<u32, Vec<Vec<u8>>>,
    /// Handle → session id, for sessions with an interface.
    attached: BTreeMap<Handle, u32>,
    /// Client: (when, handle, session id) of interfaces still being set up.
    attach_at: Vec<(u64, Handle, u32)>,
    events: Vec<Event>,
    /// Client control plane: connect again when a session ends or fails.
    auto_reconnect: bool,
    server_addr: Option<SocketAddr>,
    /// Server control plane: refuse every request with this reason.
    refuse: Option<String>,
    /// Server control plane: hold requests (a busy control plane) until
    /// `answer_deferred`; their pending ids.
    defer: bool,
    deferred: Vec<u64>,
    /// Everything this node sent, for the attacker to replay.
    sent_log: Vec<(SocketAddr, Vec<u8>)>,
    /// Largest datagram this node's socket takes (its local UDP MTU).
    rx_max: usize,
}

/// A datagram on the wire: (arrival, seq, destination, source, bytes).
type InFlight = (u64, u64, SocketAddr, SocketAddr, Vec<u8>);

struct Sim {
    now: u64,
    rng: SmallRng,
    nodes: Vec<Node>,
    wire: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    attach_delay_ms: u64,
    /// Largest datagram seen on the wire, per source node.
    max_seen: BTreeMap<usize, usize>,
}

fn addr(i: usize) -> SocketAddr {
    format!("10.0.{}.{}:{}", i / 250, i % 250 + 1, 4000 + i)
        .parse()
        .unwrap()
}

fn params() -> SessionParams {
    SessionParams {
        cipher: CipherKind::Aes256Gcm,
        ..SessionParams::default()
    }
}

fn payload() -> InitPayload {
    InitPayload {
        client_id: String::new(),
        mtu: 1400,
        ip_mode: IP_MODE_SERVER_ASSIGNS,
        ip: None,
        fec: None,
        cipher: CipherKind::Aes256Gcm,
        udp_mtu: 0,
        keepalive_s: 0,
    }
}

fn offer(mtu: u16) -> ServerConfigPayload {
    ServerConfigPayload {
        tap: false,
        mtu,
        full_frame_mtu: mtu + 22,
        server_ip: Some("192.168.88.1".parse().unwrap()),
        client_ip: None,
        prefixlen: None,
        fec: None,
        udp_mtu: 0,
        keepalive_s: 0,
    }
}

impl Sim {
    fn new(seed: u64) -> Sim {
        Sim {
            now: 10_000,
            rng: SmallRng::seed_from_u64(seed),
            nodes: Vec::new(),
            wire: BinaryHeap::new(),
            seq: 0,
            attach_delay_ms: 30,
            max_seen: BTreeMap::new(),
        }
    }

    fn t(&self) -> Now {
        Now {
            ms: self.now,
            unix_ms: UNIX_START + self.now,
        }
    }

    fn add(&mut self, kind: Kind, ep: Endpoint, link: Link) -> usize {
        let i = self.nodes.len();
        let rx_max = ep.params().udp_mtu as usize;
        self.nodes.push(Node {
            kind,
            ep,
            addr: addr(i),
            link,
            blackout_until: 0,
            delivered: BTreeMap::new(),
            attached: BTreeMap::new(),
            attach_at: Vec::new(),
            events: Vec::new(),
            auto_reconnect: false,
            server_addr: None,
            refuse: None,
            defer: false,
            deferred: Vec::new(),
            sent_log: Vec::new(),
            rx_max,
        });
        i
    }

    fn server(&mut self, p: SessionParams, link: Link) -> usize {
        let seed = self.rng.random();
        let ep = Endpoint::new(EndpointConfig {
            role: Role::Server {
                responder: Responder::new(&PSK, 60_000),
            },
            params: p,
            seed,
        });
        self.add(Kind::Server, ep, link)
    }

    fn client_with(&mut self, server: usize, p: SessionParams, psk: [u8; 32], link: Link) -> usize {
        let seed = self.rng.random();
        let ep = Endpoint::new(EndpointConfig {
            role: Role::Client {
                psk,
                identity: None,
            },
            params: p,
            seed,
        });
        let i = self.add(Kind::Client, ep, link);
        let to = self.nodes[server].addr;
        self.nodes[i].server_addr = Some(to);
        self.nodes[i].auto_reconnect = true;
        self.call(i, |ep, now, io| ep.connect(now, to, payload(), None, io));
        i
    }

    fn client(&mut self, server: usize, link: Link) -> usize {
        self.client_with(server, params(), PSK, link)
    }

    /// Runs `f` on node `i`'s endpoint, then puts what it sent on the wire
    /// and what it delivered into the node's interfaces.
    fn call(&mut self, i: usize, f: impl FnOnce(&mut Endpoint, Now, &mut SimIo)) {
        let now = self.t();
        let mut io = SimIo::default();
        f(&mut self.nodes[i].ep, now, &mut io);
        self.nodes[i].ep.flush(now, &mut io);
        self.absorb(i, io);
    }

    fn absorb(&mut self, i: usize, io: SimIo) {
        for (h, pkt) in io.delivered {
            let n = &mut self.nodes[i];
            let id = *n
                .attached
                .get(&h)
                .expect("delivered to an attached session");
            n.delivered.entry(id).or_default().push(pkt);
        }
        for (to, d) in io.out {
            self.transmit(i, to, d);
        }
        self.control_plane(i);
    }

    fn transmit(&mut self, i: usize, to: SocketAddr, d: Vec<u8>) {
        let n = &mut self.nodes[i];
        n.sent_log.push((to, d.clone()));
        let seen = self.max_seen.entry(i).or_default();
        *seen = (*seen).max(d.len());
        let link = n.link;
        let from = n.addr;
        if self.now < n.blackout_until
            || d.len() > link.max_size
            || self.rng.random::<f64>() < link.loss
        {
            return;
        }
        let copies = if self.rng.random::<f64>() < link.dup {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let j = if link.jitter_ms > 0 {
                self.rng.random_range(0..=link.jitter_ms)
            } else {
                0
            };
            self.seq += 1;
            self.wire.push(Reverse((
                self.now + link.delay_ms + j,
                self.seq,
                to,
                from,
                d.clone(),
            )));
        }
    }

    /// Injects a datagram as if `from` sent it (the attacker's tool).
    fn inject(&mut self, to: SocketAddr, from: SocketAddr, d: Vec<u8>) {
        self.seq += 1;
        self.wire
            .push(Reverse((self.now + 1, self.seq, to, from, d)));
    }

    fn control_plane(&mut self, i: usize) {
        let evs: Vec<Event> = std::iter::from_fn(|| self.nodes[i].ep.poll_event()).collect();
        for ev in evs {
            match &ev {
                Event::HandshakeRequested(r) if self.nodes[i].defer => {
                    self.nodes[i].deferred.push(r.pending_id);
                }
                Event::HandshakeRequested(r) => {
                    let pid = r.pending_id;
                    let mtu = r.payload.mtu.min(1500);
                    match self.nodes[i].refuse.clone() {
                        Some(why) => self.call(i, |ep, _, io| {
                            assert!(ep.refuse(pid, &why, io));
                        }),
                        None => {
                            // The interface comes once the client proves
                            // itself (SessionConfirmed).
                            self.call(i, |ep, now, io| {
                                ep.accept(now, pid, offer(mtu), io).unwrap();
                            });
                        }
                    }
                }
                Event::Connected {
                    session_id, handle, ..
                }
                | Event::SessionConfirmed { session_id, handle } => {
                    let at = self.now + self.attach_delay_ms;
                    self.nodes[i].attach_at.push((at, *handle, *session_id));
                }
                Event::SessionClosed { handle, .. } => {
                    self.nodes[i].attached.remove(handle);
                    self.nodes[i].attach_at.retain(|a| a.1 != *handle);
                    self.reconnect(i);
                }
                Event::ConnectFailed(_) => self.reconnect(i),
                _ => {}
            }
            self.nodes[i].events.push(ev);
        }
    }

    fn reconnect(&mut self, i: usize) {
        let n = &self.nodes[i];
        if n.kind == Kind::Client
            && n.auto_reconnect
            && !n.ep.is_connecting()
            && n.attached.is_empty()
            && n.attach_at.is_empty()
        {
            let to = n.server_addr.unwrap();
            self.call(i, |ep, now, io| ep.connect(now, to, payload(), None, io));
        }
    }

    fn node_at(&self, a: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == a)
    }

    /// Advances the clock to `until`, delivering and timing out in order.
    fn run_until(&mut self, until: u64) {
        loop {
            let mut next = until;
            if let Some(Reverse((t, ..))) = self.wire.peek() {
                next = next.min(*t);
            }
            for n in &self.nodes {
                if let Some(t) = n.ep.poll_timeout() {
                    next = next.min(t);
                }
                for a in &n.attach_at {
                    next = next.min(a.0);
                }
            }
            self.now = next.max(self.now);
            // Datagrams due now.
            while let Some(Reverse((t, ..))) = self.wire.peek() {
                if *t > self.now {
                    break;
                }
                let Reverse((_, _, to, from, mut d)) = self.wire.pop().unwrap();
                let Some(j) = self.node_at(to) else { continue };
                if self.now < self.nodes[j].blackout_until || d.len() > self.nodes[j].rx_max {
                    continue;
                }
                self.call(j, |ep, now, io| ep.handle(now, from, &mut d, io));
            }
            for i in 0..self.nodes.len() {
                let due: Vec<_> = self.nodes[i]
                    .attach_at
                    .iter()
                    .filter(|a| a.0 <= self.now)
                    .copied()
                    .collect();
                self.nodes[i].attach_at.retain(|a| a.0 > self.now);
                for (_, h, id) in due {
                    self.nodes[i].attached.insert(h, id);
                    self.call(i, |ep, now, io| {
                        assert!(ep.attach(now, h, io));
                    });
                }
                if self.nodes[i]
                    .ep
                    .poll_timeout()
                    .is_some_and(|t| t <= self.now)
                {
                    self.call(i, |ep, now, io| ep.handle_timeout(now, io));
                }
            }
            if self.now >= until && self.wire.peek().is_none_or(|Reverse((t, ..))| *t > until) {
                break;
            }
        }
    }

    fn run_for(&mut self, ms: u64) {
        let until = self.now + ms;
        self.run_until(until);
    }

    /// The one session of client `c` with an interface (id, handle).
    fn session(&self, c: usize) -> Option<(u32, Handle)> {
        self.nodes[c]
            .attached
            .iter()
            .next()
            .map(|(h, id)| (*id, *h))
    }

    /// The server-side handle of the session whose client is at `peer`.
    fn server_session(&self, s: usize, peer: SocketAddr) -> Option<(u32, Handle)> {
        self.nodes[s]
            .ep
            .sessions()
            .find(|v| v.peer == peer)
            .map(|v| (v.session_id, v.handle))
    }

    fn send(&mut self, i: usize, h: Handle, pkt: Vec<u8>) -> bool {
        let mut wants = false;
        let mut p = pkt;
        self.call(i, |ep, now, _| wants = ep.send_packet(now, h, &mut p));
        wants
    }

    /// Accepts the requests server `s` held, oldest first; how many were
    /// still pending.
    fn answer_deferred(&mut self, s: usize) -> usize {
        let ids = std::mem::take(&mut self.nodes[s].deferred);
        let mut accepted = 0;
        for pid in ids {
            let mut got = None;
            self.call(s, |ep, now, io| {
                got = ep.accept(now, pid, offer(1400), io).ok()
            });
            if got.is_some() {
                accepted += 1;
            }
        }
        accepted
    }

    fn count(&self, i: usize, f: impl Fn(&Event) -> bool) -> usize {
        self.nodes[i].events.iter().filter(|e| f(e)).count()
    }
}

/// An IPv4/UDP packet of flow `who` (its source address and port) carrying
/// `seq`: one flow's packets must arrive in order.
fn packet(who: usize, seq: u32, len: usize) -> Vec<u8> {
    flow_packet(who, 5000, seq, len)
}

/// Every client sends `n` packets to the server, paced; the server's
/// interface must get each exactly once, in order, from the right session.
fn exchange(sim: &mut Sim, server: usize, clients: &[usize], n: u32) {
    for seq in 0..n {
        for &c in clients {
            let (_, h) = sim.session(c).expect("client connected");
            let len = 60 + (seq as usize * 37 + c * 11) % 1300;
            sim.send(c, h, packet(c, seq, len));
        }
        sim.run_for(5);
    }
    sim.run_for(3000);
    for &c in clients {
        let peer = sim.nodes[c].addr;
        let (sid, _) = sim.server_session(server, peer).expect("server session");
        let got = sim.nodes[server]
            .delivered
            .get(&sid)
            .cloned()
            .unwrap_or_default();
        let want: Vec<_> = (0..n)
            .map(|seq| packet(c, seq, 60 + (seq as usize * 37 + c * 11) % 1300))
            .collect();
        assert_eq!(
            got.len(),
            want.len(),
            "client {c}: {} of {n} delivered",
            got.len()
        );
        assert!(got == want, "client {c}: packets differ or out of order");
    }
}

#[test]
fn many_clients_connect_and_exchange_over_a_bad_network() {
    for seed in [1, 2, 3] {
        let mut sim = Sim::new(seed);
        let s = sim.server(params(), Link::bad(20, 0.1));
        let clients: Vec<usize> = (0..24).map(|_| sim.client(s, Link::bad(20, 0.1))).collect();
        sim.run_for(8000);
        for &c in &clients {
            assert!(
                sim.session(c).is_some(),
                "seed {seed}: client {c} never connected"
            );
        }
        assert_eq!(
            sim.nodes[s].ep.sessions().count(),
            clients.len(),
            "seed {seed}"
        );
        exchange(&mut sim, s, &clients, 60);
        // The server's replies reach each client too.
        for &c in &clients {
            let (sid, h) = sim.server_session(s, sim.nodes[c].addr).unwrap();
            sim.send(s, h, packet(999, sid, 900));
        }
        sim.run_for(3000);
        for &c in &clients {
            let (cid, _) = sim.session(c).unwrap();
            let (sid, _) = sim.server_session(s, sim.nodes[c].addr).unwrap();
            assert_eq!(
                sim.nodes[c].delivered.get(&cid).map(|v| v.as_slice()),
                Some(&[packet(999, sid, 900)][..]),
                "seed {seed}: client {c}"
            );
        }
    }
}

#[test]
fn a_new_session_on_a_clean_link_loses_nothing_and_sends_no_extra_parity() {
    let mut sim = Sim::new(7);
    let fec = SessionParams {
        fec: Some((10, 8)),
        ..params()
    };
    let s = sim.server(fec.clone(), Link::clean(20));
    // The interface takes a while to set up, as pyroute2 does.
    sim.attach_delay_ms = 80;
    let c = sim.client_with(s, fec, PSK, Link::clean(20));
    // The server has something to say at once (e.g. router solicitations).
    sim.run_for(45);
    let (_, sh) = sim.server_session(s, sim.nodes[c].addr).expect("accepted");
    for i in 0..3 {
        sim.send(s, sh, packet(s, i, 200));
    }
    sim.run_for(2000);
    let (cid, ch) = sim.session(c).expect("attached");
    // Nothing the server sent was dropped as unknown, and all of it arrived.
    assert_eq!(sim.nodes[c].ep.stats().unknown_session, 0);
    assert_eq!(sim.nodes[s].ep.stats().unknown_session, 0);
    assert_eq!(sim.nodes[c].delivered[&cid].len(), 3);
    // A ping now takes one round trip.
    let t0 = sim.now;
    sim.send(c, ch, packet(c, 0, 84));
    let sid = sim.server_session(s, sim.nodes[c].addr).unwrap().0;
    let mut at = None;
    for _ in 0..200 {
        sim.run_for(1);
        if sim.nodes[s]
            .delivered
            .get(&sid)
            .is_some_and(|v| !v.is_empty())
        {
            at = Some(sim.now - t0);
            break;
        }
    }
    assert_eq!(at, Some(20), "one-way delay of the first packet");
    // Clean: every loss report says nothing was lost.
    sim.run_for(2000);
    let parity = |sim: &Sim, i: usize| {
        let v = sim.nodes[i].ep.sessions().next().unwrap();
        v.session.fec_encoder_stats().unwrap().parity_shards
    };
    for (i, side) in [(s, "server"), (c, "client")] {
        let v = sim.nodes[i].ep.sessions().next().unwrap();
        let st = v.stats();
        assert!(st.peer_expected > 0, "{side}: the peer reported");
        assert_eq!(st.peer_lost, 0, "{side}: {st:?}");
    }
    // Idle: nothing but keepalives, so no parity at all.
    let before = (parity(&sim, s), parity(&sim, c));
    sim.run_for(30_000);
    assert_eq!((parity(&sim, s), parity(&sim, c)), before);
}

#[test]
fn the_server_follows_a_client_to_a_new_address() {
    let mut sim = Sim::new(11);
    let s = sim.server(params(), Link::bad(15, 0.05));
    let c = sim.client(s, Link::bad(15, 0.05));
    sim.run_for(3000);
    exchange(&mut sim, s, &[c], 20);
    let old = sim.nodes[c].addr;
    let captured = sim.nodes[c].sent_log.last().unwrap().clone();
    // NAT rebinding: the client's datagrams now come from another port.
    let new: SocketAddr = "10.9.9.9:5555".parse().unwrap();
    sim.nodes[c].addr = new;
    let (_, h) = sim.session(c).unwrap();
    for seq in 0..20 {
        sim.send(c, h, packet(c, 100 + seq, 300));
        sim.run_for(10);
    }
    sim.run_for(2000);
    assert!(sim.server_session(s, new).is_some(), "the server follows");
    assert!(
        sim.count(
            s,
            |e| matches!(e, Event::PeerMoved { to, .. } if *to == new)
        ) >= 1
    );
    // A delayed datagram from the old address does not pull it back.
    sim.inject(sim.nodes[s].addr, old, captured.1);
    sim.run_for(100);
    assert!(sim.server_session(s, new).is_some());
    // Replies reach the client at its new address.
    let (sid, sh) = sim.server_session(s, new).unwrap();
    sim.send(s, sh, packet(s, 1, 100));
    sim.run_for(500);
    let (cid, _) = sim.session(c).unwrap();
    assert!(
        sim.nodes[c].delivered[&cid].contains(&packet(s, 1, 100)),
        "{sid:#x}"
    );
}

#[test]
fn forged_truncated_and_replayed_datagrams_change_nothing() {
    let mut sim = Sim::new(5);
    let s = sim.server(params(), Link::clean(10));
    let c = sim.client(s, Link::clean(10));
    sim.run_for(2000);
    exchange(&mut sim, s, &[c], 30);
    let sa = sim.nodes[s].addr;
    let ca = sim.nodes[c].addr;
    let attacker: SocketAddr = "10.66.0.1:6666".parse().unwrap();
    let requests_before = sim.count(s, |e| matches!(e, Event::HandshakeRequested(_)));
    let server_log = sim.nodes[s].sent_log.clone();
    let client_log = sim.nodes[c].sent_log.clone();
    let mut rng = SmallRng::seed_from_u64(99);
    for round in 0..400 {
        // Replays of everything each side sent (data and message 1), from
        // the real source and from elsewhere.
        let (to, d) = &client_log[round % client_log.len()];
        sim.inject(*to, if round % 2 == 0 { ca } else { attacker }, d.clone());
        let (to, d) = &server_log[round % server_log.len()];
        sim.inject(*to, if round % 3 == 0 { sa } else { attacker }, d.clone());
        // Truncated copies.
        let cut = rng.random_range(0..d.len());
        sim.inject(ca, sa, d[..cut].to_vec());
        // Garbage of every type byte, with a live receiver id half the time.
        let mut g: Vec<u8> = (0..rng.random_range(0..1500))
            .map(|_| rng.random())
            .collect();
        if g.len() > 16 {
            g[0] = rng.random_range(0..9);
            g[1..4].fill(0);
            if round % 2 == 0 {
                g[4..8].copy_from_slice(&sim.server_session(s, ca).unwrap().0.to_le_bytes());
            }
        }
        sim.inject(sa, attacker, g.clone());
        sim.inject(ca, attacker, g);
        // A hint naming the client's attempt, from a forged source.
        sim.inject(ca, attacker, vec![5, 1, 0, 0, 1, 2, 3, 4]);
        sim.run_for(5);
    }
    sim.run_for(1000);
    // A message 1 under another secret is rejected and answered with a hint.
    let mut stranger = Sim::new(6);
    let ss = stranger.server(params(), Link::clean(1));
    let x = stranger.client_with(ss, params(), OTHER_PSK, Link::clean(1));
    let (_, m1) = stranger.nodes[x].sent_log[0].clone();
    sim.inject(sa, attacker, m1);
    sim.run_for(100);
    assert_eq!(
        sim.count(s, |e| matches!(e, Event::HandshakeRequested(_))),
        requests_before,
        "no request from anything unauthenticated or replayed"
    );
    assert!(
        sim.count(s, |e| matches!(
            e,
            Event::HandshakeRejected {
                reason: Rejection::AuthFailed,
                ..
            }
        )) >= 1
    );
    assert!(
        sim.count(s, |e| matches!(
            e,
            Event::HandshakeRejected {
                reason: Rejection::Replayed,
                ..
            }
        )) >= 1
    );
    // The one session is intact: no close, no move, and it still carries data.
    assert_eq!(sim.nodes[s].ep.sessions().count(), 1);
    assert_eq!(
        sim.count(s, |e| matches!(e, Event::SessionClosed { .. })),
        0
    );
    assert_eq!(sim.count(s, |e| matches!(e, Event::PeerMoved { .. })), 0);
    assert_eq!(
        sim.count(c, |e| matches!(
            e,
            Event::PeerMoved { .. } | Event::SessionClosed { .. }
        )),
        0
    );
    let st = sim.nodes[s].ep.stats();
    assert!(st.malformed > 0 && st.unknown_session > 0, "{st:?}");
    let v = sim.nodes[s].ep.sessions().next().unwrap();
    assert!(v.stats().replays > 0 && v.stats().auth_failures > 0);
    // Only what was delivered before, nothing forged.
    let sid = sim.server_session(s, ca).unwrap().0;
    assert_eq!(sim.nodes[s].delivered[&sid].len(), 30);
    let (_, h) = sim.session(c).unwrap();
    sim.send(c, h, packet(c, 77, 500));
    sim.run_for(500);
    assert_eq!(
        sim.nodes[s].delivered[&sid].last(),
        Some(&packet(c, 77, 500))
    );
}

#[test]
fn after_a_server_restart_clients_reconnect_within_a_keepalive() {
    let mut sim = Sim::new(21);
    let s = sim.server(params(), Link::bad(20, 0.05));
    let clients: Vec<usize> = (0..5).map(|_| sim.client(s, Link::bad(20, 0.05))).collect();
    sim.run_for(5000);
    exchange(&mut sim, s, &clients, 10);
    // The server restarts: a new endpoint at the same address, no sessions.
    sim.nodes[s].ep = Endpoint::new(EndpointConfig {
        role: Role::Server {
            responder: Responder::new(&PSK, 60_000),
        },
        params: params(),
        seed: 77,
    });
    sim.nodes[s].attached.clear();
    sim.nodes[s].delivered.clear();
    let before: Vec<usize> = clients
        .iter()
        .map(|&c| sim.count(c, |e| matches!(e, Event::Connected { .. })))
        .collect();
    // Idle clients send a keepalive within one period (10 s); the server's
    // no-session hint makes them check with a handshake at once.
    sim.run_for(12_000);
    for (k, &c) in clients.iter().enumerate() {
        let connected = sim.count(c, |e| matches!(e, Event::Connected { .. }));
        assert!(
            connected > before[k],
            "client {c} reconnected: {:?}",
            sim.nodes[c].ep.stats()
        );
        assert_eq!(
            sim.count(c, |e| matches!(
                e,
                Event::SessionClosed {
                    reason: CloseReason::IdleTimeout,
                    ..
                }
            )),
            0,
            "client {c} did not wait for its idle timeout"
        );
        assert!(sim.session(c).is_some(), "client {c} is back");
    }
    exchange(&mut sim, s, &clients, 10);
}

#[test]
fn a_forged_no_session_hint_costs_a_handshake_and_no_session() {
    let mut sim = Sim::new(23);
    let s = sim.server(params(), Link::clean(10));
    let c = sim.client(s, Link::clean(10));
    sim.run_for(2000);
    exchange(&mut sim, s, &[c], 5);
    let sa = sim.nodes[s].addr;
    let ca = sim.nodes[c].addr;
    let (sid, _) = sim.server_session(s, ca).unwrap();
    // From elsewhere: ignored. From the server's address: a check.
    let mut hint = vec![8, 0, 0, 0];
    hint.extend_from_slice(&sid.to_le_bytes());
    sim.inject(ca, "10.66.0.1:1".parse().unwrap(), hint.clone());
    sim.run_for(100);
    assert_eq!(sim.nodes[c].ep.stats().rehandshakes, 0);
    sim.inject(ca, sa, hint);
    sim.run_for(2000);
    assert_eq!(sim.nodes[c].ep.stats().rehandshakes, 1);
    // The server accepted the check and replaced the old session; traffic
    // goes on in one session at each end.
    assert_eq!(sim.nodes[s].ep.sessions().count(), 1);
    assert_eq!(sim.nodes[c].ep.sessions().count(), 1);
    exchange(&mut sim, s, &[c], 5);
}

#[test]
fn an_outage_shorter_than_the_timeout_keeps_the_session() {
    let mut sim = Sim::new(31);
    let s = sim.server(params(), Link::clean(20));
    let c = sim.client(s, Link::clean(20));
    sim.run_for(2000);
    let (_, h) = sim.session(c).unwrap();
    // Traffic runs into a 20-second blackout of the client's link.
    sim.nodes[c].blackout_until = sim.now + 20_000;
    for seq in 0..50 {
        sim.send(c, h, packet(c, seq, 1000));
        sim.run_for(20);
    }
    let back = sim.nodes[c].blackout_until;
    sim.run_until(back);
    // The session survived, and the backlog drains within a second and a
    // round trip of the path returning (retransmissions back off to 1 s at most).
    assert_eq!(
        sim.count(c, |e| matches!(e, Event::SessionClosed { .. })),
        0
    );
    sim.run_until(back + 1000 + 60);
    let sid = sim.server_session(s, sim.nodes[c].addr).unwrap().0;
    assert_eq!(sim.nodes[s].delivered.get(&sid).map_or(0, |v| v.len()), 50);
}

#[test]
fn the_smaller_udp_mtu_is_agreed_and_used() {
    let mut sim = Sim::new(41);
    let s = sim.server(params(), Link::clean(5)); // 1350
    let big = SessionParams {
        udp_mtu: 2100,
        ..params()
    };
    let c = sim.client_with(s, big, PSK, Link::clean(5));
    sim.run_for(2000);
    exchange(&mut sim, s, &[c], 40);
    assert!(
        sim.max_seen[&c] <= 1350,
        "client sent {} bytes",
        sim.max_seen[&c]
    );
    assert_eq!(sim.count(c, |e| matches!(e, Event::PathMtu { .. })), 0);
}

#[test]
fn a_path_that_drops_large_datagrams_is_reported() {
    let mut sim = Sim::new(43);
    let mut link = Link::clean(10);
    link.max_size = 1000;
    let s = sim.server(params(), link);
    let c = sim.client(s, link);
    sim.run_for(60_000);
    for i in [s, c] {
        let found: Vec<_> = sim.nodes[i]
            .events
            .iter()
            .filter_map(|e| match e {
                Event::PathMtu {
                    configured, works, ..
                } => Some((*configured, *works)),
                _ => None,
            })
            .collect();
        assert_eq!(found.len(), 1, "node {i}: {found:?}");
        let (configured, works) = found[0];
        assert_eq!(configured, 1350);
        assert!((1000 - 16..=1000).contains(&works), "node {i}: {works}");
    }
}

#[test]
fn refusals_hints_and_silence_end_an_attempt_with_a_reason() {
    // Refused by the control plane: the reason reaches the client.
    let mut sim = Sim::new(51);
    let s = sim.server(params(), Link::clean(5));
    sim.nodes[s].refuse = Some("no free address in the pool".into());
    let c = sim.client(s, Link::clean(5));
    sim.nodes[c].auto_reconnect = false;
    sim.run_for(500);
    assert!(sim.nodes[c].events.iter().any(
        |e| matches!(e, Event::ConnectFailed(ConnectFailure::Refused(r)) if r.contains("pool"))
    ));
    // Another secret: the server's hints say so, once enough attempts drew
    // one (a hint alone never ends an attempt).
    let c2 = sim.client_with(s, params(), OTHER_PSK, Link::clean(5));
    sim.nodes[c2].auto_reconnect = false;
    sim.run_for(500);
    assert!(!sim.nodes[c2]
        .events
        .iter()
        .any(|e| matches!(e, Event::ConnectFailed(_))));
    sim.run_for(3000);
    assert!(sim.nodes[c2]
        .events
        .iter()
        .any(|e| matches!(e, Event::ConnectFailed(ConnectFailure::AuthFailed))));
    // Another cipher: refused with what to do.
    let chacha = SessionParams {
        cipher: CipherKind::ChaCha20Poly1305,
        ..params()
    };
    let c3 = sim.client_with(s, chacha, PSK, Link::clean(5));
    sim.nodes[c3].auto_reconnect = false;
    sim.run_for(500);
    assert!(sim.nodes[c3].events.iter().any(
        |e| matches!(e, Event::ConnectFailed(ConnectFailure::Refused(r)) if r.contains("--crypt"))
    ));
    // Nobody there: a bounded attempt gives up.
    let mut lonely = Sim::new(52);
    let ghost = lonely.server(params(), Link::clean(5));
    lonely.nodes[ghost].blackout_until = u64::MAX;
    let c4 = lonely.client(ghost, Link::clean(5));
    lonely.nodes[c4].auto_reconnect = false;
    let to = lonely.nodes[ghost].addr;
    lonely.call(c4, |ep, now, io| {
        ep.connect(now, to, payload(), Some(3), io)
    });
    lonely.run_for(10_000);
    assert!(lonely.nodes[c4].events.iter().any(|e| matches!(
        e,
        Event::ConnectFailed(ConnectFailure::NoAnswer { attempts: 3 })
    )));
}

#[test]
fn a_lost_answer_leaves_no_second_session_for_long() {
    // The server's answers are lost half the time: the client tries again,
    // and sessions the client never installed are not kept alive.
    let mut sim = Sim::new(61);
    let s = sim.server(params(), Link::bad(30, 0.5));
    let c = sim.client(s, Link::clean(30));
    sim.run_for(10_000);
    assert!(sim.session(c).is_some());
    sim.run_for(40_000);
    assert_eq!(
        sim.nodes[s].ep.sessions().count(),
        1,
        "only the live session remains"
    );
}

#[test]
fn simulations_are_deterministic() {
    let run = |seed| {
        let mut sim = Sim::new(seed);
        let s = sim.server(params(), Link::bad(10, 0.2));
        let cs: Vec<usize> = (0..4).map(|_| sim.client(s, Link::bad(10, 0.2))).collect();
        sim.run_for(5000);
        exchange(&mut sim, s, &cs, 20);
        (sim.seq, sim.nodes[s].ep.stats().clone())
    };
    assert_eq!(run(3), run(3));
}

#[test]
fn a_flood_of_spoofed_message_1s_costs_cookies_not_handshakes() {
    let mut sim = Sim::new(71);
    let s = sim.server(params(), Link::clean(5));
    // Message 1s under another secret (as costly to check as real ones).
    let mut stranger = Sim::new(72);
    let ss = stranger.server(params(), Link::clean(1));
    let x = stranger.client_with(ss, params(), OTHER_PSK, Link::clean(1));
    stranger.run_for(30_000);
    let inits: Vec<Vec<u8>> = stranger.nodes[x]
        .sent_log
        .iter()
        .filter(|(_, d)| d[0] == 1)
        .map(|(_, d)| d.clone())
        .collect();
    assert!(inits.len() >= 20);
    let sa = sim.nodes[s].addr;
    // 3000 message 1s in 1.5 s, each from another spoofed source, and a
    // real client connecting in the middle of it.
    let mut c = None;
    for i in 0..3000u32 {
        let from: SocketAddr = format!(
            "10.{}.{}.{}:{}",
            100 + i / 65536,
            (i / 256) % 256,
            i % 256,
            1000 + i % 50000
        )
        .parse()
        .unwrap();
        sim.inject(sa, from, inits[i as usize % inits.len()].clone());
        if i % 2 == 0 {
            sim.run_for(1);
        }
        if i == 1500 {
            c = Some(sim.client(s, Link::clean(5)));
        }
    }
    sim.run_for(3000);
    let st = sim.nodes[s].ep.stats().clone();
    // Under load only cookies answer: the handshakes read are about the
    // threshold's worth per second, not the flood.
    let read = st.handshake_auth_failures;
    assert!(
        read <= 2 * kcpvpn_tunnel::endpoint::limits::LOAD_HANDSHAKES_PER_SEC + 50,
        "{st:?}"
    );
    assert!(st.cookies_sent >= 2000, "{st:?}");
    // The real client got its cookie, came back with it, and is in.
    let c = c.unwrap();
    assert!(sim.session(c).is_some(), "{:?}", sim.nodes[c].ep.stats());
    exchange(&mut sim, s, &[c], 5);
}

#[test]
fn one_source_is_limited_before_any_cryptography() {
    let mut sim = Sim::new(73);
    let s = sim.server(params(), Link::clean(5));
    let sa = sim.nodes[s].addr;
    let from: SocketAddr = "10.99.0.1:999".parse().unwrap();
    for _ in 0..500 {
        sim.inject(sa, from, vec![1u8; 263]);
    }
    sim.run_for(100);
    let st = sim.nodes[s].ep.stats();
    assert!(st.handshake_rate_limited >= 450, "{st:?}");
}

#[test]
fn a_request_turned_away_as_busy_costs_no_replay_cache_entry() {
    // A busy control plane: the server holds every request it may.
    let mut sim = Sim::new(81);
    let s = sim.server(params(), Link::clean(2));
    sim.nodes[s].defer = true;
    let to = sim.nodes[s].addr;
    let once = |sim: &mut Sim| {
        let seed = sim.rng.random();
        let ep = Endpoint::new(EndpointConfig {
            role: Role::Client {
                psk: PSK,
                identity: None,
            },
            params: params(),
            seed,
        });
        let c = sim.add(Kind::Client, ep, Link::clean(2));
        sim.call(c, |ep, now, io| ep.connect(now, to, payload(), Some(1), io));
        c
    };
    // Slower than the load threshold, so no cookies are involved.
    for _ in 0..256 {
        once(&mut sim);
        sim.run_for(20);
    }
    assert_eq!(sim.nodes[s].ep.stats().handshake_requests, 256);
    let x = once(&mut sim);
    sim.run_for(20);
    assert_eq!(sim.nodes[s].ep.stats().handshake_busy, 1);
    // Once the control plane caught up, the same message 1 again (as a
    // duplicate on the path would bring it) is read: it never took a
    // replay-cache entry while it was turned away.
    assert_eq!(sim.answer_deferred(s), 256);
    let (_, m1) = sim.nodes[x].sent_log[0].clone();
    let from = sim.nodes[x].addr;
    sim.inject(to, from, m1);
    sim.run_for(20);
    let st = sim.nodes[s].ep.stats();
    assert_eq!(st.handshake_replayed, 0, "{st:?}");
    assert_eq!(st.handshake_requests, 257, "{st:?}");
}

#[test]
fn retries_while_a_request_waits_make_no_second_session() {
    let mut sim = Sim::new(82);
    let s = sim.server(params(), Link::clean(2));
    sim.nodes[s].defer = true;
    let c = sim.client(s, Link::clean(2));
    // The control plane takes 2.5 s: the client tried twice more meanwhile.
    sim.run_for(2500);
    assert!(sim.nodes[c].ep.stats().handshake_attempts >= 3);
    let st = sim.nodes[s].ep.stats().clone();
    assert_eq!(st.handshake_requests, 1, "one request per source: {st:?}");
    assert!(st.handshake_busy >= 2, "{st:?}");
    assert_eq!(sim.answer_deferred(s), 1);
    sim.run_for(2000);
    assert!(
        sim.session(c).is_some(),
        "the answer to the first attempt counts"
    );
    assert_eq!(sim.nodes[s].ep.sessions().count(), 1);
    assert_eq!(
        sim.count(c, |e| matches!(e, Event::SessionClosed { .. })),
        0
    );
}

#[test]
fn a_request_too_old_for_its_client_gives_way_to_a_newer_one() {
    let mut sim = Sim::new(83);
    let s = sim.server(params(), Link::clean(2));
    sim.nodes[s].defer = true;
    let c = sim.client(s, Link::clean(2));
    // 4.5 s: the first request is older than the client still answers to,
    // so its next retry took its place.
    sim.run_for(4500);
    let st = sim.nodes[s].ep.stats().clone();
    assert_eq!(st.handshake_requests, 2, "{st:?}");
    assert_eq!(sim.nodes[s].deferred.len(), 2);
    assert_eq!(sim.answer_deferred(s), 1, "only the newer one is pending");
    sim.run_for(2000);
    assert!(sim.session(c).is_some());
    assert_eq!(sim.nodes[s].ep.sessions().count(), 1);
}

#[test]
fn forged_reject_hints_never_end_an_attempt() {
    // The server holds the request (as if its answer were slow); meanwhile an
    // attacker who saw message 1 sends "authentication failed" hints from the
    // server's address, again and again, for the attempt it saw.
    let mut sim = Sim::new(61);
    let s = sim.server(params(), Link::clean(5));
    sim.nodes[s].defer = true;
    let c = sim.client(s, Link::clean(5));
    sim.nodes[c].auto_reconnect = false;
    sim.run_for(50);
    let sender = sim.nodes[s]
        .events
        .iter()
        .find_map(|e| match e {
            Event::HandshakeRequested(r) => Some(r.sender_id),
            _ => None,
        })
        .expect("the server got message 1");
    let (to, from) = (sim.nodes[c].addr, sim.nodes[s].addr);
    for _ in 0..10 {
        let mut hint = vec![5u8, 1, 0, 0];
        hint.extend_from_slice(&sender.to_le_bytes());
        sim.inject(to, from, hint);
        sim.run_for(20);
    }
    assert!(sim.nodes[c].ep.stats().reject_hints_in >= 10);
    assert!(
        !sim.nodes[c]
            .events
            .iter()
            .any(|e| matches!(e, Event::ConnectFailed(_))),
        "a hint about one attempt ended it"
    );
    // The genuine answer still connects.
    assert_eq!(sim.answer_deferred(s), 1);
    sim.run_for(200);
    assert!(sim.session(c).is_some(), "the client did not connect");
}

/// The driver's reading contract: read while the session wants packets;
/// when it stops, tell the endpoint (`pause_reading`) and read again only
/// once `poll_resumed` names the session. A bulk of small packets from many
/// flows (each one a whole KCP segment once scheduled, so a session can
/// stop wanting packets without taking one) must never leave the interface
/// unread for good: every packet offered arrives.
#[test]
fn a_paused_interface_is_always_resumed() {
    let mut sim = Sim::new(7);
    let s = sim.server(params(), Link::clean(5));
    let c = sim.client(s, Link::clean(5));
    sim.run_for(2000);
    let (_, h) = sim.session(c).expect("connected");
    let mut reading = true;
    let mut sent = 0u32;
    let total = 40_000u32;
    let mut idle_ms = 0;
    while sent < total && idle_ms < 5_000 {
        if !reading {
            let mut resumed = false;
            while let Some(r) = sim.nodes[c].ep.poll_resumed() {
                resumed |= r == h;
            }
            reading = resumed;
        }
        if reading {
            idle_ms = 0;
            let mut budget = 256;
            while budget > 0 && sent < total && sim.nodes[c].ep.wants_packets(h) {
                let flow = (sent % 64) as usize;
                let len = if sent % 8 == 0 { 1200 } else { 60 };
                sim.send(c, h, packet(flow, sent, len));
                sent += 1;
                budget -= 1;
            }
            if !sim.nodes[c].ep.wants_packets(h) {
                sim.nodes[c].ep.pause_reading(h);
                reading = false;
            }
        } else {
            idle_ms += 1;
        }
        sim.run_for(1);
    }
    assert_eq!(sent, total, "reading stopped for good after {sent} packets");
    sim.run_for(3000);
    let (sid, _) = sim.server_session(s, sim.nodes[c].addr).unwrap();
    let got = sim.nodes[s].delivered.get(&sid).map_or(0, |v| v.len());
    assert_eq!(got, total as usize);
}
