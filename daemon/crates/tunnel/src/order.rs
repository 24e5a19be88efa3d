//! Order per flow, not per tunnel: no head-of-line blocking across flows.
//!
//! KCP keeps one order for the whole tunnel, so a ping waited for every
//! retransmission of a download sharing the tunnel. Instead, each message
//! (one packet or frame) carries a 2-byte header: how many sequence numbers
//! back the previous message of the same flow starts (0: none in flight).
//! The receiver lets KCP hand out whole messages as soon as they are
//! certain (its "early" delivery), and holds a message only until the one
//! its header names has gone out. TCP inside still sees its own packets in
//! order; other flows never wait for it (docs/protocol.md, 3.5).
use std::collections::HashMap;

/// Bytes in front of every message.
pub const HEADER: usize = 2;
/// A predecessor further back than this is treated as gone out already: the
/// sender's window is at most this wide, and everything before its oldest
/// unacknowledged segment has reached the peer in order.
pub const MAX_DISTANCE: u32 = 32_768;

fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// Sender side: the last message of each flow, as (first sn, the sn after
/// its last segment).
#[derive(Default)]
pub struct FlowLinks {
    last: HashMap<u64, (u32, u32)>,
}

/// Flows remembered at most before the ones already acknowledged are
/// forgotten (their successors need no link: see `MAX_DISTANCE`).
const MAX_FLOWS: usize = 4096;

impl FlowLinks {
    /// The header of a message of `flow` whose segments are `sn..end`, given
    /// the oldest unacknowledged segment `una`.
    pub fn link(&mut self, flow: u64, sn: u32, end: u32, una: u32) -> [u8; HEADER] {
        // Acknowledged means received, and everything before `una` goes
        // out in order at the peer: no link needed. All of the message, not
        // its first segment: a message of several segments that is only
        // partly acknowledged has not gone out, and a successor sent
        // without a link overtook it.
        let acked = |end: u32| !before(una, end);
        if self.last.len() >= MAX_FLOWS {
            self.last.retain(|_, &mut (_, e)| !acked(e));
            if self.last.len() >= MAX_FLOWS {
                self.last.clear();
            }
        }
        let delta = match self.last.insert(flow, (sn, end)) {
            Some((p, e)) if !acked(e) => sn.wrapping_sub(p),
            _ => 0,
        };
        let delta = if delta == 0 || delta > MAX_DISTANCE {
            0
        } else {
            delta as u16
        };
        delta.to_le_bytes()
    }

    pub fn clear(&mut self) {
        self.last = HashMap::new();
    }
}

/// Receiver side: messages held until the one before them in their flow
/// has gone out.
#[derive(Default)]
pub struct Reorder {
    /// Predecessor sn -> the messages waiting for it (sn, bytes).
    held: HashMap<u32, Vec<(u32, Vec<u8>)>>,
    held_bytes: usize,
    /// Messages that went out ahead of KCP's in-order point.
    out_early: HashMap<u32, ()>,
    spare: Vec<Vec<u8>>,
    /// Messages that had to wait for their flow (counter).
    pub waited: u64,
}

impl Reorder {
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    fn gone_out(&self, x: u32, in_order_before: u32) -> bool {
        before(x, in_order_before) || self.out_early.contains_key(&x)
    }

    /// Message `sn` (without its header, `delta` from it) handed out by
    /// KCP, every message before `in_order_before` having been handed out
    /// too. Delivers it now or holds it; delivering it may release others.
    pub fn offer(
        &mut self,
        sn: u32,
        delta: u16,
        msg: &[u8],
        in_order_before: u32,
        deliver: &mut dyn FnMut(&[u8]),
    ) {
        let pred = sn.wrapping_sub(delta as u32);
        if delta != 0 && !self.gone_out(pred, in_order_before) {
            let mut v = self.spare.pop().unwrap_or_default();
            v.clear();
            v.extend_from_slice(msg);
            self.held_bytes += v.len();
            self.held.entry(pred).or_default().push((sn, v));
            self.waited += 1;
            return;
        }
        deliver(msg);
        self.went_out(sn, in_order_before, deliver);
    }

