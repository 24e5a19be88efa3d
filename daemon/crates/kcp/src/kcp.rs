//! The KCP state machine.
//!
//! Sender: one ring holds every segment from `snd_una` (oldest unacknowledged)
//! to `snd_end` (next sequence number to assign). `[snd_una, snd_nxt)` has
//! been sent at least once, `[snd_nxt, snd_end)` is the reference's
//! `snd_queue`. Sequence numbers are assigned when a message is queued; since
//! the reference assigns them in queue order when a segment enters the
//! window, the numbers on the wire are the same. Unacknowledged sent segments
//! are also linked in sn order (links are sequence numbers, so they survive
//! ring growth): an ACK unlinks in O(1), and fast-ACK counting and timeout
//! scans visit only unacknowledged segments.
//!
//! Receiver: one ring indexed by sn covers the reference's `rcv_queue`
//! (`[que_start, rcv_nxt)`, in order, waiting for `recv`) and `rcv_buf`
//! (`[rcv_nxt, rcv_nxt + rcv_wnd)`, out of order). Both are at most `rcv_wnd`
//! long, so a capacity of `2 * rcv_wnd` never aliases.
use std::collections::VecDeque;

use crate::bbr::{Bbr, Sent};
use crate::wire::{Header, CMD_ACK, CMD_PUSH, CMD_WASK, CMD_WINS, OVERHEAD};
use crate::{KcpConfig, KcpError, KcpStats, MAX_FRAGMENTS};

// Reference constants (ikcp.c).
const RTO_NDL: u32 = 30;
const RTO_MIN: u32 = 100;
/// With bbr: RTO = srtt + max(this, 4 rttvar), at least `RTO_NDL` (instead
/// of the profile's `interval` and minimum).
const BBR_RTO_SLACK_MS: u32 = 10;
const RTO_DEF: u32 = 200;
const RTO_MAX: u32 = 60_000;
const WND_RCV: u32 = 128;
const THRESH_INIT: u32 = 2;
const THRESH_MIN: u32 = 2;
const PROBE_INIT: u32 = 7_000;
const PROBE_LIMIT: u32 = 120_000;
const FASTACK_LIMIT: u32 = 5;
const ASK_SEND: u8 = 1;
const ASK_TELL: u8 = 2;
/// A segment's backed-off RTO stays within this many times the current RTO
/// (and [`RTO_MAX`]). The reference doubles it without bound: at 29% loss
/// each way an unlucky segment lost 10 times in a row waited 7 minutes for
/// its next try while everything behind it stalled. Eight times still
/// backs off from a congested path; `dead_link` ends a path that is gone.
const SEG_RTO_BACKOFF: u32 = 8;
/// ... and within this many ms unless the RTO itself is longer: after an
/// outage the path is retried at least once a second, so traffic resumes
/// within a second of the path returning instead of after a long backoff.
const SEG_RTO_CAP_MS: u32 = 1000;
/// Slots the send and receive rings start with (and go back to when idle).
const RING_START: usize = 16;
/// Bounds of the reordering window fast retransmission allows with bbr (ms).
const REORDER_MIN_MS: u32 = 2;
const REORDER_MAX_MS: u32 = 10;

#[inline]
fn tdiff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

#[derive(Clone, Copy, Default)]
struct SndSeg {
    len: u32,
    frg: u8,
    acked: bool,
    /// Queued in `fast_queue` (at most one live entry per segment).
    fast_pending: bool,
    xmit: u32,
    /// When it was last transmitted (the `ts` that copy carried).
    ts: u32,
    /// Counted in `unneeded_retransmits` already.
    unneeded: bool,
    resendts: u32,
    rto: u32,
    fastack: u32,
    /// Delivery state at the last transmission (for `bbr`).
    sent: Sent,
    prev: Option<u32>,
    next: Option<u32>,
}

/// Segments and their payloads; the payload of slot `i` is at `i * mss`.
struct SndRing {
    segs: Vec<SndSeg>,
    data: Vec<u8>,
    mask: u32,
    mss: usize,
}

impl SndRing {
    fn new(cap: usize, mss: usize) -> SndRing {
        debug_assert!(cap.is_power_of_two());
        SndRing {
            segs: vec![SndSeg::default(); cap],
            data: vec![0; cap * mss],
            mask: cap as u32 - 1,
            mss,
        }
    }

    #[inline]
    fn cap(&self) -> usize {
        self.segs.len()
    }

    #[inline]
    fn idx(&self, sn: u32) -> usize {
        (sn & self.mask) as usize
    }

    #[inline]
    fn seg(&mut self, sn: u32) -> &mut SndSeg {
        let i = self.idx(sn);
        &mut self.segs[i]
    }

    /// Doubles the capacity, keeping the live range `[from, to)`. Rare: the
    /// ring grows only when more is queued than ever before.
    fn grow(&mut self, from: u32, to: u32) {
        let mut bigger = SndRing::new(self.cap() * 2, self.mss);
        let mut sn = from;
        while sn != to {
            let (i, j) = (self.idx(sn), bigger.idx(sn));
            bigger.segs[j] = self.segs[i];
            let len = self.segs[i].len as usize;
            bigger.data[j * self.mss..j * self.mss + len]
                .copy_from_slice(&self.data[i * self.mss..i * self.mss + len]);
            sn = sn.wrapping_add(1);
        }
        *self = bigger;
    }
}

#[derive(Default)]
struct RcvSeg {
    present: bool,
    /// Unordered delivery: waiting in `early` / already handed out.
    early_queued: bool,
    early_done: bool,
    /// Which sequence number the slot holds (the ring reuses slots).
    sn: u32,
    frg: u8,
    /// Keeps its capacity across uses: no allocation once warm.
    data: Vec<u8>,
}

/// Packs segments into datagrams of at most `mtu` bytes.
struct Packer<'a> {
    buf: &'a mut Vec<u8>,
    mtu: usize,
    out: &'a mut dyn FnMut(&[u8]),
    datagrams: u64,
}

impl Packer<'_> {
    #[inline]
    fn room(&mut self, need: usize) {
        if self.buf.len() + need > self.mtu && !self.buf.is_empty() {
            (self.out)(self.buf);
            self.buf.clear();
            self.datagrams += 1;
        }
    }

    #[inline]
    fn push(&mut self, h: &Header, payload: &[u8]) {
        self.room(OVERHEAD + payload.len());
        h.encode(self.buf);
        self.buf.extend_from_slice(payload);
    }

    fn finish(&mut self) {
        if !self.buf.is_empty() {
            (self.out)(self.buf);
            self.buf.clear();
            self.datagrams += 1;
        }
    }
}

/// One KCP conversation (message mode). See the crate documentation.
pub struct Kcp {
    conv: u32,
    mtu: usize,
    mss: usize,
    nodelay: bool,
    interval: u32,
    fastresend: u32,
    nc: bool,
    snd_wnd: u32,
    rcv_wnd: u32,
    ack_nodelay: bool,
    dead_link: u32,

