//! One tunnel session, sans-IO: the packet pipeline between a virtual
//! interface and the wire.
//!
//! Sending: packet → `Kcp::send` → `Kcp::flush` → FEC shard(s) → AEAD seal →
//! datagram. Receiving: datagram → replay check + AEAD open → FEC decode →
//! `Kcp::input` → whole messages → packets. Time is passed in; nothing here
//! reads a clock, touches a socket or allocates per packet.
//!
//! Adaptive FEC (docs/protocol.md, section 6.7): a side that receives FEC
//! shards reports, at most every [`FEEDBACK_PERIOD_MS`], how many of the
//! peer's datagrams it lost (from gaps in the packet counters); the sender
//! turns the smoothed loss rate into the parity count of its next groups.
use crate::keys::{KeyStats, Keys};
use crate::order::{self, FlowLinks, Reorder};
use crate::pmtu::{self, PathMtu};
use crate::scheduler::{self, Scheduler};
use kcpvpn_crypto::packet::{CipherKind, MSG_CLOSE, MSG_DATA, MSG_FEEDBACK, MSG_PROBE, MSG_REKEY};
use kcpvpn_fec::{FecDecoder, FecEncoder};
use kcpvpn_kcp::{Kcp, KcpConfig};

/// Where sealed datagrams go: the driver hands out a buffer, the session
/// writes one datagram into it and commits. Lets the sealer write straight
/// into the send batch (no copy).
pub trait Transmit {
    fn buf(&mut self) -> &mut Vec<u8>;
    fn commit(&mut self);
}

/// A `Transmit` that collects datagrams, for tests and the Python binding.
#[derive(Default)]
pub struct VecTransmit {
    pub datagrams: Vec<Vec<u8>>,
    cur: Vec<u8>,
}

impl Transmit for VecTransmit {
    fn buf(&mut self) -> &mut Vec<u8> {
        self.cur.clear();
        &mut self.cur
    }
    fn commit(&mut self) {
        self.datagrams.push(self.cur.clone());
    }
}

#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub kcp: KcpConfig,
    /// FEC for what this side sends: (data shards, parity shards); None = off.
    pub fec_send: Option<(u8, u8)>,
    /// FEC the peer applies to what it sends us.
    pub fec_recv: Option<(u8, u8)>,
    pub rapid_fec: bool,
    pub cipher: CipherKind,
    /// Send a keepalive when nothing was sent for this long (ms).
    pub keepalive_ms: u32,
    /// The peer is gone when nothing authenticated arrived for this long (ms).
    pub idle_timeout_ms: u32,
    /// Largest UDP payload we may send.
    pub udp_mtu: usize,
    /// Bytes we may hold queued for sending before we stop reading the
    /// interface (the original's --smuxbuf).
    pub send_buffer_bytes: usize,
    /// Largest packet/frame the interface gives us.
    pub max_packet: usize,
    /// Clamp the MSS of TCP SYNs in both directions to fit this MTU (None = off).
    pub mss_clamp_mtu: Option<u16>,
    /// Packets are Ethernet frames (TAP).
    pub ethernet: bool,
    /// Flow queueing with CoDel in front of KCP (see `scheduler`); off, the
    /// interface's packets go straight into KCP's queue, first in first out.
    pub flow_queueing: bool,
    /// The initiator updates the keys this often (ms; see `keys`).
    pub rekey_interval_ms: u32,
}

/// Per-datagram overhead below KCP: outer header, tag, FEC header and size field.
pub const fn overhead(fec: bool) -> usize {
    kcpvpn_crypto::packet::HEADER_LEN
        + kcpvpn_crypto::packet::TAG_LEN
        + if fec { kcpvpn_fec::OVERHEAD } else { 0 }
}

impl SessionConfig {
    pub fn kcp_mtu(&self) -> usize {
        self.udp_mtu - overhead(self.fec_send.is_some())
    }
}

#[derive(Clone, Debug, Default)]
pub struct SessionStats {
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub wire_bytes_in: u64,
    pub wire_bytes_out: u64,
    pub auth_failures: u64,
    pub replays: u64,
    pub malformed: u64,
    pub fec_errors: u64,
    pub kcp_errors: u64,
    pub oversize_packets: u64,
    pub keepalives_out: u64,
    pub keepalives_in: u64,
    pub rapid_fec_flushes: u64,
    /// Empty messages sent in front of sparse flows' packets
    /// (`mark_before_sparse`).
    pub sparse_markers: u64,
    /// Parity shards our full FEC groups get now (adaptive, 0..=ps).
    pub fec_parity: f64,
    /// The peer's smoothed report of our datagram loss, parts per million.
    pub fec_loss_ppm: u64,
    pub feedback_in: u64,
    pub feedback_out: u64,
    /// Path-MTU probes sent and acknowledged (docs/protocol.md, section 6.8).
    pub probes_out: u64,
    pub probes_acked: u64,
    /// The largest datagram the path carried so far (0: not probed yet).
    pub path_mtu: u64,
    /// What the peer's loss reports added up to: our datagrams it expected
    /// and the ones that never arrived (the measured loss, without the
    /// smoothing and prior of `fec_loss_ppm`).
    pub peer_expected: u64,
    pub peer_lost: u64,
    /// The loss the peer measured of what we sent in its reports of the
    /// last 5 to 10 s, parts per million: what "loss" means to an operator
    /// (`fec_loss_ppm` is the smoothed estimate parity follows, which starts
    /// from a cautious prior).
    pub loss_ppm: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The peer said goodbye (an authenticated close message).
    ByPeer,
    /// Nothing authenticated from the peer for `idle_timeout_ms`.
    IdleTimeout,
}

/// What one received datagram turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    Data,
    Keepalive,
    Close,
    /// A loss report for adaptive FEC (section 6.7).
    Feedback,
    /// A path-MTU probe or its acknowledgement (section 6.8).
    Probe,
    /// A key update message (section 5.1).
    Rekey,
    /// Dropped and counted (failed authentication, replay, malformed).
    Dropped,
}