    /// `sn` went out: so may whatever waited for it, and what waited for those.
    fn went_out(&mut self, sn: u32, in_order_before: u32, deliver: &mut dyn FnMut(&[u8])) {
        let mut stack = vec![sn];
        while let Some(x) = stack.pop() {
            if !before(x, in_order_before) {
                self.out_early.insert(x, ());
            }
            if let Some(waiting) = self.held.remove(&x) {
                for (s, v) in waiting {
                    deliver(&v);
                    self.held_bytes -= v.len();
                    if self.spare.len() < 64 {
                        self.spare.push(v);
                    }
                    stack.push(s);
                }
            }
        }
    }

    /// After KCP's in-order point moved to `in_order_before`: forgets what
    /// it no longer needs, and releases anything waiting for a message
    /// before it (a predecessor that was not a message start, from a broken
    /// peer, must not hold a flow forever).
    pub fn advance(&mut self, in_order_before: u32, deliver: &mut dyn FnMut(&[u8])) {
        if !self.out_early.is_empty() {
            self.out_early.retain(|&x, _| !before(x, in_order_before));
        }
        if self.held.is_empty() {
            return;
        }
        let due: Vec<u32> = self
            .held
            .keys()
            .copied()
            .filter(|&p| before(p, in_order_before))
            .collect();
        for p in due {
            self.went_out(p, in_order_before, deliver);
        }
    }

    pub fn trim(&mut self) {
        self.spare = Vec::new();
        if self.held.is_empty() {
            self.held = HashMap::new();
        }
        if self.out_early.is_empty() {
            self.out_early = HashMap::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_point_to_the_flows_previous_message() {
        let mut l = FlowLinks::default();
        assert_eq!(l.link(1, 10, 11, 0), [0, 0], "first of its flow");
        assert_eq!(l.link(2, 11, 12, 0), [0, 0]);
        assert_eq!(u16::from_le_bytes(l.link(1, 15, 16, 0)), 5);
        // Acknowledged predecessor: no link.
        assert_eq!(l.link(2, 20, 21, 12), [0, 0]);
    }

    #[test]
    fn a_message_of_several_segments_is_linked_until_all_are_acknowledged() {
        let mut l = FlowLinks::default();
        // 30..36: six fragments; the peer has 30..33 (una 33), not the rest.
        assert_eq!(l.link(1, 30, 36, 30), [0, 0]);
        assert_eq!(u16::from_le_bytes(l.link(1, 36, 37, 33)), 6);
        assert_eq!(u16::from_le_bytes(l.link(1, 37, 38, 36)), 1);
        // Once the whole message is acknowledged its successor needs no link.
        assert_eq!(l.link(1, 40, 41, 38), [0, 0]);
    }

    #[test]
    fn a_message_waits_only_for_its_own_flow() {
        let mut r = Reorder::default();
        let out = std::cell::RefCell::new(Vec::<Vec<u8>>::new());
        let mut d = |m: &[u8]| out.borrow_mut().push(m.to_vec());
        // Flow A: 10 (lost for now), 12, 13. Flow B: 11 (first), 14.
        r.offer(11, 0, b"B1", 10, &mut d);
        r.offer(12, 2, b"A2", 10, &mut d);
        r.offer(13, 1, b"A3", 10, &mut d);
        r.offer(14, 3, b"B2", 10, &mut d);
        assert_eq!(*out.borrow(), [b"B1".to_vec(), b"B2".to_vec()]);
        // 10 arrives and goes out in order: A2 and A3 follow, in order.
        r.offer(10, 0, b"A1", 11, &mut d);
        assert_eq!(
            out.borrow()[2..],
            [b"A1".to_vec(), b"A2".to_vec(), b"A3".to_vec()]
        );
        assert_eq!(r.held_bytes(), 0);
    }

    #[test]
    fn a_bogus_predecessor_is_released_when_order_passes_it() {
        let mut r = Reorder::default();
        let out = std::cell::RefCell::new(Vec::<Vec<u8>>::new());
        let mut d = |m: &[u8]| out.borrow_mut().push(m.to_vec());
        r.offer(20, 5, b"x", 10, &mut d);
        assert!(out.borrow().is_empty());
        r.advance(16, &mut d);
        assert_eq!(*out.borrow(), [b"x".to_vec()]);
    }
}