    // Sender.
    snd_una: u32,
    snd_nxt: u32,
    snd_end: u32,
    ring: SndRing,
    head: Option<u32>,
    tail: Option<u32>,
    /// Sent and unacknowledged (the length of the linked list).
    inflight: u32,
    fast_queue: VecDeque<u32>,
    /// A lower bound of the earliest `resendts` in the list (exact after a
    /// scan; ACKs may leave it early, which costs one extra scan).
    resend_lb: u32,
    rmt_wnd: u32,
    cwnd: u32,
    ssthresh: u32,
    incr: u64,
    srtt: i64,
    rttval: i64,
    rx_rto: u32,
    minrto: u32,
    probe: u8,
    probe_wait: u32,
    ts_probe: u32,
    updated: bool,
    ts_flush: u32,
    dead: bool,
    /// Model-based congestion control and pacing (`KcpConfig::bbr`).
    cc: Option<Bbr>,
    /// The caller holds more data for this conversation than it has queued
    /// (see `set_backlog_upstream`).
    backlog_upstream: bool,
    /// What a segment costs on the path beyond itself (see `set_path_cost`).
    path_extra: usize,
    path_factor: f64,

    // Receiver.
    rcv_nxt: u32,
    que_start: u32,
    rbuf: Vec<RcvSeg>,
    rmask: u32,
    nrcv_buf: u32,
    /// `KcpConfig::unordered`: whole messages that arrived beyond a gap,
    /// handed out before the gap is filled.
    unordered: bool,
    early: VecDeque<u32>,
    acklist: Vec<(u32, u32)>,

    obuf: Vec<u8>,
    stats: KcpStats,
}

impl Kcp {
    /// A conversation with id `conv` (both ends must use the same). Values out
    /// of range are normalized (see [`KcpConfig::normalized`]); use
    /// [`Kcp::try_new`] to reject them instead.
    pub fn new(conv: u32, cfg: KcpConfig) -> Kcp {
        let c = cfg.normalized();
        let mss = c.mtu - OVERHEAD;
        let rcv_wnd = c.rcv_wnd as u32;
        // Grows as segments arrive further ahead (up to the window), and
        // goes back to this when idle (`trim`): an idle conversation costs
        // little whatever its window.
        let rcap = RING_START;
        let mut rbuf = Vec::with_capacity(rcap);
        rbuf.resize_with(rcap, RcvSeg::default);
        Kcp {
            conv,
            mtu: c.mtu,
            mss,
            nodelay: c.nodelay,
            interval: c.interval,
            fastresend: c.resend,
            nc: c.nc,
            snd_wnd: c.snd_wnd as u32,
            rcv_wnd,
            ack_nodelay: c.ack_nodelay,
            dead_link: c.dead_link,
            snd_una: 0,
            snd_nxt: 0,
            snd_end: 0,
            ring: SndRing::new(RING_START, mss),
            head: None,
            tail: None,
            inflight: 0,
            fast_queue: VecDeque::with_capacity(64),
            resend_lb: 0,
            rmt_wnd: WND_RCV,
            // The reference starts at 0 and sends nothing on its first flush;
            // starting at 1 sends the first segment at once.
            cwnd: 1,
            ssthresh: THRESH_INIT,
            incr: mss as u64,
            srtt: 0,
            rttval: 0,
            rx_rto: RTO_DEF,
            // With bbr, nodelay's floor whatever the profile: see `update_rtt`.
            minrto: if c.nodelay || c.bbr { RTO_NDL } else { RTO_MIN },
            probe: 0,
            probe_wait: 0,
            ts_probe: 0,
            updated: false,
            ts_flush: 0,
            dead: false,
            cc: c.bbr.then(|| Bbr::new(c.mtu)),
            backlog_upstream: false,
            path_extra: 0,
            path_factor: 1.0,
            rcv_nxt: 0,
            que_start: 0,
            rbuf,
            rmask: rcap as u32 - 1,
            nrcv_buf: 0,
            unordered: c.unordered,
            early: VecDeque::new(),
            acklist: Vec::with_capacity(256),
            obuf: Vec::with_capacity(c.mtu),
            stats: KcpStats::default(),
        }
    }

    /// Like [`Kcp::new`] but refuses an invalid configuration.
    pub fn try_new(conv: u32, cfg: KcpConfig) -> Result<Kcp, KcpError> {
        cfg.validate()?;
        Ok(Kcp::new(conv, cfg))
    }

    pub fn conv(&self) -> u32 {
        self.conv
    }

    /// The conversation id of a datagram (None if shorter than one header).
    pub fn conv_of(datagram: &[u8]) -> Option<u32> {
        Header::decode(datagram).map(|h| h.conv)
    }

    /// Payload bytes per segment (`mtu - 24`).
    pub fn mss(&self) -> usize {
        self.mss
    }

    /// The largest message `send` accepts.
    pub fn max_message(&self) -> usize {
        self.max_fragments() * self.mss
    }

    fn max_fragments(&self) -> usize {
        MAX_FRAGMENTS.min(self.rcv_wnd as usize)
    }

    /// Segments `send` cuts a message of `len` bytes into.
    pub fn segments_for(&self, len: usize) -> usize {
        len.div_ceil(self.mss).max(1)
    }

    /// Segments queued and never sent: non-zero when the windows or pacing,
    /// not the application, limit the rate.
    pub fn queued(&self) -> u32 {
        self.snd_end.wrapping_sub(self.snd_nxt)
    }

    /// Tells the path model whether the caller holds more data than it has
    /// queued here (a scheduler that feeds KCP a few ms at a time). Running
    /// out of queued segments is then not the application limiting the rate:
    /// pacing stays on. Otherwise each flush that drained the short queue
    /// would switch pacing off for a round trip, and the next round's data
    /// would reach the bottleneck as one burst.
    pub fn set_backlog_upstream(&mut self, more: bool) {
        self.backlog_upstream = more;
    }

    /// With `bbr`: the bottleneck rate estimate in bytes per ms (0 before a
    /// sample, or without `bbr`).
    pub fn bandwidth(&self) -> f64 {
        self.cc.as_ref().map_or(0.0, |c| c.bandwidth())
    }

    pub fn wait_snd(&self) -> usize {
        self.inflight as usize + self.snd_end.wrapping_sub(self.snd_nxt) as usize
    }

    /// With `bbr`: each segment costs `extra` more bytes on the path (outer
    /// headers) and the total is multiplied by `factor` (FEC parity: 1 +
    /// parity / data shards). Pacing and the in-flight bound then count
    /// what the bottleneck carries, so adding parity slows the segments
    /// instead of overflowing the path.
    pub fn set_path_cost(&mut self, extra: usize, factor: f64) {
        self.path_extra = extra;
        self.path_factor = if factor.is_finite() {
            factor.clamp(1.0, 256.0)
        } else {
            1.0
        };
        let full = (self.mtu + extra) as f64 * self.path_factor;
        if let Some(cc) = &mut self.cc {
            cc.set_seg_bytes(full as usize);
        }
    }

    /// With `bbr`: the path's loss rate (0..1), which bounds how far
    /// pacing may be trimmed below the rate estimate (`Bbr::set_path_loss`).
    pub fn set_path_loss(&mut self, loss: f64) {
        if let Some(cc) = &mut self.cc {
            cc.set_path_loss(loss);
        }
    }

    /// True once a segment has been transmitted `dead_link` times.
    /// The longest a segment's backed-off RTO may grow.
    fn backoff_cap(&self) -> u32 {
        self.rx_rto
            .saturating_mul(SEG_RTO_BACKOFF)
            .min(self.rx_rto.max(SEG_RTO_CAP_MS))
            .min(RTO_MAX)
    }