pub struct Session {
    cfg: SessionConfig,
    kcp: Kcp,
    fec_enc: Option<FecEncoder>,
    fec_dec: Option<FecDecoder>,
    keys: Keys,
    /// Reassembly buffer for one message from KCP.
    msg_buf: Vec<u8>,
    last_send: u32,
    last_recv: u32,
    rapid_deadline: Option<u32>,
    /// Datagrams sent by flushes, per KCP interval, for telling sparse
    /// traffic from a flow that fills FEC groups.
    flow: Buckets<u64>,
    closed: Option<Closed>,
    rx: LossCounter,
    /// When the next loss report leaves (None: no FEC data since the last).
    feedback_due: Option<u32>,
    /// When ACKs held back by `flush` must leave.
    ack_deadline: Option<u32>,
    /// Smoothed loss rate the peer reports for what we send.
    loss_estimate: f64,
    /// (expected, lost) of the peer's reports, per [`LOSS_WINDOW_MS`].
    recent_loss: Buckets<(u64, u64)>,
    /// Reports are trusted until then; None: none yet, or they stopped
    /// coming, so full parity.
    feedback_fresh_until: Option<u32>,
    loss_floor: LossFloor,
    /// Responder side: nothing leaves until the peer's first authenticated
    /// datagram proves it installed the session (so none of ours arrives
    /// at a peer that would drop it as unknown and count it as loss).
    awaiting_peer: bool,
    /// A session the peer has not confirmed by then is given up.
    await_deadline: u32,
    /// Whole messages stay in KCP until the interface is there to take them.
    holding: bool,
    pmtu: PathMtu,
    /// (key epoch, counter) of the newest authenticated datagram, and
    /// whether the last one taken was it (a new newest).
    newest: Option<(u32, u64)>,
    last_was_newest: bool,
    /// Packets from the interface waiting for KCP, by flow, with CoDel.
    sched: Option<Scheduler>,
    /// Per-flow order: links of what we send, reordering of what we get.
    links: FlowLinks,
    reorder: Reorder,
    /// A message being built (header and packet) for KCP.
    tx_msg: Vec<u8>,
    /// The last segments of sparse flows' packets put into KCP and not yet
    /// sent. Their FEC groups get the strict parity of interactive
    /// traffic, and with rapid FEC that parity leaves as soon as they
    /// have, instead of when the group fills: interactive packets sharing
    /// the tunnel with a download are protected as well as when alone.
    sparse: SparseSns,
    /// A packet went in or out since the last `poll`; when the quiet began;
    /// whether the buffers were trimmed since (an idle session gives back
    /// what a burst grew).
    active: bool,
    quiet_since: u32,
    trimmed: bool,
    pub stats: SessionStats,
}

/// Sequence numbers of sparse flows' segments waiting in KCP: a few at
/// most (the scheduler serves such flows first and KCP's queue is short),
/// each of which must find its way into a protected FEC group. One slot
/// was not enough: a reply that queued behind the ACKs of a transfer lost
/// its place to the next sparse packet and went out unprotected (1 in 50
/// replies late by a retransmission at 10% loss).
#[derive(Default)]
struct SparseSns {
    sns: [u32; SPARSE_SLOTS],
    len: usize,
}

const SPARSE_SLOTS: usize = 8;

impl SparseSns {
    fn push(&mut self, sn: u32) {
        if self.len == SPARSE_SLOTS {
            // Full: the oldest has most likely left already.
            self.sns.copy_within(1.., 0);
            self.len -= 1;
        }
        self.sns[self.len] = sn;
        self.len += 1;
    }

    fn as_slice(&self) -> &[u32] {
        &self.sns[..self.len]
    }

    /// Forgets the segments before `snd_nxt` (sent); true if there were any.
    fn remove_sent(&mut self, snd_nxt: u32) -> bool {
        let before_len = self.len;
        let mut kept = 0;
        for i in 0..self.len {
            let sn = self.sns[i];
            if !before(sn, snd_nxt) {
                self.sns[kept] = sn;
                kept += 1;
            }
        }
        self.len = kept;
        kept < before_len
    }
}

/// A session without packets for this long (ms) gives back its buffers.
pub const IDLE_TRIM_MS: u32 = 5000;
/// The longest an idle session sleeps when no timer of its own is earlier.
const IDLE_WAKE_MS: u32 = 60_000;

/// Receiver side of adaptive FEC: datagrams the peer sent (from the gaps in
/// its packet counters) and datagrams that arrived, since the last report.
#[derive(Default)]
struct LossCounter {
    /// First counter of the current period.
    next: u64,
    /// One more than the highest counter received (0: none yet).
    end: u64,
    /// Authenticated datagrams with a counter >= `next`.
    received: u64,
    /// The key epoch the counters are of, and what this period saw under
    /// the epochs before it.
    epoch: u32,
    carried_expected: u64,
    carried_received: u64,
}

impl LossCounter {
    fn authenticated(&mut self, epoch: u32, counter: u64) {
        // Counters start again at 0 under each new key: the old epoch's
        // range is carried into this period and the new one starts fresh.
        // Stragglers of an older epoch are not counted (at worst a few
        // datagrams read as lost once per key update).
        if epoch != self.epoch {
            if epoch < self.epoch {
                return;
            }
            self.carried_expected += self.end.saturating_sub(self.next);
            self.carried_received += self.received;
            self.epoch = epoch;
            self.next = 0;
            self.end = 0;
            self.received = 0;
        }
        // A datagram from before the last report was already reported as
        // lost; counting it now would push this period's loss below zero.
        if counter >= self.next {
            self.received += 1;
            self.end = self.end.max(counter.saturating_add(1));
        }
    }

    /// (expected, lost) since the last call, and a new period.
    fn take(&mut self) -> (u32, u32) {
        let expected = self.end.saturating_sub(self.next) + self.carried_expected;
        let lost = expected.saturating_sub(self.received + self.carried_received);
        self.next = self.next.max(self.end);
        self.received = 0;
        self.carried_expected = 0;
        self.carried_received = 0;
        let expected = expected.min(u32::MAX as u64) as u32;
        (expected, (lost.min(expected as u64)) as u32)
    }
}

/// Share of full FEC groups allowed to fail (more datagrams lost than
/// parity shards; KCP then resends what is missing). Groups closed early
/// by rapid FEC, i.e. sparse traffic, use [`kcpvpn_fec::PARTIAL_GROUP_FAILURE`] (0.02%).
/// Was 5%: once a timeout no longer stalled a flow 130-250 ms (kcp.rs,
/// bbr's RTO), 10% cost fewer bytes for the same goodput (40 ms,
/// 100 Mbit/s, 5% loss, two runs each: wire bytes per byte 1.46-1.50 ->
/// 1.42-1.44, inner bbr 72.6-73.8 -> 75.1-75.6 Mbit/s, cubic 61-69 -> 62-65);
/// 20% went below 1.4 but cost cubic a sixth at 10% loss.
pub const FULL_GROUP_FAILURE: f64 = 0.10;

