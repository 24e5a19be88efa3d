//! Flow queueing with CoDel at the tunnel's entry (models: Linux
//! fq_codel, RFC 8290; CoDel, RFC 8289), sans-IO.
//!
//! The TCP inside a tunnel never sees the path's random loss (FEC and KCP
//! hide it), so without a signal of its own it fills whatever queue the
//! tunnel has: a download made every ping through it wait hundreds of
//! milliseconds. Here each flow (5-tuple of an IP packet; a hash of the
//! L2/L3 headers of a frame) gets its own queue, served by deficit round
//! robin with new and sparse flows first, so a ping overtakes a download;
//! and each queue runs CoDel: a packet that waited longer than the target
//! for longer than an interval is marked (ECN-capable packets get CE) or
//! dropped, so the flow's TCP learns the tunnel's rate from the tunnel,
//! not from the path.
//!
//! Time is milliseconds, passed in. Packet buffers are reused (a free
//! list), so the steady state allocates nothing.
use std::collections::VecDeque;

/// CoDel's target: the standing queue a flow may keep (ms). Not RFC 8289's
/// 5: the flow's packets also wait in KCP's short queue behind it (about
/// 1 ms, `Session::kcp_queue_target`) and for pacing, and CoDel sees none
/// of that; a TCP inside with cubic kept 5-10% less at 5% loss on 5 ms once
/// KCP's queue went from 3 ms to 1. A ping does not wait here: sparse flows
/// are served first.
pub const TARGET_MS: u32 = 7;
/// CoDel's interval: how long the queue may stay above target before the
/// first drop, about a round trip of the worst path served (ms).
pub const INTERVAL_MS: u32 = 100;
/// Flow buckets (hash collisions share a queue).
pub const FLOWS: usize = 1024;
/// Bytes a flow may send per round of the deficit round robin.
pub const QUANTUM: i32 = 1514;
/// A flow whose packets leave at least this far apart (ms) is sparse.
pub const SPARSE_GAP_MS: u32 = 10;

/// What the scheduler did, for the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    pub enqueued: u64,
    pub dequeued: u64,
    /// CoDel's drops (non-ECN packets) and marks (ECN-capable packets).
    pub codel_drops: u64,
    pub ecn_marks: u64,
    /// Packets dropped because the scheduler's byte limit was reached.
    pub overflow_drops: u64,
    /// Flows that became active (a queue went from empty to non-empty).
    pub new_flows: u64,
    /// Sojourn time of the last packet dequeued (ms), and the largest of
    /// about the last second.
    pub last_sojourn_ms: u32,
    pub max_sojourn_ms: u32,
    max_since: u32,
}

struct Packet {
    data: Vec<u8>,
    enqueued_ms: u32,
}

#[derive(Default)]
struct Codel {
    /// In the dropping state.
    dropping: bool,
    /// Drops in this dropping state (the control law's count).
    count: u32,
    /// `count` when the last dropping state ended.
    last_count: u32,
    /// When the sojourn time first went above target (0: it is not).
    first_above: Option<u32>,
    /// When the next drop is due in the dropping state.
    drop_next: u32,
}

#[derive(Default)]
struct Flow {
    queue: VecDeque<Packet>,
    bytes: usize,
    deficit: i32,
    /// On one of the lists (new or old).
    listed: bool,
    /// When its last packet left (None: never).
    last_out: Option<u32>,
    codel: Codel,
}

/// The scheduler of one session's outgoing packets.
pub struct Scheduler {
    flows: Vec<Flow>,
    new_flows: VecDeque<usize>,
    old_flows: VecDeque<usize>,
    bytes: usize,
    packets: usize,
    limit_bytes: usize,
    ethernet: bool,
    free: Vec<Vec<u8>>,
    /// The last packet dequeued came from a sparse flow.
    last_sparse: bool,
    pub stats: SchedulerStats,
}

fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

/// `interval / sqrt(count)`: how soon the next drop follows (ms).
fn control_law(t: u32, count: u32) -> u32 {
    let step = (INTERVAL_MS as f64 / (count.max(1) as f64).sqrt()) as u32;
    t.wrapping_add(step.max(1))
}