    pub fn is_dead(&self) -> bool {
        self.dead
    }

    pub fn stats(&self) -> KcpStats {
        let mut s = self.stats.clone();
        s.srtt = self.srtt.clamp(0, u32::MAX as i64) as u32;
        s.rttvar = self.rttval.clamp(0, u32::MAX as i64) as u32;
        s.rto = self.rx_rto;
        s.cwnd = self.cwnd;
        s.ssthresh = self.ssthresh;
        if let Some(cc) = &self.cc {
            s.cwnd = cc.cwnd_segments();
            s.ssthresh = 0;
            s.bandwidth_kbit = (cc.bandwidth() * 8.0) as u64;
            s.min_rtt = cc.min_rtt().unwrap_or(0);
            s.cc_restarts = cc.restarts();
            s.cc_queue_corrections = cc.queue_corrections();
            s.cc_queue_drains = cc.queue_drains();
            s.cc_trim_pct = (cc.trim() * 100.0).round() as u64;
        }
        s.rmt_wnd = self.rmt_wnd;
        s.snd_queue = self.snd_end.wrapping_sub(self.snd_nxt);
        s.snd_inflight = self.inflight;
        s.rcv_queue = self.nrcv_que();
        s.rcv_buf = self.nrcv_buf;
        s
    }

    // ---- sending -------------------------------------------------------

    /// Queues one message (fragmented into `ceil(len / mss)` segments, at
    /// least one). It is delivered whole, in order, by the peer's `recv`.
    pub fn send(&mut self, msg: &[u8]) -> Result<(), KcpError> {
        let mss = self.mss;
        let count = self.segments_for(msg.len());
        if count > self.max_fragments() {
            return Err(KcpError::MessageTooLarge {
                size: msg.len(),
                max: self.max_message(),
            });
        }
        while self.snd_end.wrapping_sub(self.snd_una) as usize + count > self.ring.cap() {
            self.ring.grow(self.snd_una, self.snd_end);
        }
        for (i, chunk) in (0..count).map(|i| {
            (
                i,
                &msg[(i * mss).min(msg.len())..((i + 1) * mss).min(msg.len())],
            )
        }) {
            let sn = self.snd_end;
            let at = self.ring.idx(sn);
            self.ring.segs[at] = SndSeg {
                len: chunk.len() as u32,
                frg: (count - 1 - i) as u8,
                ..SndSeg::default()
            };
            self.ring.data[at * mss..at * mss + chunk.len()].copy_from_slice(chunk);
            self.snd_end = sn.wrapping_add(1);
        }
        self.stats.messages_sent += 1;
        Ok(())
    }

    fn unlink(&mut self, sn: u32) {
        let (prev, next) = {
            let s = self.ring.seg(sn);
            (s.prev.take(), s.next.take())
        };
        match prev {
            Some(p) => self.ring.seg(p).next = next,
            None => self.head = next,
        }
        match next {
            Some(n) => self.ring.seg(n).prev = prev,
            None => self.tail = prev,
        }
        self.inflight -= 1;
    }

    fn link_tail(&mut self, sn: u32) {
        let tail = self.tail;
        {
            let s = self.ring.seg(sn);
            s.prev = tail;
            s.next = None;
        }
        match tail {
            Some(t) => self.ring.seg(t).next = Some(sn),
            None => self.head = Some(sn),
        }
        self.tail = Some(sn);
        self.inflight += 1;
    }

    #[inline]
    fn in_flight(&self, sn: u32) -> bool {
        tdiff(sn, self.snd_una) >= 0 && tdiff(sn, self.snd_nxt) < 0
    }

    /// Marks one in-flight segment acknowledged; `rtt` when this ACK
    /// measured one.
    fn ack_one(&mut self, sn: u32, now: u32, rtt: Option<u32>) {
        let s = self.ring.seg(sn);
        if s.acked {
            return;
        }
        s.acked = true;
        let sent = s.sent;
        self.unlink(sn);
        if let Some(cc) = &mut self.cc {
            cc.on_ack(now, sent, rtt);
        }
    }

    /// An ACK that echoes an earlier copy's timestamp than the segment's
    /// last transmission: the peer had the segment (or rebuilt it with FEC)
    /// before that retransmission reached it, so the retransmission was not
    /// needed (the timestamp test of RFC 3522, on KCP's echoed `ts`). Counts
    /// timeouts that fired too early as well as fast retransmissions of
    /// segments that were only reordered. Copies sent in the same ms are
    /// indistinguishable and not counted.
    fn note_unneeded_retransmit(&mut self, sn: u32, ts: u32) {
        // The ACK often arrives after the peer's `una` already released the
        // segment; its slot keeps the last state until a segment one ring
        // length later reuses it.
        let age = tdiff(self.snd_nxt, sn);
        if age <= 0 || age as usize > self.ring.cap() {
            return;
        }
        let s = self.ring.seg(sn);
        if s.xmit > 1 && !s.unneeded && tdiff(ts, s.ts) < 0 {
            s.unneeded = true;
            self.stats.unneeded_retransmits += 1;
        }
    }

    /// Everything before `una` is acknowledged; then slide `snd_una` past
    /// acknowledged segments. Each segment is passed once: amortized O(1).
    fn parse_una(&mut self, una: u32, now: u32) {
        let end = if tdiff(una, self.snd_nxt) > 0 {
            self.snd_nxt
        } else {
            una
        };
        while tdiff(end, self.snd_una) > 0 {
            let sn = self.snd_una;
            self.ack_one(sn, now, None);
            self.snd_una = sn.wrapping_add(1);
        }
        self.shrink();
    }

    fn shrink(&mut self) {
        while self.snd_una != self.snd_nxt && self.ring.seg(self.snd_una).acked {
            self.snd_una = self.snd_una.wrapping_add(1);
        }
    }

    fn update_rtt(&mut self, rtt: i64) {
        if self.srtt == 0 {
            self.srtt = rtt;
            self.rttval = rtt / 2;
        } else {
            let delta = (rtt - self.srtt).abs();
            self.rttval = (3 * self.rttval + delta) / 4;
            self.srtt = ((7 * self.srtt + rtt) / 8).max(1);
        }
        // With bbr the RTO follows the path: the tunnel flushes ACKs as they
        // come (not on the interval tick the profile's slack allows for), and
        // pacing bounds what a spurious timeout can cost. The profile's 100 ms
        // minimum and doubling made every loss FEC could not rebuild at the
        // end of a burst stall its flow 130-250 ms (a TCP inside through 5%
        // loss: 19 Mbit/s with no parity for bulk groups, 64 with this).
        let slack = if self.cc.is_some() {
            BBR_RTO_SLACK_MS
        } else {
            self.interval
        };
        let rto = self.srtt + (slack as i64).max(4 * self.rttval);
        self.rx_rto = rto.clamp(self.minrto as i64, RTO_MAX as i64) as u32;
    }