/// ACKs alone (no data to carry them) wait up to this long (ms) for more to
/// join them or for a packet from the interface to carry them, unless
/// [`ACK_BATCH`] are pending. Without this a bulk receiver sends one small
/// datagram per segment it gets: 13% of the bytes on the wire at 100 Mbit/s.
pub const ACK_DELAY_MS: u32 = 1;
/// Pending ACKs that go out at once.
pub const ACK_BATCH: usize = 4;
/// Top-ups of KCP's queue per flush (see `Session::flush`): a bound, so
/// that one flush cannot run on for ever.
const FILL_ROUNDS: usize = 16;

/// The measured loss shown to operators covers the peer's reports of the
/// last one to two of these (ms).
pub const LOSS_WINDOW_MS: u32 = 5000;

/// A side receiving FEC sends a loss report at most this often (ms), and
/// only while FEC data arrives.
pub const FEEDBACK_PERIOD_MS: u32 = 100;
/// Version byte of the feedback plaintext.
pub const FEEDBACK_VERSION: u8 = 1;
/// Feedback plaintext: version u8, expected u32, lost u32.
pub const FEEDBACK_LEN: usize = 9;
/// Without a report for this long (ms) the sender goes back to full parity:
/// the link may have changed while we were idle or the reports are lost.
pub const FEEDBACK_STALE_MS: u32 = 1000;
/// Loss estimate before any report: conservative (10% wants more than the
/// default 3 parity shards), so smoothing starts from "protect fully".
const LOSS_PRIOR: f64 = 0.1;
/// A report of `e` datagrams moves the estimate by `e / (e + this)`, at
/// least [`MIN_WEIGHT`] and at most [`MAX_WEIGHT`]: big samples count, a
/// handful of datagrams barely.
/// (A floor of 1/8 let sparse traffic's reports of 2 or 3 datagrams, nearly
/// all "none lost", talk a 1% estimate down to nothing within seconds, and
/// then its pings went out without parity: p99 52 ms at 1% loss.)
const WEIGHT_DATAGRAMS: f64 = 256.0;
const MIN_WEIGHT: f64 = 0.02;
/// Even a big report moves the estimate by at most this: a queue that
/// overflowed for 100 ms (congestion, not the link's loss) must not triple
/// the parity, which would only add load to the full queue.
const MAX_WEIGHT: f64 = 0.25;

/// Reports of at least this many datagrams feed the loss floor: smaller
/// ones say too little (and sparse traffic does not congest a path).
const FLOOR_MIN_DATAGRAMS: u32 = 100;
/// The loss floor is the lowest dense report of the last one to two of
/// these (ms): long enough to span a congestion episode, short enough to
/// follow a link whose loss really rose.
const FLOOR_BUCKET_MS: u32 = 1500;
/// A dense report counts for at most the floor plus this much, or twice
/// the floor if that is more (plus the sampling noise): loss above the
/// link's steady level is a queue overflowing, and parity for it only
/// feeds the queue.
const FLOOR_MARGIN: f64 = 0.02;

/// Two adjacent time buckets of equal length: the current one and the one
/// before it, which is forgotten when the current one did not follow it
/// directly (traffic paused). A sliding window in O(1), for the loss floor
/// and for rapid FEC's flow rate.
struct Buckets<T> {
    /// (start, value) of the current bucket.
    cur: Option<(u32, T)>,
    prev: Option<T>,
}

impl<T> Default for Buckets<T> {
    fn default() -> Self {
        Buckets {
            cur: None,
            prev: None,
        }
    }
}

impl<T: Copy> Buckets<T> {
    /// The current bucket at `now`; if the last one has ended (`len` ms after
    /// its start), a new one that starts at `now` with `fresh`.
    fn at(&mut self, now: u32, len: u32, fresh: T) -> &mut T {
        let (start, value) = match self.cur {
            Some((start, v)) if before(now, start.wrapping_add(len)) => (start, v),
            cur => {
                self.prev = cur
                    .filter(|(start, _)| before(now, start.wrapping_add(2 * len)))
                    .map(|(_, v)| v);
                (now, fresh)
            }
        };
        &mut self.cur.insert((start, value)).1
    }
}

/// The lowest loss of recent dense reports: what the link loses when its
/// queues do not overflow.
#[derive(Default)]
struct LossFloor(Buckets<f64>);

impl LossFloor {
    fn add(&mut self, now: u32, sample: f64) {
        // A bucket that ended long ago (the flow paused) says nothing of the
        // link now: a clean spell before a pause must not cap the loss the
        // link has after it.
        let min = self.0.at(now, FLOOR_BUCKET_MS, sample);
        *min = min.min(sample);
    }

    /// `sample` (of `n` datagrams) without what lies beyond the link's
    /// steady loss. The floor is a minimum of noisy samples, so it sits
    /// below the true rate; three standard deviations of a sample of `n` at
    /// the current `estimate` keep the cap clear of that noise.
    fn cap(&self, sample: f64, n: u32, estimate: f64) -> f64 {
        let Some((_, cur)) = self.0.cur else {
            return sample;
        };
        let floor = self.0.prev.map_or(cur, |p| cur.min(p));
        let p = estimate.clamp(0.0, 1.0);
        let noise = 3.0 * (p * (1.0 - p) / n.max(1) as f64).sqrt();
        sample.min(floor + FLOOR_MARGIN.max(floor) + noise)
    }
}

/// Encodes a loss report (section 6.7).
pub fn encode_feedback(expected: u32, lost: u32) -> [u8; FEEDBACK_LEN] {
    let mut b = [0u8; FEEDBACK_LEN];
    b[0] = FEEDBACK_VERSION;
    b[1..5].copy_from_slice(&expected.to_le_bytes());
    b[5..9].copy_from_slice(&lost.to_le_bytes());
    b
}

/// Decodes a loss report: `None` if it is short, of an unknown version, or
/// reports more lost than expected. Bytes after the ninth are ignored (room
/// for later fields).
pub fn decode_feedback(b: &[u8]) -> Option<(u32, u32)> {
    if b.len() < FEEDBACK_LEN || b[0] != FEEDBACK_VERSION {
        return None;
    }
    let expected = u32::from_le_bytes(b[1..5].try_into().ok()?);
    let lost = u32::from_le_bytes(b[5..9].try_into().ok()?);
    (lost <= expected).then_some((expected, lost))
}

fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

fn before(a: u32, b: u32) -> bool {
    !after(a, b)
}

/// With rapid FEC, how long a partial group of sparse traffic waits for
/// company before its parity leaves (ms). None: ACKs no longer need the
/// wait to share the reply's group (they wait for the reply themselves,
/// [`ACK_DELAY_MS`]), and every ms here shows in the p99 of a lossy link.
pub const RAPID_SPARSE_DELAY_MS: u32 = 0;