impl Scheduler {
    /// `limit_bytes`: what the queues may hold in all (beyond it the
    /// largest flow loses its oldest packet); `ethernet`: packets are frames.
    pub fn new(limit_bytes: usize, ethernet: bool) -> Scheduler {
        Scheduler {
            flows: (0..FLOWS).map(|_| Flow::default()).collect(),
            new_flows: VecDeque::new(),
            old_flows: VecDeque::new(),
            bytes: 0,
            packets: 0,
            limit_bytes,
            ethernet,
            free: Vec::new(),
            last_sparse: false,
            stats: SchedulerStats::default(),
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.packets
    }

    pub fn is_empty(&self) -> bool {
        self.packets == 0
    }

    /// Takes one packet.
    pub fn enqueue(&mut self, pkt: &[u8], now: u32) {
        let idx = (flow_hash(pkt, self.ethernet) % FLOWS as u64) as usize;
        let mut data = self.free.pop().unwrap_or_default();
        data.clear();
        data.extend_from_slice(pkt);
        let f = &mut self.flows[idx];
        f.bytes += data.len();
        self.bytes += data.len();
        self.packets += 1;
        f.queue.push_back(Packet {
            data,
            enqueued_ms: now,
        });
        self.stats.enqueued += 1;
        if !f.listed {
            // A flow that was empty is new: it goes first, with a fresh
            // quantum (a sparse flow stays new, so it always goes first).
            f.listed = true;
            f.deficit = QUANTUM;
            self.new_flows.push_back(idx);
            self.stats.new_flows += 1;
        }
        while self.bytes > self.limit_bytes {
            self.drop_from_fattest();
        }
    }

    fn drop_from_fattest(&mut self) {
        let Some(fat) = (0..FLOWS).max_by_key(|&i| self.flows[i].bytes) else {
            return;
        };
        if let Some(p) = self.pop(fat) {
            self.stats.overflow_drops += 1;
            self.recycle(p.data);
        }
    }

    fn pop(&mut self, idx: usize) -> Option<Packet> {
        let f = &mut self.flows[idx];
        let p = f.queue.pop_front()?;
        f.bytes -= p.data.len();
        self.bytes -= p.data.len();
        self.packets -= 1;
        Some(p)
    }

    fn recycle(&mut self, mut data: Vec<u8>) {
        if self.free.len() < 256 {
            data.clear();
            self.free.push(data);
        }
    }

    /// Gives a buffer from `dequeue` back for reuse.
    pub fn give_back(&mut self, data: Vec<u8>) {
        self.recycle(data);
    }

    /// The next packet to send, or None. CoDel may drop (or mark) packets
    /// on the way.
    pub fn dequeue(&mut self, now: u32) -> Option<Vec<u8>> {
        loop {
            let (idx, from_new) = match self.new_flows.front() {
                Some(&i) => (i, true),
                None => (*self.old_flows.front()?, false),
            };
            if self.flows[idx].deficit <= 0 {
                self.flows[idx].deficit += QUANTUM;
                self.pop_list(from_new);
                self.old_flows.push_back(idx);
                continue;
            }
            match self.codel_dequeue(idx, now) {
                Some(p) => {
                    let f = &mut self.flows[idx];
                    f.deficit -= p.len() as i32;
                    // Sparse: its packets are at least SPARSE_GAP_MS apart
                    // (a ping, a keystroke), not a stream that merely keeps
                    // its queue empty (a transfer's ACKs).
                    self.last_sparse = f
                        .last_out
                        .is_none_or(|t| after(now, t.wrapping_add(SPARSE_GAP_MS)));
                    f.last_out = Some(now);
                    self.stats.dequeued += 1;
                    return Some(p);
                }
                None => {
                    // Empty: a new flow goes to the old list once (so a
                    // flow that keeps coming back cannot starve the old
                    // ones), an old one leaves the lists.
                    self.pop_list(from_new);
                    if from_new && !self.old_flows.is_empty() {
                        self.old_flows.push_back(idx);
                    } else {
                        self.flows[idx].listed = false;
                    }
                }
            }
        }
    }

    fn pop_list(&mut self, from_new: bool) {
        if from_new {
            self.new_flows.pop_front();
        } else {
            self.old_flows.pop_front();
        }
    }

    /// One packet of flow `idx` through CoDel (RFC 8289, section 5).
    fn codel_dequeue(&mut self, idx: usize, now: u32) -> Option<Vec<u8>> {
        loop {
            let mut p = self.pop(idx)?;
            let sojourn = now.wrapping_sub(p.enqueued_ms);
            let st = &mut self.stats;
            st.last_sojourn_ms = sojourn;
            if sojourn >= st.max_sojourn_ms || after(now, st.max_since.wrapping_add(1000)) {
                st.max_sojourn_ms = sojourn;
                st.max_since = now;
            }
            let empty_after = self.flows[idx].bytes <= QUANTUM as usize;
            let ok_to_drop = {
                let c = &mut self.flows[idx].codel;
                if sojourn < TARGET_MS || empty_after {
                    // Below target, or too little queued to matter.
                    c.first_above = None;
                    false
                } else {
                    match c.first_above {
                        None => {
                            c.first_above = Some(now.wrapping_add(INTERVAL_MS));
                            false
                        }
                        Some(t) => after(now, t),
                    }
                }
            };
            let c = &mut self.flows[idx].codel;
            if c.dropping {
                if !ok_to_drop {
                    c.dropping = false;
                    return Some(p.data);
                }
                if after(now, c.drop_next) {
                    c.count += 1;
                    c.drop_next = control_law(c.drop_next, c.count);
                    if self.signal(&mut p.data) {
                        return Some(p.data);
                    }
                    self.recycle(p.data);
                    continue;
                }
                return Some(p.data);
            }
            if ok_to_drop {
                c.dropping = true;
                // Start near the drop rate that last controlled the queue
                // if that was recent (RFC 8289's count reuse).
                let delta = c.count.saturating_sub(c.last_count);
                c.count = if delta > 1 && !after(now, c.drop_next.wrapping_add(16 * INTERVAL_MS)) {
                    delta
                } else {
                    1
                };
                c.last_count = c.count;
                c.drop_next = control_law(now, c.count);
                if self.signal(&mut p.data) {
                    return Some(p.data);
                }
                self.recycle(p.data);
                continue;
            }
            return Some(p.data);
        }
    }

    /// CoDel's congestion signal on one packet: CE for an ECN-capable one
    /// (true: send it), a drop for any other (false).
    fn signal(&mut self, pkt: &mut [u8]) -> bool {
        if set_ce(pkt, self.ethernet) {
            self.stats.ecn_marks += 1;
            true
        } else {
            self.stats.codel_drops += 1;
            false
        }
    }

    /// Whether the packet `dequeue` returned last came from a sparse flow
    /// (its previous packet left at least [`SPARSE_GAP_MS`] before):
    /// interactive traffic, which the session protects with FEC parity at once.
    pub fn last_from_sparse_flow(&self) -> bool {
        self.last_sparse
    }

    /// Frees the spare buffers (for a session gone idle).
    pub fn trim(&mut self) {
        self.free.clear();
        self.free.shrink_to_fit();
        for f in &mut self.flows {
            if f.queue.is_empty() {
                f.queue = VecDeque::new();
            }
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.flows.len() * std::mem::size_of::<Flow>()
            + self.free.iter().map(|b| b.capacity()).sum::<usize>()
            + self
                .flows
                .iter()
                .flat_map(|f| f.queue.iter())
                .map(|p| p.data.capacity())
                .sum::<usize>()
    }
}

/// Where the IP header starts: 0 for an IP packet, after the Ethernet
/// header (one VLAN tag allowed) for a frame; None if the frame is not IP.
fn ip_offset(pkt: &[u8], ethernet: bool) -> Option<usize> {
    if !ethernet {
        return Some(0);
    }
    let mut off = 12;
    let mut et = u16::from_be_bytes([*pkt.get(off)?, *pkt.get(off + 1)?]);
    if et == 0x8100 || et == 0x88a8 {
        off += 4;
        et = u16::from_be_bytes([*pkt.get(off)?, *pkt.get(off + 1)?]);
    }
    matches!(et, 0x0800 | 0x86dd).then_some(off + 2)
}

/// FNV-1a over some bytes.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// The flow of a packet: addresses, protocol and ports of an IP packet
/// (IPv4 or IPv6, without extension headers), or for a non-IP frame its
/// Ethernet addresses and type. Packets of one flow always hash alike.
pub fn flow_hash(pkt: &[u8], ethernet: bool) -> u64 {
    let Some(off) = ip_offset(pkt, ethernet) else {
        // Not IP: the L2 header is the flow.
        return fnv(FNV_START, &pkt[..pkt.len().min(14)]);
    };
    let ip = &pkt[off..];
    let Some(&first) = ip.first() else {
        return FNV_START;
    };
    let (addrs, proto, l4) = match first >> 4 {
        4 if ip.len() >= 20 => {
            let ihl = ((ip[0] & 0x0f) as usize) * 4;
            // Later fragments carry no ports: hash them by addresses alone.
            let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0;
            (&ip[12..20], ip[9], (!frag).then_some(ihl))
        }
        6 if ip.len() >= 40 => (&ip[8..40], ip[6], Some(40)),
        _ => return fnv(FNV_START, &ip[..ip.len().min(20)]),
    };
    let mut h = fnv(FNV_START, addrs);
    h = fnv(h, &[proto]);
    if let Some(l4) = l4 {
        if matches!(proto, 6 | 17 | 132 | 136) {
            if let Some(ports) = ip.get(l4..l4 + 4) {
                h = fnv(h, ports);
            }
        }
    }
    h
}

/// Marks an ECN-capable IP packet Congestion Experienced; false if it is
/// not ECN-capable (or not IP).
pub fn set_ce(pkt: &mut [u8], ethernet: bool) -> bool {
    let Some(off) = ip_offset(pkt, ethernet) else {
        return false;
    };
    let ip = &mut pkt[off..];
    match ip.first().map(|b| b >> 4) {
        Some(4) if ip.len() >= 20 => {
            let tos = ip[1];
            if tos & 0x03 == 0 {
                return false;
            }
            if tos & 0x03 == 0x03 {
                return true;
            }
            let new = tos | 0x03;
            // RFC 1624 incremental checksum update of the word holding TOS.
            let old_word = u16::from_be_bytes([ip[0], tos]);
            let new_word = u16::from_be_bytes([ip[0], new]);
            let sum = u16::from_be_bytes([ip[10], ip[11]]);
            let mut s = (!sum as u32) + (!old_word as u32) + new_word as u32;
            s = (s & 0xffff) + (s >> 16);
            s = (s & 0xffff) + (s >> 16);
            let sum = !(s as u16);
            ip[1] = new;
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            true
        }
        Some(6) if ip.len() >= 40 => {
            // Traffic class spans bytes 0 and 1; ECN is its low two bits.
            let ecn = (ip[1] >> 4) & 0x03;
            if ecn == 0 {
                return false;
            }
            ip[1] |= 0x30;
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp4(src_port: u16, len: usize, tos: u8) -> Vec<u8> {
        let mut p = vec![0u8; len.max(28)];
        p[0] = 0x45;
        p[1] = tos;
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p[20..22].copy_from_slice(&src_port.to_be_bytes());
        p[22..24].copy_from_slice(&53u16.to_be_bytes());
        let sum = checksum(&p[..20]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p
    }

    fn checksum(h: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for (i, c) in h.chunks(2).enumerate() {
            if i != 5 {
                s += u16::from_be_bytes([c[0], c[1]]) as u32;
            }
        }
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn a_sparse_flow_overtakes_a_backlog() {
        let mut s = Scheduler::new(1 << 24, false);
        for _ in 0..1000 {
            s.enqueue(&udp4(1000, 1400, 0), 0);
        }
        // Serve some of the bulk flow, then a ping-like packet arrives.
        for _ in 0..10 {
            s.dequeue(1).unwrap();
        }
        s.enqueue(&udp4(2000, 84, 0), 1);
        let mut waited = 0;
        loop {
            let p = s.dequeue(1).unwrap();
            if u16::from_be_bytes([p[20], p[21]]) == 2000 {
                break;
            }
            waited += 1;
        }
        assert!(
            waited <= 1,
            "the new flow waited behind {waited} bulk packets"
        );
    }

    #[test]
    fn a_ping_is_sparse_and_a_stream_of_acks_is_not() {
        let mut s = Scheduler::new(1 << 24, false);
        let mut sparse = [0, 0];
        // One ms per round: the time is the round.
        for now in 0..1000u32 {
            // ACKs every ms, each leaving at once (the queue stays empty).
            s.enqueue(&udp4(1, 60, 0), now);
            s.dequeue(now).unwrap();
            sparse[0] += s.last_from_sparse_flow() as u32;
            if now % 100 == 50 {
                s.enqueue(&udp4(2, 84, 0), now);
                s.dequeue(now).unwrap();
                sparse[1] += s.last_from_sparse_flow() as u32;
            }
        }
        assert_eq!(
            sparse,
            [1, 10],
            "only each flow's first ack, and every ping"
        );
    }

    #[test]
    fn flows_share_by_bytes() {
        let mut s = Scheduler::new(1 << 24, false);
        for _ in 0..300 {
            s.enqueue(&udp4(1, 1400, 0), 0);
            s.enqueue(&udp4(2, 1400, 0), 0);
            s.enqueue(&udp4(2, 1400, 0), 0);
        }
        let mut n = [0usize; 3];
        for _ in 0..200 {
            let p = s.dequeue(0).unwrap();
            n[u16::from_be_bytes([p[20], p[21]]) as usize] += 1;
        }
        assert!((n[1] as i32 - n[2] as i32).abs() <= 2, "{n:?}");
    }

    #[test]
    fn codel_drops_a_standing_queue_and_marks_ect() {
        for (tos, ecn) in [(0u8, false), (0x02, true)] {
            let mut s = Scheduler::new(1 << 24, false);
            // 1000 packets/s in, 500/s out: the queue stands and grows.
            let mut signals = 0;
            for now in 0..4000u32 {
                s.enqueue(&udp4(7, 1400, tos), now);
                if now % 2 == 0 {
                    if let Some(p) = s.dequeue(now) {
                        if p[1] & 0x03 == 0x03 {
                            assert_eq!(checksum(&p[..20]), u16::from_be_bytes([p[10], p[11]]));
                            signals += 1;
                        }
                        s.give_back(p);
                    }
                }
            }
            let st = s.stats;
            if ecn {
                assert!(st.ecn_marks > 0 && st.codel_drops == 0, "{st:?}");
                assert_eq!(signals as u64, st.ecn_marks);
            } else {
                assert!(st.codel_drops > 0 && st.ecn_marks == 0, "{st:?}");
            }
        }
    }

    #[test]
    fn a_short_burst_is_not_dropped() {
        let mut s = Scheduler::new(1 << 24, false);
        for _ in 0..50 {
            s.enqueue(&udp4(7, 1400, 0), 0);
        }
        // Drained within 50 ms, under CoDel's interval: no drop.
        let mut now = 0;
        while s.dequeue(now).is_some() {
            now += 1;
        }
        assert_eq!(s.stats.codel_drops, 0);
    }

    #[test]
    fn the_byte_limit_takes_from_the_fattest_flow() {
        let mut s = Scheduler::new(20 * 1400, false);
        for _ in 0..40 {
            s.enqueue(&udp4(1, 1400, 0), 0);
        }
        s.enqueue(&udp4(2, 1400, 0), 0);
        assert!(s.bytes() <= 20 * 1400);
        assert!(s.stats.overflow_drops >= 20);
        // The small flow kept its packet.
        let mut seen = false;
        while let Some(p) = s.dequeue(0) {
            seen |= u16::from_be_bytes([p[20], p[21]]) == 2;
        }
        assert!(seen);
    }

    #[test]
    fn flows_hash_by_five_tuple() {
        assert_eq!(
            flow_hash(&udp4(5, 100, 0), false),
            flow_hash(&udp4(5, 900, 0), false)
        );
        assert_ne!(
            flow_hash(&udp4(5, 100, 0), false),
            flow_hash(&udp4(6, 100, 0), false)
        );
        let mut frame = vec![0u8; 14];
        frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        frame.extend_from_slice(&udp4(5, 100, 0));
        assert_eq!(flow_hash(&frame, true), flow_hash(&udp4(5, 100, 0), false));
        assert_eq!(flow_hash(&[], false), flow_hash(&[], false));
    }
}