    /// The reference's fast-ACK count: every unacknowledged segment below the
    /// highest sn acknowledged by this datagram was skipped once. Visits only
    /// those segments (the holes), not the window.
    fn count_skips(&mut self, maxack: u32) {
        if self.fastresend == 0 || !self.in_flight(maxack) {
            return;
        }
        // With bbr, a skip counts only for segments sent a reordering window
        // before the one acknowledged: FEC rebuilds a lost datagram when the
        // rest of its group arrives, and an ACK lost on the way back comes
        // back the same way, both a little after later ACKs. Counting those
        // as losses resends (in one measurement) 15% of all segments for
        // nothing; time, unlike a count of ACKs, does not grow with the rate.
        let newest = self.ring.seg(maxack).sent.time;
        let reorder = self
            .cc
            .as_ref()
            .map(|cc| (cc.min_rtt().unwrap_or(0) / 8).clamp(REORDER_MIN_MS, REORDER_MAX_MS));
        let mut cur = self.head;
        while let Some(sn) = cur {
            if tdiff(sn, maxack) >= 0 {
                break;
            }
            let s = self.ring.seg(sn);
            cur = s.next;
            if let Some(w) = reorder {
                if tdiff(newest, s.sent.time) < w as i32 {
                    break; // sent later still: so are all that follow
                }
            }
            s.fastack += 1;
            if s.fastack >= self.fastresend && !s.fast_pending && s.xmit <= FASTACK_LIMIT {
                s.fast_pending = true;
                self.fast_queue.push_back(sn);
            }
        }
    }

    // ---- receiving -----------------------------------------------------

    #[inline]
    fn nrcv_que(&self) -> u32 {
        self.rcv_nxt.wrapping_sub(self.que_start)
    }

    /// Makes the receive ring hold `sn` (it holds `[que_start, que_start + cap)`).
    fn rcv_room(&mut self, sn: u32) {
        let need = sn.wrapping_sub(self.que_start) as usize + 1;
        let old = self.rbuf.len();
        if need <= old {
            return;
        }
        let cap = need.next_power_of_two();
        let mut bigger: Vec<RcvSeg> = Vec::with_capacity(cap);
        bigger.resize_with(cap, RcvSeg::default);
        let (old_mask, new_mask) = (self.rmask, cap as u32 - 1);
        for k in 0..old as u32 {
            let x = self.que_start.wrapping_add(k);
            bigger[(x & new_mask) as usize] =
                std::mem::take(&mut self.rbuf[(x & old_mask) as usize]);
        }
        self.rbuf = bigger;
        self.rmask = new_mask;
    }

    /// Heap bytes held by the buffers (for memory figures).
    pub fn heap_bytes(&self) -> usize {
        self.ring.segs.capacity() * std::mem::size_of::<SndSeg>()
            + self.ring.data.capacity()
            + self.rbuf.capacity() * std::mem::size_of::<RcvSeg>()
            + self.rbuf.iter().map(|s| s.data.capacity()).sum::<usize>()
            + self.acklist.capacity() * 8
            + self.obuf.capacity()
    }

    /// Gives back what a burst made the buffers grow to, when nothing is
    /// queued, in flight or waiting: a conversation idle after a bulk
    /// transfer keeps kilobytes, not megabytes.
    pub fn trim(&mut self) {
        if self.snd_una == self.snd_end && self.ring.cap() > RING_START {
            self.ring = SndRing::new(RING_START, self.mss);
        }
        if self.nrcv_que() == 0 && self.nrcv_buf == 0 {
            if self.rbuf.len() > RING_START {
                let mut small = Vec::with_capacity(RING_START);
                small.resize_with(RING_START, RcvSeg::default);
                self.rbuf = small;
                self.rmask = RING_START as u32 - 1;
            } else {
                for s in &mut self.rbuf {
                    s.data = Vec::new();
                }
            }
            self.early.clear();
            self.early.shrink_to_fit();
        }
        self.acklist.shrink_to(256);
    }

    /// Whether segment `sn` is here. The ring holds the segments from
    /// `que_start` on, as many as its capacity; a slot reached from beyond
    /// that range holds another segment, so the sequence number must match.
    #[inline]
    fn has(&self, sn: u32) -> bool {
        let s = &self.rbuf[(sn & self.rmask) as usize];
        s.present && s.sn == sn
    }

    #[inline]
    fn rslot(&mut self, sn: u32) -> &mut RcvSeg {
        let i = (sn & self.rmask) as usize;
        &mut self.rbuf[i]
    }

    /// Moves in-order segments from the out-of-order part to the ready queue
    /// while the queue has room (the reference's rcv_buf → rcv_queue).
    fn advance_rcv(&mut self) {
        while self.nrcv_que() < self.rcv_wnd {
            let sn = self.rcv_nxt;
            if !self.has(sn) {
                break;
            }
            self.rcv_nxt = sn.wrapping_add(1);
            self.nrcv_buf -= 1;
        }
        self.skip_early_head();
    }

    /// Unordered delivery: segment `sn` just arrived beyond `rcv_nxt`. A
    /// one-segment message may go out at once if it certainly is one: its
    /// `frg` is 0 (the last fragment of a message has 0 too) and the segment
    /// before it ends a message (present, `frg` 0). So `sn` qualifies, and
    /// so may `sn + 1`, which waited for this segment to vouch for it. Only
    /// the segment right after a gap waits for the gap.
    fn find_early(&mut self, sn: u32) {
        for x in [sn, sn.wrapping_add(1)] {
            if tdiff(x, self.rcv_nxt) <= 0 || tdiff(x, self.rcv_nxt.wrapping_add(self.rcv_wnd)) >= 0
            {
                continue; // in order (ordinary delivery) or beyond the window
            }
            let prev = x.wrapping_sub(1);
            let prev_ends = self.has(prev) && self.rslot(prev).frg == 0;
            let here = self.has(x);
            let s = self.rslot(x);
            if here && s.frg == 0 && !s.early_queued && !s.early_done && prev_ends {
                s.early_queued = true;
                self.early.push_back(x);
            }
        }
    }

    /// Drops messages already handed out early from the head of the ready queue.
    fn skip_early_head(&mut self) {
        while self.que_start != self.rcv_nxt {
            let sn = self.que_start;
            let s = self.rslot(sn);
            if !s.early_done {
                break;
            }
            s.present = false;
            s.early_done = false;
            self.que_start = sn.wrapping_add(1);
        }
    }

    fn wnd_unused(&self) -> u16 {
        self.rcv_wnd.saturating_sub(self.nrcv_que()) as u16
    }