impl Session {
    /// `conv` must be the same on both sides; `send_key`/`recv_key` are this
    /// side's direction keys from the handshake, `peer_id` the session id the
    /// peer gave itself (carried in every datagram we send it).
    /// Fails only on FEC parameters Reed-Solomon can't use (a peer's may be
    /// anything), so a bad peer is refused rather than crashing the data path.
    pub fn new(
        cfg: SessionConfig,
        conv: u32,
        send_key: &[u8; 32],
        recv_key: &[u8; 32],
        peer_id: u32,
        now: u32,
    ) -> Result<Session, kcpvpn_fec::FecError> {
        let mut cfg = cfg;
        let mut kcp_cfg = cfg.kcp.clone();
        kcp_cfg.mtu = cfg.kcp_mtu();
        // KCP hands out whole messages as soon as they are certain; the
        // session keeps the order of each flow (`order`), unless the user
        // asked for no order at all (--unordered).
        kcp_cfg.unordered = true;
        // Clamp TCP to what one KCP segment carries, not just to the interface
        // MTU: a 1500-byte packet over the default 1350-byte UDP MTU would
        // otherwise travel as two segments (1286 + 214 bytes), doubling the
        // datagrams, seals and syscalls per byte.
        if let Some(mtu) = cfg.mss_clamp_mtu {
            let link_header = if cfg.ethernet { 18 } else { 0 };
            let one_segment = cfg
                .kcp_mtu()
                .saturating_sub(kcpvpn_kcp::wire::OVERHEAD + order::HEADER + link_header);
            cfg.mss_clamp_mtu = Some(mtu.min(one_segment.max(576) as u16));
        }
        let max_dgram = cfg.udp_mtu;
        let fec_enc = match cfg.fec_send {
            Some((d, p)) => Some(FecEncoder::try_new(d as usize, p as usize, max_dgram)?),
            None => None,
        };
        let fec_dec = match cfg.fec_recv {
            Some((d, p)) => Some(FecDecoder::try_new(d as usize, p as usize, 64)?),
            None => None,
        };
        let mut session = Session {
            kcp: Kcp::new(conv, kcp_cfg),
            fec_enc,
            fec_dec,
            keys: Keys::new(cfg.cipher, send_key, recv_key, peer_id, false, 0, now),
            // Grows if a message is ever larger (drain_messages).
            msg_buf: vec![0u8; cfg.max_packet.max(2048)],
            last_send: now,
            last_recv: now,
            rapid_deadline: None,
            flow: Buckets::default(),
            closed: None,
            rx: LossCounter::default(),
            feedback_due: None,
            ack_deadline: None,
            loss_estimate: LOSS_PRIOR,
            recent_loss: Buckets::default(),
            feedback_fresh_until: None,
            loss_floor: LossFloor::default(),
            awaiting_peer: false,
            await_deadline: now,
            holding: false,
            pmtu: PathMtu::new(cfg.udp_mtu),
            newest: None,
            last_was_newest: false,
            sched: cfg
                .flow_queueing
                .then(|| Scheduler::new(cfg.send_buffer_bytes, cfg.ethernet)),
            links: FlowLinks::default(),
            reorder: Reorder::default(),
            tx_msg: Vec::new(),
            sparse: SparseSns::default(),
            active: false,
            quiet_since: now,
            trimmed: false,
            stats: SessionStats {
                fec_parity: cfg.fec_send.map_or(0.0, |(_, p)| p as f64),
                fec_loss_ppm: (LOSS_PRIOR * 1e6) as u64,
                ..SessionStats::default()
            },
            cfg,
        };
        session.update_path_cost();
        Ok(session)
    }

    /// Tells KCP's pacing what a segment costs on the path: outer headers
    /// (IP + UDP, ours) and, with FEC, the parity share of each group.
    fn update_path_cost(&mut self) {
        const IP_UDP: usize = 28;
        let extra = IP_UDP + overhead(self.fec_enc.is_some());
        let factor = self.fec_enc.as_ref().map_or(1.0, |e| {
            (e.data_shards() as f64 + e.parity_average()) / e.data_shards() as f64
        });
        self.kcp.set_path_cost(extra, factor);
        self.kcp.set_path_loss(self.loss_estimate);
    }

    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// The id the peer receives under (carried in every datagram we send).
    pub fn peer_id(&self) -> u32 {
        self.keys.peer_id()
    }

    pub fn closed(&self) -> Option<Closed> {
        self.closed
    }

    /// Responder side: send nothing until the peer's first authenticated
    /// datagram arrives; give up (idle) if it has not within `timeout_ms`
    /// (its answer was lost and it tried again, or it went away).
    pub fn await_peer(&mut self, now: u32, timeout_ms: u32) {
        self.awaiting_peer = true;
        self.await_deadline = now.wrapping_add(timeout_ms);
    }

    /// Whether the datagram `input` just authenticated is the newest so far
    /// (by key epoch, then counter): only such a one may move the peer's
    /// address, so a delayed or replayed older one cannot pull it back.
    pub fn last_was_newest(&self) -> bool {
        self.last_was_newest
    }

    /// True until the peer proved it has the session (see [`Session::await_peer`]).
    pub fn awaiting_peer(&self) -> bool {
        self.awaiting_peer
    }

    /// Keep whole messages in KCP instead of delivering them (the interface
    /// is not there yet). KCP's receive window then closes as they pile up,
    /// so the peer holds back instead of losing them.
    pub fn hold_delivery(&mut self) {
        self.holding = true;
    }

    /// Delivers what was held and delivers at once from now on.
    pub fn release_delivery(&mut self, deliver: &mut dyn FnMut(&[u8])) {
        self.holding = false;
        self.drain_messages(deliver);
    }

    /// A keepalive now: the initiator's first datagram, which tells the
    /// responder that the session is installed at this end.
    pub fn greet(&mut self, now: u32, tx: &mut dyn Transmit) {
        self.send_keepalive(now, tx);
    }

    /// The path-MTU search's verdict, once: (configured, largest that
    /// worked) when the path drops datagrams of the configured size.
    pub fn take_path_mtu_problem(&mut self) -> Option<(usize, usize)> {
        self.pmtu.take_problem()
    }

    /// True while the session may take another packet from the interface
    /// without exceeding its send buffer.
    pub fn wants_packets(&self) -> bool {
        let queued =
            self.kcp.wait_snd() * self.kcp_mtu() + self.sched.as_ref().map_or(0, |s| s.bytes());
        queued < self.cfg.send_buffer_bytes
    }