    /// Takes one datagram from the peer (one or more segments). Segments before
    /// a bad one take effect; the bad one and the rest of the datagram do not.
    pub fn input(&mut self, data: &[u8], now: u32) -> Result<(), KcpError> {
        if data.len() < OVERHEAD {
            self.stats.input_errors += 1;
            return Err(KcpError::Truncated {
                at: 0,
                need: OVERHEAD,
                len: data.len(),
            });
        }
        let prev_una = self.snd_una;
        let mut maxack: Option<u32> = None;
        let mut at = 0usize;
        let mut result = Ok(());
        while at < data.len() {
            let Some(h) = Header::decode(&data[at..]) else {
                result = Err(KcpError::Truncated {
                    at,
                    need: OVERHEAD,
                    len: data.len(),
                });
                break;
            };
            if h.conv != self.conv {
                result = Err(KcpError::ConvMismatch {
                    expected: self.conv,
                    got: h.conv,
                });
                break;
            }
            let body = at + OVERHEAD;
            let len = h.len as usize;
            if len > data.len() - body {
                result = Err(KcpError::Truncated {
                    at,
                    need: OVERHEAD.saturating_add(len),
                    len: data.len(),
                });
                break;
            }
            if !matches!(h.cmd, CMD_PUSH | CMD_ACK | CMD_WASK | CMD_WINS) {
                result = Err(KcpError::BadCommand { cmd: h.cmd, at });
                break;
            }
            if h.cmd == CMD_PUSH && h.frg as u32 >= self.rcv_wnd {
                // Could never be reassembled: refuse rather than stall the queue.
                result = Err(KcpError::BadFragment {
                    fragments: h.frg as usize + 1,
                    rcv_wnd: self.rcv_wnd,
                });
                break;
            }
            let payload = &data[body..body + len];
            at = body + len;

            self.rmt_wnd = h.wnd as u32;
            self.parse_una(h.una, now);
            match h.cmd {
                CMD_ACK => {
                    self.stats.acks_recv += 1;
                    self.note_unneeded_retransmit(h.sn, h.ts);
                    let rtt = tdiff(now, h.ts);
                    if rtt >= 0 {
                        self.update_rtt(rtt as i64);
                    }
                    if self.in_flight(h.sn) {
                        self.ack_one(h.sn, now, u32::try_from(rtt).ok());
                        self.shrink();
                    } else if let (Some(cc), Ok(r)) = (&mut self.cc, u32::try_from(rtt)) {
                        // Acknowledged by this datagram's `una` a moment ago.
                        cc.on_rtt(now, r);
                    }
                    maxack = match maxack {
                        Some(m) if tdiff(h.sn, m) <= 0 => Some(m),
                        _ => Some(h.sn),
                    };
                }
                CMD_PUSH => {
                    self.stats.segments_recv += 1;
                    if tdiff(h.sn, self.rcv_nxt.wrapping_add(self.rcv_wnd)) < 0 {
                        self.acklist.push((h.sn, h.ts));
                        if tdiff(h.sn, self.rcv_nxt) >= 0 {
                            self.rcv_room(h.sn);
                            let slot = self.rslot(h.sn);
                            if slot.present {
                                self.stats.dup_segments += 1;
                            } else {
                                slot.present = true;
                                slot.early_queued = false;
                                slot.early_done = false;
                                slot.sn = h.sn;
                                slot.frg = h.frg;
                                slot.data.clear();
                                slot.data.extend_from_slice(payload);
                                self.nrcv_buf += 1;
                                self.advance_rcv();
                                if self.unordered {
                                    self.find_early(h.sn);
                                }
                            }
                        } else {
                            self.stats.dup_segments += 1;
                        }
                    } else {
                        self.stats.out_of_window += 1;
                    }
                }
                CMD_WASK => {
                    self.stats.probes_recv += 1;
                    self.probe |= ASK_TELL;
                }
                _ => {} // WINS: the window was taken from the header above.
            }
        }
        if at > 0 {
            self.stats.datagrams_in += 1;
        }
        if let Some(m) = maxack {
            self.count_skips(m);
        }
        if tdiff(self.snd_una, prev_una) > 0 {
            self.grow_cwnd();
        }
        if result.is_err() {
            self.stats.input_errors += 1;
        }
        result
    }

    fn grow_cwnd(&mut self) {
        if self.cwnd >= self.rmt_wnd {
            return;
        }
        let mss = self.mss as u64;
        if self.cwnd < self.ssthresh {
            self.cwnd += 1;
            self.incr += mss;
        } else {
            self.incr = self.incr.max(mss);
            self.incr += mss * mss / self.incr + mss / 16;
            if (self.cwnd as u64 + 1) * mss <= self.incr {
                self.cwnd = self.incr.div_ceil(mss).min(u32::MAX as u64) as u32;
            }
        }
        if self.cwnd > self.rmt_wnd {
            self.cwnd = self.rmt_wnd;
            self.incr = self.rmt_wnd as u64 * mss;
        }
    }

    /// The first entry of `early` still waiting (entries go stale when the
    /// gap filled and ordinary delivery took the message first).
    fn early_head(&self) -> Option<u32> {
        self.early.iter().copied().find(|&x| {
            let s = &self.rbuf[(x & self.rmask) as usize];
            s.sn == x && s.early_queued
        })
    }

    /// Size of the next whole message, if one is ready: in order first,
    /// then (unordered) one that arrived beyond a gap.
    pub fn peek_size(&self) -> Option<usize> {
        self.peek_ordered().or_else(|| {
            self.early_head()
                .map(|x| self.rbuf[(x & self.rmask) as usize].data.len())
        })
    }

    fn peek_ordered(&self) -> Option<usize> {
        let nq = self.nrcv_que();
        if nq == 0 {
            return None;
        }
        let slot = |sn: u32| &self.rbuf[(sn & self.rmask) as usize];
        let first = slot(self.que_start);
        let frags = first.frg as u32 + 1;
        if frags == 1 {
            return Some(first.data.len());
        }
        if nq < frags {
            return None;
        }
        Some(
            (0..frags)
                .map(|i| slot(self.que_start.wrapping_add(i)).data.len())
                .sum(),
        )
    }

    /// Copies the next whole message into `buf` and returns its length.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize, KcpError> {
        self.recv_sn(buf).map(|(n, _)| n)
    }

    /// The sequence number the next message sent gets (its first segment's).
    pub fn next_sn(&self) -> u32 {
        self.snd_end
    }

    /// Segments before this have been sent at least once.
    pub fn snd_nxt(&self) -> u32 {
        self.snd_nxt
    }

    /// The oldest segment not yet acknowledged (everything before it is).
    pub fn snd_una(&self) -> u32 {
        self.snd_una
    }

    /// Every message whose first segment is before this has been handed out.
    pub fn rcv_delivered_before(&self) -> u32 {
        self.que_start
    }

    /// As `recv`, with the sequence number of the message's first segment.
    pub fn recv_sn(&mut self, buf: &mut [u8]) -> Result<(usize, u32), KcpError> {
        let size = self.peek_size().ok_or(KcpError::NoMessage)?;
        if buf.len() < size {
            return Err(KcpError::BufferTooSmall {
                need: size,
                have: buf.len(),
            });
        }
        if self.peek_ordered().is_none() {
            let x = self.early_head().ok_or(KcpError::NoMessage)?;
            while self.early.pop_front() != Some(x) {} // drops stale entries
            let s = self.rslot(x);
            buf[..s.data.len()].copy_from_slice(&s.data);
            s.data.clear();
            s.early_queued = false;
            s.early_done = true;
            self.skip_early_head();
            self.stats.messages_recv += 1;
            self.stats.early_deliveries += 1;
            return Ok((size, x));
        }
        let recover = self.nrcv_que() >= self.rcv_wnd;
        // A message is the first segment's frg + 1 segments (for a well-formed
        // peer their frg count down to 0, as the reference expects).
        let first_sn = self.que_start;
        let frags = self.rslot(self.que_start).frg as u32 + 1;
        let mut at = 0;
        for _ in 0..frags {
            let sn = self.que_start;
            let s = self.rslot(sn);
            buf[at..at + s.data.len()].copy_from_slice(&s.data);
            at += s.data.len();
            s.present = false;
            s.early_queued = false; // its entry in `early`, if any, is stale
            s.data.clear();
            self.que_start = sn.wrapping_add(1);
        }
        self.advance_rcv(); // also skips what was handed out early
        if recover && self.nrcv_que() < self.rcv_wnd {
            // The peer saw a zero window: tell it at once that it reopened.
            self.probe |= ASK_TELL;
        }
        self.stats.messages_recv += 1;
        Ok((size, first_sn))
    }

    /// The next whole message in a new `Vec`, if one is ready.
    pub fn recv_vec(&mut self) -> Option<Vec<u8>> {
        let mut v = vec![0; self.peek_size()?];
        let n = self.recv(&mut v).ok()?;
        v.truncate(n);
        Some(v)
    }

    // ---- output --------------------------------------------------------

    /// Emits everything due now: ACKs, window probes, fast and timeout
    /// retransmissions, and new segments the windows allow. May be called at
    /// any time (after `send`, after `input`), not only on the interval tick.
    pub fn flush(&mut self, now: u32, out: &mut dyn FnMut(&[u8])) {
        if !self.updated {
            self.updated = true;
            self.ts_flush = now;
        }
        if tdiff(now, self.ts_flush) >= 0 {
            // This flush does the tick's work: the next tick is an interval away.
            self.ts_flush = now.wrapping_add(self.interval);
        }
        self.flush_inner(now, out, false);
    }

    /// ACKs waiting for the next flush.
    pub fn pending_acks(&self) -> usize {
        self.acklist.len()
    }

    /// True when nothing waits to be sent, acknowledged, probed or
    /// reassembled: the interval tick would do nothing, so a caller with
    /// many idle conversations need not wake each one every interval.
    /// `send` or `input` ends it.
    pub fn is_idle(&self) -> bool {
        self.updated
            && self.snd_una == self.snd_end
            && self.acklist.is_empty()
            && self.probe == 0
            && self.nrcv_buf == 0
            && self.rmt_wnd != 0
    }

    /// True when a flush now would send nothing but pending ACKs: no tick or
    /// timer due, no window probe and no new segment queued. Lets a caller
    /// batch ACKs. Segments held beyond a gap do not stop it: on a lossy
    /// link a gap is open nearly all the time, and answering each segment
    /// at once sent one datagram per segment (5% loss, 100 Mbit/s: 100k
    /// ACK datagrams per 92k segments, 30k when batched), every lost one
    /// an ACK missing and its segment resent for nothing. The peer's fast
    /// retransmission loses at most the caller's batching delay.
    pub fn only_acks_due(&self, now: u32) -> bool {
        self.updated
            && tdiff(now, self.ts_flush) < 0
            && !self.timer_due(now)
            && self.probe == 0
            && self.rmt_wnd != 0
            && self.snd_nxt == self.snd_end
    }

    /// Reference `ikcp_update`: flushes when the interval tick is due. Also
    /// flushes when a retransmission is due, and sends pending ACKs at once
    /// with `ack_nodelay`, so that `check` and `update` agree.
    pub fn update(&mut self, now: u32, out: &mut dyn FnMut(&[u8])) {
        if !self.updated {
            self.updated = true;
            self.ts_flush = now;
        }
        let mut slap = tdiff(now, self.ts_flush);
        if !(-10_000..10_000).contains(&slap) {
            self.ts_flush = now;
            slap = 0;
        }
        if slap >= 0 {
            self.ts_flush = self.ts_flush.wrapping_add(self.interval);
            if tdiff(now, self.ts_flush) >= 0 {
                self.ts_flush = now.wrapping_add(self.interval);
            }
            self.flush_inner(now, out, false);
        } else if self.timer_due(now) {
            self.flush_inner(now, out, false);
        } else if self.ack_nodelay && !self.acklist.is_empty() {
            self.flush_inner(now, out, true);
        }
    }

    /// With bbr: when queued segments held back only by pacing may leave.
    fn pacing_wakeup(&self, now: u32) -> Option<u32> {
        let cc = self.cc.as_ref()?;
        if self.snd_nxt == self.snd_end
            || !cc.window_open()
            || tdiff(
                self.snd_nxt,
                self.snd_una.wrapping_add(self.snd_wnd.min(self.rmt_wnd)),
            ) >= 0
        {
            return None; // nothing queued, or an ACK (not time) unblocks it
        }
        Some(cc.next_send_time(now).unwrap_or(now))
    }

    fn pacing_allows(&mut self, now: u32) -> bool {
        self.cc.as_mut().is_none_or(|cc| cc.pacing_allows(now))
    }

    /// Retransmissions are waiting (fast ones, or timeouts that expired).
    fn resends_due(&self, now: u32) -> bool {
        !self.fast_queue.is_empty() || (self.head.is_some() && tdiff(now, self.resend_lb) >= 0)
    }

    /// When pacing lets a waiting retransmission leave (`now` if it may).
    fn resend_time(&self, now: u32) -> u32 {
        self.cc
            .as_ref()
            .and_then(|cc| cc.next_send_time(now))
            .unwrap_or(now)
    }

    fn timer_due(&self, now: u32) -> bool {
        (self.resends_due(now) && tdiff(now, self.resend_time(now)) >= 0)
            || self.pacing_wakeup(now).is_some_and(|t| tdiff(now, t) >= 0)
    }

    /// When `update` must be called next (`now` if at once). Never later than
    /// one interval from `now`.
    pub fn check(&self, now: u32) -> u32 {
        if !self.updated || self.timer_due(now) || (self.ack_nodelay && !self.acklist.is_empty()) {
            return now;
        }
        let mut ts_flush = self.ts_flush;
        if !(-10_000..10_000).contains(&tdiff(now, ts_flush)) {
            ts_flush = now;
        }
        if tdiff(now, ts_flush) >= 0 {
            return now;
        }
        let mut minimal = tdiff(ts_flush, now) as u32;
        if self.resends_due(now) {
            // Held back by pacing (else `timer_due` said now).
            minimal = minimal.min(tdiff(self.resend_time(now), now).max(0) as u32);
        } else if self.head.is_some() {
            minimal = minimal.min(tdiff(self.resend_lb, now) as u32);
        }
        if let Some(at) = self.pacing_wakeup(now) {
            minimal = minimal.min(tdiff(at, now).max(0) as u32);
        }
        now.wrapping_add(minimal.min(self.interval))
    }

    fn note_resend(&mut self, ts: u32) {
        // Called after the segment is linked: a list of one means a fresh bound.
        if self.inflight == 1 || tdiff(ts, self.resend_lb) < 0 {
            self.resend_lb = ts;
        }
    }

    fn flush_inner(&mut self, now: u32, out: &mut dyn FnMut(&[u8]), acks_only: bool) {
        let mut buf = std::mem::take(&mut self.obuf);
        buf.clear();
        let mut p = Packer {
            buf: &mut buf,
            mtu: self.mtu,
            out,
            datagrams: 0,
        };
        let wnd = self.wnd_unused();
        let mut h = Header {
            conv: self.conv,
            cmd: CMD_ACK,
            frg: 0,
            wnd,
            ts: 0,
            sn: 0,
            una: self.rcv_nxt,
            len: 0,
        };
        for &(sn, ts) in &self.acklist {
            h.sn = sn;
            h.ts = ts;
            p.push(&h, &[]);
        }
        self.stats.acks_sent += self.acklist.len() as u64;
        self.acklist.clear();

        if !acks_only {
            self.flush_probes(now, &mut p, &mut h);
            self.flush_data(now, &mut p, wnd);
        }
        p.finish();
        self.stats.datagrams_out += p.datagrams;
        self.obuf = buf;
    }

    fn flush_probes(&mut self, now: u32, p: &mut Packer<'_>, h: &mut Header) {
        if self.rmt_wnd == 0 {
            if self.probe_wait == 0 {
                self.probe_wait = PROBE_INIT;
                self.ts_probe = now.wrapping_add(self.probe_wait);
            } else if tdiff(now, self.ts_probe) >= 0 {
                self.probe_wait = self.probe_wait.max(PROBE_INIT);
                self.probe_wait = (self.probe_wait + self.probe_wait / 2).min(PROBE_LIMIT);
                self.ts_probe = now.wrapping_add(self.probe_wait);
                self.probe |= ASK_SEND;
            }
        } else {
            self.ts_probe = 0;
            self.probe_wait = 0;
        }
        h.sn = 0;
        h.ts = 0;
        if self.probe & ASK_SEND != 0 {
            h.cmd = CMD_WASK;
            p.push(h, &[]);
            self.stats.probes_sent += 1;
        }
        if self.probe & ASK_TELL != 0 {
            h.cmd = CMD_WINS;
            p.push(h, &[]);
            self.stats.wins_sent += 1;
        }
        self.probe = 0;
    }

    /// Writes one PUSH segment (header stamped now) into the packer.
    fn emit(&mut self, sn: u32, now: u32, wnd: u16, p: &mut Packer<'_>) {
        let i = self.ring.idx(sn);
        self.ring.segs[i].ts = now;
        let s = &self.ring.segs[i];
        let h = Header {
            conv: self.conv,
            cmd: CMD_PUSH,
            frg: s.frg,
            wnd,
            ts: now,
            sn,
            una: self.rcv_nxt,
            len: s.len,
        };
        let at = i * self.ring.mss;
        p.push(&h, &self.ring.data[at..at + s.len as usize]);
        if s.xmit >= self.dead_link {
            self.dead = true;
        }
        if let Some(cc) = &mut self.cc {
            let bytes = (s.len as usize + OVERHEAD + self.path_extra) as f64 * self.path_factor;
            let previous = (s.xmit > 1).then_some(s.sent);
            self.ring.segs[i].sent = cc.on_send(now, bytes as usize, previous);
        }
        self.stats.segments_sent += 1;
    }

    fn flush_data(&mut self, now: u32, p: &mut Packer<'_>, wnd: u16) {
        let mut cwnd = self.snd_wnd.min(self.rmt_wnd);
        // With bbr the path model is the window (it overrides `nc`); the
        // loss window, down to 1 after a timeout, would also stall sending
        // while `check` (pacing_wakeup) keeps saying "now": a busy loop.
        if !self.nc && self.cc.is_none() {
            cwnd = cwnd.min(self.cwnd);
        }
        let resent = if self.fastresend > 0 {
            self.fastresend
        } else {
            u32::MAX
        };
        let rtomin = if self.nodelay { 0 } else { self.rx_rto >> 3 };
        let mut change = false;
        let mut lost = false;

        // Fast retransmissions. A segment whose RTO also expired is left to the
        // timeout scan below, as in the reference where the timeout wins.
        // With bbr, as many as pacing allows; the rest wait for the next flush.
        while !self.fast_queue.is_empty() && self.pacing_allows(now) {
            let Some(sn) = self.fast_queue.pop_front() else {
                break;
            };
            if !self.in_flight(sn) {
                continue;
            }
            let s = self.ring.seg(sn);
            if s.acked || !s.fast_pending {
                continue;
            }
            s.fast_pending = false;
            if tdiff(now, s.resendts) >= 0 || s.fastack < resent || s.xmit > FASTACK_LIMIT {
                continue;
            }
            s.xmit += 1;
            s.fastack = 0;
            s.resendts = now.wrapping_add(s.rto);
            let ts = s.resendts;
            self.note_resend(ts);
            self.emit(sn, now, wnd, p);
            self.stats.fast_retransmits += 1;
            change = true;
        }

        // Timeout retransmissions: scan only when the earliest deadline may
        // have passed; the scan recomputes it exactly.
        if self.head.is_some() && tdiff(now, self.resend_lb) >= 0 {
            let mut earliest: Option<u32> = None;
            let cap = self.backoff_cap();
            let mut cur = self.head;
            while let Some(sn) = cur {
                let s = self.ring.seg(sn);
                cur = s.next;
                let due = tdiff(now, s.resendts) >= 0;
                if due && !self.pacing_allows(now) {
                    // Held back by pacing: due again at once (`timer_due` waits
                    // for the pacer's time), so nothing later can be earlier.
                    earliest = Some(now);
                    break;
                }
                let s = self.ring.seg(sn);
                if due {
                    s.xmit += 1;
                    s.rto = if self.nodelay || self.cc.is_some() {
                        s.rto.saturating_add(s.rto / 2)
                    } else {
                        s.rto.saturating_add(s.rto.max(self.rx_rto))
                    }
                    .min(cap);
                    s.resendts = now.wrapping_add(s.rto);
                    // A fresh transmission: skips are counted anew (the
                    // reference keeps the count and may fast-resend it again).
                    s.fastack = 0;
                    let ts = s.resendts;
                    self.emit(sn, now, wnd, p);
                    self.stats.retransmits += 1;
                    lost = true;
                    earliest = Some(match earliest {
                        Some(e) if tdiff(e, ts) <= 0 => e,
                        _ => ts,
                    });
                } else {
                    let ts = s.resendts;
                    earliest = Some(match earliest {
                        Some(e) if tdiff(e, ts) <= 0 => e,
                        _ => ts,
                    });
                }
            }
            if let Some(e) = earliest {
                self.resend_lb = e;
            }
        }

        // New segments, as far as the windows (and with bbr, the path
        // model's window and pacing) allow.
        let limit = self.snd_una.wrapping_add(cwnd);
        while self.snd_nxt != self.snd_end
            && tdiff(self.snd_nxt, limit) < 0
            && self.cc.as_mut().is_none_or(|cc| cc.can_send(now))
        {
            let sn = self.snd_nxt;
            self.snd_nxt = sn.wrapping_add(1);
            let rto = self.rx_rto;
            let s = self.ring.seg(sn);
            s.xmit = 1;
            s.unneeded = false;
            s.rto = rto;
            s.resendts = now.wrapping_add(rto).wrapping_add(rtomin);
            s.fastack = 0;
            s.fast_pending = false;
            s.acked = false;
            let ts = s.resendts;
            self.link_tail(sn);
            self.note_resend(ts);
            self.emit(sn, now, wnd, p);
        }
        if self.snd_nxt == self.snd_end && !self.backlog_upstream {
            if let Some(cc) = &mut self.cc {
                if cc.window_open() {
                    // Out of data, not of window: the rate seen is the application's.
                    cc.on_app_limited();
                }
            }
        }

        if change {
            let inflight = self.snd_nxt.wrapping_sub(self.snd_una);
            self.ssthresh = (inflight / 2).max(THRESH_MIN);
            self.cwnd = self.ssthresh.saturating_add(resent);
            self.incr = self.cwnd as u64 * self.mss as u64;
        }
        if lost {
            self.ssthresh = (cwnd / 2).max(THRESH_MIN);
            self.cwnd = 1;
            self.incr = self.mss as u64;
        }
        if self.cwnd < 1 {
            self.cwnd = 1;
            self.incr = self.mss as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(cfg: KcpConfig) -> (Kcp, Kcp) {
        (Kcp::new(7, cfg.clone()), Kcp::new(7, cfg))
    }

    fn collect(k: &mut Kcp, now: u32) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        k.flush(now, &mut |d| v.push(d.to_vec()));
        v
    }

    fn drain(k: &mut Kcp) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| k.recv_vec()).collect()
    }

    #[test]
    fn unordered_hands_out_whole_messages_beyond_a_gap() {
        let cfg = KcpConfig {
            unordered: true,
            ..KcpConfig::default()
        };
        let (mut a, mut b) = pair(cfg);
        // sn 0..=4: one segment each; sn 5, 6: one message in two
        // fragments; sn 7: one segment. One segment per datagram.
        let msgs: Vec<Vec<u8>> = (0..5u8)
            .map(|i| vec![i; 1000])
            .chain([vec![5; 2000], vec![7; 1000]])
            .collect();
        for m in &msgs {
            a.send(m).unwrap();
        }
        let d = collect(&mut a, 0);
        assert_eq!(d.len(), 8);
        for (i, x) in d.iter().enumerate() {
            if i != 1 {
                b.input(x, 1).unwrap();
            }
        }
        // 0 in order; 2 waits (is it a whole message? sn 1 would tell);
        // 3, 4 and 7 go out at once; the fragments 5-6 wait for order.
        let got = drain(&mut b);
        assert_eq!(got, [0, 3, 4, 6].map(|i| msgs[i].clone()));
        assert_eq!(b.stats().early_deliveries, 3);
        // The gap fills: the rest, in order, nothing twice.
        b.input(&d[1], 2).unwrap();
        assert_eq!(drain(&mut b), [1, 2, 5].map(|i| msgs[i].clone()));
        // Duplicates of what went out early are not delivered again.
        for x in &d {
            b.input(x, 3).unwrap();
        }
        assert!(drain(&mut b).is_empty());
        assert_eq!(b.stats().messages_recv, 7);
    }

    #[test]
    fn ordered_by_default() {
        let (mut a, mut b) = pair(KcpConfig::default());
        for i in 0..4u8 {
            a.send(&[i; 1000]).unwrap();
        }
        let d = collect(&mut a, 0);
        for x in [&d[0], &d[2], &d[3]] {
            b.input(x, 1).unwrap();
        }
        assert_eq!(drain(&mut b), [vec![0u8; 1000]]);
        b.input(&d[1], 2).unwrap();
        assert_eq!(drain(&mut b).len(), 3);
    }

    #[test]
    fn kcp_is_send() {
        fn is_send<T: Send>() {}
        is_send::<Kcp>();
    }

    #[test]
    fn one_message_round_trip_with_on_demand_flush() {
        let (mut a, mut b) = pair(KcpConfig::default());
        a.send(b"hello").unwrap();
        let d = collect(&mut a, 0);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].len(), OVERHEAD + 5);
        assert_eq!(Kcp::conv_of(&d[0]), Some(7));
        b.input(&d[0], 5).unwrap();
        assert_eq!(b.peek_size(), Some(5));
        assert_eq!(b.recv_vec().unwrap(), b"hello");
        assert_eq!(b.recv_vec(), None);
        let acks = collect(&mut b, 5);
        assert_eq!(acks.len(), 1);
        assert_eq!(acks[0][4], CMD_ACK);
        a.input(&acks[0], 20).unwrap();
        assert_eq!(a.wait_snd(), 0);
        assert_eq!(a.stats().srtt, 20);
    }

    #[test]
    fn fragments_count_down_and_pack_to_mtu() {
        let cfg = KcpConfig {
            mtu: 1350,
            ..KcpConfig::default()
        };
        let (mut a, mut b) = pair(cfg);
        let msg: Vec<u8> = (0..9000u32).map(|i| (i * 7) as u8).collect();
        a.send(&msg).unwrap();
        assert_eq!(a.wait_snd(), 9000usize.div_ceil(1326));
        let d = collect(&mut a, 0);
        let frgs: Vec<u8> = d.iter().map(|x| x[5]).collect();
        assert_eq!(frgs, [6, 5, 4, 3, 2, 1, 0]);
        assert!(d.iter().all(|x| x.len() <= 1350));
        for x in d.iter().rev() {
            b.input(x, 1).unwrap();
        }
        assert_eq!(b.recv_vec().unwrap(), msg);
        // 7 ACKs of 24 bytes share one datagram.
        let acks = collect(&mut b, 1);
        assert_eq!(acks.len(), 1);
        assert_eq!(acks[0].len(), 7 * OVERHEAD);
    }

    #[test]
    fn too_many_fragments_is_refused() {
        let cfg = KcpConfig {
            rcv_wnd: 128,
            ..KcpConfig::default()
        };
        let mut a = Kcp::new(1, cfg);
        let mss = a.mss();
        assert!(a.send(&vec![0; 128 * mss]).is_ok());
        let e = a.send(&vec![0; 128 * mss + 1]).unwrap_err();
        assert!(matches!(e, KcpError::MessageTooLarge { max, .. } if max == 128 * mss));
        let b = Kcp::new(1, KcpConfig::default());
        assert_eq!(b.max_message(), 255 * b.mss());
    }

    #[test]
    fn bad_segment_stops_input_but_keeps_earlier_ones() {
        let (mut a, mut b) = pair(KcpConfig::default());
        a.send(b"one").unwrap();
        let mut d = collect(&mut a, 0).remove(0);
        d.extend_from_slice(&[9; 24]); // conv 0x09090909
        let e = b.input(&d, 0).unwrap_err();
        assert!(matches!(
            e,
            KcpError::ConvMismatch {
                got: 0x0909_0909,
                expected: 7
            }
        ));
        assert_eq!(b.recv_vec().unwrap(), b"one");
        assert_eq!(b.stats().input_errors, 1);
        assert!(b.input(&d[..10], 0).is_err());
        let mut bad = d[..24].to_vec();
        bad[4] = 99;
        bad[20..24].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            b.input(&bad, 0),
            Err(KcpError::BadCommand { cmd: 99, .. })
        ));
    }

    #[test]
    fn ring_grows_when_queue_exceeds_capacity() {
        let (mut a, mut b) = pair(KcpConfig::default());
        for i in 0..1000u32 {
            a.send(&i.to_le_bytes()).unwrap();
        }
        assert_eq!(a.wait_snd(), 1000);
        let mut t = 0;
        let mut got = 0u32;
        while got < 1000 {
            t += 10;
            for d in collect(&mut a, t) {
                b.input(&d, t).unwrap();
            }
            while let Some(m) = b.recv_vec() {
                assert_eq!(m, got.to_le_bytes());
                got += 1;
            }
            for d in collect(&mut b, t) {
                a.input(&d, t).unwrap();
            }
        }
        assert_eq!(a.wait_snd(), 0);
    }
}