    /// Segments KCP may hold not yet sent: about 1 ms at the path's rate,
    /// so the standing queue stays in the scheduler, where flows are served
    /// fairly (a ping first) and CoDel bounds it in time, and a ping waits
    /// behind at most that much in KCP. The pacer does not run dry on it:
    /// `flush` tops KCP up for as long as segments leave. Was 3 ms, topped
    /// up once per flush: pings waited 3 ms behind a busy tunnel, and a
    /// fast link was held to what a turn of the loop moved. Without a rate
    /// estimate, KCP's window.
    fn kcp_queue_target(&self) -> u32 {
        let bw = self.kcp.bandwidth();
        if bw <= 0.0 {
            return if self.cfg.kcp.bbr {
                64
            } else {
                self.cfg.kcp.snd_wnd as u32
            };
        }
        (bw / self.kcp.mss().max(1) as f64).clamp(8.0, 8192.0) as u32
    }

    /// Moves packets from the scheduler into KCP while KCP's own queue is
    /// short.
    fn fill(&mut self, now: u32) {
        if self.sched.as_ref().is_none_or(|s| s.is_empty()) {
            self.kcp.set_backlog_upstream(false);
            return;
        }
        let target = self.kcp_queue_target();
        let mut sched = self.sched.take().expect("checked above");
        while self.kcp.queued() < target {
            let Some(pkt) = sched.dequeue(now) else {
                break;
            };
            let sparse = sched.last_from_sparse_flow();
            if sparse {
                self.mark_before_sparse();
            }
            if !self.push_to_kcp(&pkt) {
                self.stats.oversize_packets += 1;
            }
            if sparse {
                self.sparse.push(self.kcp.next_sn().wrapping_sub(1));
            }
            sched.give_back(pkt);
        }
        self.kcp.set_backlog_upstream(!sched.is_empty());
        self.sched = Some(sched);
    }

    /// The peer hands out a one-segment message ahead of a gap only when
    /// the segment before it is there and ends a message (kcp.rs,
    /// `find_early`): a message's last fragment looks like a whole one.
    /// So a ping whose preceding segment (a download's, in a group FEC
    /// could not rebuild) was lost waited a round trip for that segment's
    /// retransmission, although its own datagram arrived: 1-2% of replies
    /// at 5-10% loss. Unless everything before it is acknowledged, a sparse
    /// flow's packet therefore follows an empty message, a padding segment
    /// the peer discards, that leaves with it under the same strict parity.
    fn mark_before_sparse(&mut self) {
        if self.kcp.next_sn() == self.kcp.snd_una() {
            return;
        }
        if self.kcp.send(&[0u8; order::HEADER]).is_ok() {
            self.sparse.push(self.kcp.next_sn().wrapping_sub(1));
            self.stats.sparse_markers += 1;
        }
    }

    /// One packet into KCP as a message, behind the header that links it
    /// to its flow's previous message.
    fn push_to_kcp(&mut self, pkt: &[u8]) -> bool {
        let flow = scheduler::flow_hash(pkt, self.cfg.ethernet);
        let sn = self.kcp.next_sn();
        let segments = self.kcp.segments_for(order::HEADER + pkt.len());
        let end = sn.wrapping_add(segments as u32);
        let hdr = self.links.link(flow, sn, end, self.kcp.snd_una());
        self.tx_msg.clear();
        self.tx_msg.extend_from_slice(&hdr);
        self.tx_msg.extend_from_slice(pkt);
        self.kcp.send(&self.tx_msg).is_ok()
    }

    fn kcp_mtu(&self) -> usize {
        self.cfg.kcp_mtu()
    }

    /// Queues one packet from the interface (clamping a SYN's MSS in place).
    /// Call `flush` after a batch.
    pub fn send_packet(&mut self, pkt: &mut [u8], now: u32) -> bool {
        if let Some(mtu) = self.cfg.mss_clamp_mtu {
            crate::mss::clamp(pkt, mtu, self.cfg.ethernet);
        }
        self.active = true;
        if pkt.len() + order::HEADER > self.kcp.max_message() {
            self.stats.oversize_packets += 1;
            return false;
        }
        self.stats.packets_in += 1;
        self.stats.bytes_in += pkt.len() as u64;
        match &mut self.sched {
            Some(sched) => sched.enqueue(pkt, now),
            None => {
                self.push_to_kcp(pkt);
            }
        }
        true
    }

    /// Takes one datagram addressed to this session. Packets it completes are
    /// passed to `deliver` (after the whole batch is in, call `flush` so ACKs
    /// leave promptly).
    pub fn input(
        &mut self,
        datagram: &mut [u8],
        now: u32,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Received {
        let wire_len = datagram.len() as u64;
        let (epoch, opened) = match self.keys.open(datagram, now) {
            Ok(o) => o,
            Err(e) => {
                use kcpvpn_crypto::packet::CryptoError as E;
                match e {
                    E::Replayed | E::TooOld => self.stats.replays += 1,
                    E::AuthFailed => self.stats.auth_failures += 1,
                    _ => self.stats.malformed += 1,
                }
                return Received::Dropped;
            }
        };
        self.stats.datagrams_in += 1;
        self.stats.wire_bytes_in += wire_len;
        self.last_recv = now;
        self.awaiting_peer = false;
        self.rx.authenticated(epoch, opened.counter);
        let key = (epoch, opened.counter);
        self.last_was_newest = self.newest.is_none_or(|n| key > n);
        if self.last_was_newest {
            self.newest = Some(key);
        }
        if opened.msg_type == MSG_PROBE {
            return match pmtu::decode(opened.payload) {
                Some(p) => {
                    self.on_probe(p, wire_len as usize, now);
                    Received::Probe
                }
                None => {
                    self.stats.malformed += 1;
                    Received::Dropped
                }
            };
        }
        if opened.msg_type == MSG_REKEY {
            self.keys.on_rekey(opened.payload, now);
            return Received::Rekey;
        }
        if opened.msg_type == MSG_CLOSE {
            self.closed = Some(Closed::ByPeer);
            return Received::Close;
        }
        if opened.msg_type == MSG_FEEDBACK {
            return match decode_feedback(opened.payload) {
                Some((expected, lost)) => {
                    self.stats.feedback_in += 1;
                    self.on_feedback(expected, lost, now);
                    Received::Feedback
                }
                None => {
                    self.stats.malformed += 1;
                    Received::Dropped
                }
            };
        }
        if opened.msg_type != MSG_DATA {
            self.stats.malformed += 1;
            return Received::Dropped;
        }
        let payload = opened.payload;
        if payload.is_empty() {
            self.stats.keepalives_in += 1;
            return Received::Keepalive;
        }
        let kcp = &mut self.kcp;
        let stats = &mut self.stats;
        match &mut self.fec_dec {
            Some(dec) => {
                // FEC traffic is arriving: the sender wants a loss report.
                // Keepalives and feedback don't arm it, so idle stays silent.
                if self.feedback_due.is_none() {
                    self.feedback_due = Some(now.wrapping_add(FEEDBACK_PERIOD_MS));
                }
                let mut kcp_err = 0;
                if dec
                    .input(payload, &mut |d: &[u8]| {
                        if kcp.input(d, now).is_err() {
                            kcp_err += 1;
                        }
                    })
                    .is_err()
                {
                    stats.fec_errors += 1;
                }
                stats.kcp_errors += kcp_err;
            }
            None => {
                if kcp.input(payload, now).is_err() {
                    stats.kcp_errors += 1;
                }
            }
        }
        self.drain_messages(deliver);
        Received::Data
    }

    /// Sender side of adaptive FEC: folds a report into the loss estimate
    /// and picks the parity count for the next groups.
    fn on_feedback(&mut self, expected: u32, lost: u32, now: u32) {
        self.stats.peer_expected += expected as u64;
        self.stats.peer_lost += lost as u64;
        let cur = self.recent_loss.at(now, LOSS_WINDOW_MS, (0, 0));
        cur.0 += expected as u64;
        cur.1 += lost as u64;
        let (e, l) = *cur;
        let (pe, pl) = self.recent_loss.prev.unwrap_or((0, 0));
        // In u128: a peer may report billions lost per report, which times
        // a million overflows u64 after a few thousand reports.
        let ppm = u128::from(l + pl) * 1_000_000 / u128::from((e + pe).max(1));
        self.stats.loss_ppm = ppm.min(1_000_000) as u64;
        let Some(enc) = &mut self.fec_enc else {
            return; // we send no FEC; nothing to adapt
        };
        if expected == 0 {
            return;
        }
        let e = expected as f64;
        let weight = (e / (e + WEIGHT_DATAGRAMS)).clamp(MIN_WEIGHT, MAX_WEIGHT);
        let mut sample = lost as f64 / e;
        if expected >= FLOOR_MIN_DATAGRAMS {
            self.loss_floor.add(now, sample);
            sample = self.loss_floor.cap(sample, expected, self.loss_estimate);
        }
        self.loss_estimate += weight * (sample - self.loss_estimate);
        self.feedback_fresh_until = Some(now.wrapping_add(FEEDBACK_STALE_MS));
        // Groups fill only with dense traffic (sparse traffic is closed
        // early by rapid FEC, under a strict target of its own): there,
        // resending what parity did not save costs fewer bytes than parity
        // on every group, and the bytes are the throughput.
        enc.set_loss_with_target(Some(self.loss_estimate), FULL_GROUP_FAILURE);
        self.stats.fec_parity = enc.parity_average();
        self.update_path_cost();
        self.stats.fec_loss_ppm = (self.loss_estimate * 1e6) as u64;
    }

    /// Back to full parity when reports stopped (idle, or lost on the way).
    fn expire_feedback(&mut self, now: u32) {
        if let Some(until) = self.feedback_fresh_until {
            if after(now, until) {
                self.feedback_fresh_until = None;
                if let Some(enc) = &mut self.fec_enc {
                    enc.set_stale();
                    self.stats.fec_parity = enc.parity_average();
                }
                self.update_path_cost();
            }
        }
    }

    /// Receiver side of adaptive FEC: the loss report, when one is due.
    fn send_feedback(&mut self, now: u32, tx: &mut dyn Transmit) {
        match self.feedback_due {
            Some(due) if after(now, due) => {}
            _ => return,
        }
        self.feedback_due = None;
        let (expected, lost) = self.rx.take();
        let buf = tx.buf();
        if self.keys.sealer().is_some_and(|s| {
            s.seal_into(MSG_FEEDBACK, &encode_feedback(expected, lost), buf)
                .is_ok()
        }) {
            self.stats.feedback_out += 1;
            self.stats.datagrams_out += 1;
            self.stats.wire_bytes_out += buf.len() as u64;
            tx.commit();
            self.last_send = now;
        }
    }

    fn drain_messages(&mut self, deliver: &mut dyn FnMut(&[u8])) {
        if self.holding {
            return;
        }
        let Session {
            kcp,
            msg_buf,
            reorder,
            stats,
            cfg,
            active,
            ..
        } = self;
        let keep_order = !cfg.kcp.unordered;
        let mut out = |m: &[u8]| {
            stats.packets_out += 1;
            stats.bytes_out += m.len() as u64;
            deliver(m);
        };
        let mut malformed = 0;
        while let Some(size) = kcp.peek_size() {
            if size > msg_buf.len() {
                msg_buf.resize(size, 0);
            }
            let Ok((n, sn)) = kcp.recv_sn(msg_buf) else {
                break;
            };
            *active = true;
            if n < order::HEADER {
                malformed += 1;
                continue;
            }
            if n == order::HEADER {
                // Padding in front of a sparse flow's packet
                // (`mark_before_sparse`): it carries nothing.
                continue;
            }
            let delta = u16::from_le_bytes([msg_buf[0], msg_buf[1]]);
            let body = &mut msg_buf[order::HEADER..n];
            if let Some(mtu) = cfg.mss_clamp_mtu {
                crate::mss::clamp(body, mtu, cfg.ethernet);
            }
            if keep_order {
                reorder.offer(sn, delta, body, kcp.rcv_delivered_before(), &mut out);
            } else {
                out(body);
            }
        }
        reorder.advance(kcp.rcv_delivered_before(), &mut out);
        stats.malformed += malformed;
    }

    /// Sends whatever KCP has ready (new data, ACKs, retransmissions); a
    /// few ACKs with nothing else to send wait up to [`ACK_DELAY_MS`].
    pub fn flush(&mut self, now: u32, tx: &mut dyn Transmit) {
        if self.awaiting_peer {
            return;
        }
        self.answer_probes(tx);
        self.send_rekey(now, tx);
        self.fill(now);
        self.expire_feedback(now);
        let acks = self.kcp.pending_acks();
        if acks > 0 && acks < ACK_BATCH && self.kcp.only_acks_due(now) {
            let due = *self
                .ack_deadline
                .get_or_insert(now.wrapping_add(ACK_DELAY_MS));
            if before(now, due) {
                return;
            }
        }
        self.ack_deadline = None;
        // KCP holds only a short queue (`kcp_queue_target`), so that a
        // ping the scheduler serves first waits behind little; when the
        // pacer lets all of it leave, top it up and send again rather than
        // let the pacer's allowance go unused until the next turn.
        for _ in 0..FILL_ROUNDS {
            if !self.send_once(now, tx) || self.kcp.queued() > 0 {
                break; // nothing left, or the pacer or window holds the rest
            }
            self.fill(now);
            if self.kcp.queued() == 0 {
                break; // the scheduler had nothing more
            }
        }
    }

    /// One pass of KCP's flush through FEC and the sealer; false when
    /// nothing left.
    fn send_once(&mut self, now: u32, tx: &mut dyn Transmit) -> bool {
        let Session {
            kcp,
            fec_enc,
            keys,
            stats,
            last_send,
            sparse,
            ..
        } = self;
        // Past the message budget nothing leaves until the keys are updated.
        let Some(sealer) = keys.sealer() else {
            return false;
        };
        let mut sent = 0u64;
        let mut wire = 0u64;
        let mut seal = |shard: &[u8]| {
            let buf = tx.buf();
            if sealer.seal_into(MSG_DATA, shard, buf).is_ok() {
                wire += buf.len() as u64;
                tx.commit();
                sent += 1;
            }
        };
        match fec_enc {
            Some(enc) => {
                // The group that takes a sparse flow's packet (a ping, a
                // keystroke) gets strict parity: see `protect_group`.
                let sparse = sparse.as_slice();
                kcp.flush(now, &mut |d: &[u8]| {
                    if !sparse.is_empty() && kcpvpn_kcp::carries_any_segment(d, sparse) {
                        enc.protect_group();
                    }
                    enc.encode(d, &mut seal)
                })
            }
            None => kcp.flush(now, &mut seal),
        }
        if sent == 0 {
            return false;
        }
        *last_send = now;
        stats.datagrams_out += sent;
        stats.wire_bytes_out += wire;
        let recent = self.count_flow(now, sent);
        let sparse_left = self.sparse.remove_sent(self.kcp.snd_nxt());
        if sparse_left
            && self.cfg.rapid_fec
            && self.fec_enc.as_ref().is_some_and(|e| e.has_partial())
        {
            self.rapid_deadline = Some(now.wrapping_add(RAPID_SPARSE_DELAY_MS));
        }
        if self.cfg.rapid_fec && self.rapid_deadline.is_none() {
            if let Some(enc) = &self.fec_enc {
                if enc.has_partial() {
                    // Traffic that sent fewer datagrams than a group holds in
                    // the last interval or two won't fill the group soon: its
                    // parity leaves at once, so one loss costs next to nothing
                    // instead of a retransmission. That includes a reply that
                    // follows, by a ms, the ACK of its request sent alone; with
                    // "nothing else sent for an interval" as the test, that
                    // reply's parity waited an interval (+30 ms on 2 of 150
                    // pings at 10% loss). A steady flow fills groups before the
                    // interval is up.
                    let sparse = recent < enc.data_shards() as u64;
                    let delay = if sparse {
                        RAPID_SPARSE_DELAY_MS
                    } else {
                        self.cfg.kcp.interval.max(1)
                    };
                    self.rapid_deadline = Some(now.wrapping_add(delay));
                }
            }
        }
        true
    }

    /// Counts `sent` datagrams into the per-interval buckets; returns those
    /// of the previous bucket and this one, `sent` included.
    fn count_flow(&mut self, now: u32, sent: u64) -> u64 {
        let count = self.flow.at(now, self.cfg.kcp.interval.max(1), 0);
        *count += sent;
        *count + self.flow.prev.unwrap_or(0)
    }

    /// Runs timers: KCP retransmissions and window probes, rapid-FEC parity,
    /// keepalive, liveness. Call at `next_timeout` (or earlier).
    pub fn poll(&mut self, now: u32, tx: &mut dyn Transmit) {
        if self.closed.is_some() {
            return;
        }
        if self.awaiting_peer {
            self.check_idle(now);
            return;
        }
        self.answer_probes(tx);
        self.keys.poll(now);
        self.send_rekey(now, tx);
        let acks_due = self.ack_deadline.is_some_and(|d| !before(now, d));
        if acks_due || after(now, self.kcp.check(now)) {
            self.flush(now, tx);
        }
        self.send_feedback(now, tx);
        if let Some(deadline) = self.rapid_deadline {
            if after(now, deadline) {
                self.rapid_deadline = None;
                let Session {
                    fec_enc,
                    keys,
                    stats,
                    ..
                } = self;
                if let (Some(enc), Some(sealer)) = (fec_enc, keys.sealer()) {
                    if enc.has_partial() {
                        stats.rapid_fec_flushes += 1;
                        enc.flush_partial(&mut |shard: &[u8]| {
                            let buf = tx.buf();
                            if sealer.seal_into(MSG_DATA, shard, buf).is_ok() {
                                stats.datagrams_out += 1;
                                stats.wire_bytes_out += buf.len() as u64;
                                tx.commit();
                            }
                        });
                    }
                }
            }
        }
        if self.cfg.keepalive_ms > 0
            && after(now, self.last_send.wrapping_add(self.cfg.keepalive_ms))
        {
            self.send_keepalive(now, tx);
        }
        self.probe_path(now, tx);
        self.trim_when_idle(now);
        self.check_idle(now);
    }

    fn trim_when_idle(&mut self, now: u32) {
        if self.active {
            self.active = false;
            self.quiet_since = now;
            self.trimmed = false;
        } else if !self.trimmed
            && after(now, self.quiet_since.wrapping_add(IDLE_TRIM_MS))
            && self.kcp.wait_snd() == 0
        {
            self.trimmed = true;
            self.kcp.trim();
            if let Some(s) = &mut self.sched {
                s.trim();
            }
            self.reorder.trim();
            self.links.clear();
            self.tx_msg = Vec::new();
            if let Some(d) = &mut self.fec_dec {
                d.trim();
            }
            let small = self.cfg.max_packet.max(2048);
            if self.msg_buf.len() > small {
                self.msg_buf = vec![0u8; small];
            }
        }
    }

    /// The peer is gone only after a time without any authenticated
    /// datagram from it (keepalives included), never after a count of
    /// retransmissions: an outage shorter than the timeout keeps the session.
    fn check_idle(&mut self, now: u32) {
        let unconfirmed = self.awaiting_peer && after(now, self.await_deadline);
        let silent = self.cfg.idle_timeout_ms > 0
            && after(now, self.last_recv.wrapping_add(self.cfg.idle_timeout_ms));
        if unconfirmed || silent {
            self.closed = Some(Closed::IdleTimeout);
        }
    }

    fn send_keepalive(&mut self, now: u32, tx: &mut dyn Transmit) {
        let buf = tx.buf();
        if self
            .keys
            .sealer()
            .is_some_and(|s| s.seal_into(MSG_DATA, &[], buf).is_ok())
        {
            self.stats.keepalives_out += 1;
            self.stats.datagrams_out += 1;
            self.stats.wire_bytes_out += buf.len() as u64;
            tx.commit();
        }
        self.last_send = now;
    }

    /// Sends the key update message that is due, if any.
    fn send_rekey(&mut self, now: u32, tx: &mut dyn Transmit) {
        if self.keys.take_confirm() {
            self.send_keepalive(now, tx);
        }
        let Some(m) = self.keys.take_outbox() else {
            return;
        };
        let buf = tx.buf();
        if self
            .keys
            .sealer()
            .is_some_and(|s| s.seal_into(MSG_REKEY, &m.encode(), buf).is_ok())
        {
            self.keys.stats.rekey_out += 1;
            self.stats.datagrams_out += 1;
            self.stats.wire_bytes_out += buf.len() as u64;
            tx.commit();
        }
    }

    /// This side starts key updates (the initiator), every
    /// `rekey_interval_ms` of the configuration.
    pub fn start_rekeying(&mut self, now: u32) {
        self.keys.initiate(self.cfg.rekey_interval_ms, now);
    }

    /// Key epochs and updates (section 5.1).
    pub fn key_stats(&self) -> &KeyStats {
        &self.keys.stats
    }

    /// Sends the next path-MTU probe when one is due.
    fn probe_path(&mut self, now: u32, tx: &mut dyn Transmit) {
        let Some(probe) = self.pmtu.due(now) else {
            return;
        };
        let overhead = self.cfg.cipher.overhead();
        let mut plain = [0u8; pmtu::MAX_PROBE];
        let Some(n) = pmtu::encode_probe(&probe, overhead, &mut plain) else {
            return;
        };
        let buf = tx.buf();
        if self
            .keys
            .sealer()
            .is_some_and(|s| s.seal_into(MSG_PROBE, &plain[..n], buf).is_ok())
        {
            self.stats.probes_out += 1;
            self.stats.datagrams_out += 1;
            self.stats.wire_bytes_out += buf.len() as u64;
            tx.commit();
        }
    }

    fn on_probe(&mut self, p: pmtu::Probe, wire_len: usize, now: u32) {
        match p.kind {
            pmtu::Kind::Probe => self.pmtu.answer(p.id, wire_len),
            pmtu::Kind::Ack => {
                if self.pmtu.acked(p.id, p.size as usize, now) {
                    self.stats.probes_acked += 1;
                    self.stats.path_mtu = self.pmtu.confirmed() as u64;
                }
            }
        }
    }

    /// Answers probes that arrived (small acknowledgements; they carry the
    /// size that got through). Called from `poll` and `flush`.
    fn answer_probes(&mut self, tx: &mut dyn Transmit) {
        while let Some((id, size)) = self.pmtu.take_answer() {
            let mut plain = [0u8; pmtu::ACK_LEN];
            pmtu::encode_ack(id, size, &mut plain);
            let buf = tx.buf();
            if self
                .keys
                .sealer()
                .is_some_and(|s| s.seal_into(MSG_PROBE, &plain, buf).is_ok())
            {
                self.stats.datagrams_out += 1;
                self.stats.wire_bytes_out += buf.len() as u64;
                tx.commit();
            }
        }
    }

    /// When `poll` must run next.
    pub fn next_timeout(&self, now: u32) -> u32 {
        if self.awaiting_peer {
            // Nothing leaves before the peer's first datagram; only the
            // wait's own deadline can end it.
            return self.await_deadline;
        }
        // An idle KCP has nothing for its interval tick: the session's own
        // timers (keepalive, idle timeout, reports) say when to look next,
        // so idle sessions cost nothing between keepalives.
        let mut t = if self.kcp.is_idle() {
            now.wrapping_add(IDLE_WAKE_MS)
        } else {
            self.kcp.check(now)
        };
        let mut earliest = |c: u32| {
            if (c.wrapping_sub(t) as i32) < 0 {
                t = c;
            }
        };
        if let Some(d) = self.rapid_deadline {
            earliest(d);
        }
        if let Some(d) = self.ack_deadline {
            earliest(d);
        }
        if let Some(d) = self.feedback_due {
            earliest(d);
        }
        if self.cfg.keepalive_ms > 0 {
            earliest(self.last_send.wrapping_add(self.cfg.keepalive_ms));
        }
        if self.cfg.idle_timeout_ms > 0 {
            earliest(self.last_recv.wrapping_add(self.cfg.idle_timeout_ms));
        }
        if !self.awaiting_peer {
            if let Some(p) = self.pmtu.next_at() {
                earliest(p);
            }
        }
        if let Some(k) = self.keys.next_timeout() {
            earliest(k);
        }
        t
    }

    /// An authenticated goodbye, so the peer releases the session at once.
    pub fn close(&mut self, tx: &mut dyn Transmit) {
        let buf = tx.buf();
        if self
            .keys
            .sealer()
            .is_some_and(|s| s.seal_into(MSG_CLOSE, &[], buf).is_ok())
        {
            tx.commit();
        }
    }

    /// Heap bytes the session's buffers hold (KCP, FEC, reassembly).
    pub fn heap_bytes(&self) -> usize {
        self.kcp.heap_bytes()
            + self.msg_buf.capacity()
            + self.fec_enc.as_ref().map_or(0, |e| e.heap_bytes())
            + self.fec_dec.as_ref().map_or(0, |d| d.heap_bytes())
            + self.sched.as_ref().map_or(0, |s| s.heap_bytes())
    }

    /// The scheduler's counters (None without flow queueing).
    pub fn scheduler_stats(&self) -> Option<crate::scheduler::SchedulerStats> {
        self.sched.as_ref().map(|s| s.stats)
    }

    /// Bytes waiting in the scheduler for KCP.
    pub fn queued_bytes(&self) -> usize {
        self.sched.as_ref().map_or(0, |s| s.bytes())
    }

    /// Messages that waited for an earlier one of their flow.
    pub fn flow_waits(&self) -> u64 {
        self.reorder.waited
    }

    pub fn kcp_stats(&self) -> kcpvpn_kcp::KcpStats {
        self.kcp.stats()
    }

    /// What our FEC encoder sent (None with FEC off).
    pub fn fec_encoder_stats(&self) -> Option<kcpvpn_fec::EncoderStats> {
        self.fec_enc.as_ref().map(|e| e.stats())
    }

    pub fn fec_recovered(&self) -> u64 {
        self.fec_dec
            .as_ref()
            .map(|d| d.stats().recovered)
            .unwrap_or(0)
    }
}
