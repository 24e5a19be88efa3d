//! Path-MTU probing, after DPLPMTUD (RFC 8899): does the path carry
//! datagrams of the size both sides agreed on (`udp_mtu`)? Some paths drop
//! large datagrams (a middlebox that drops fragments, a tunnel with a small
//! MTU and DF set), and then every full-size segment is lost while
//! keepalives and small packets pass: the session looks alive and carries
//! nothing big. A probe padded to the agreed size, answered by a small
//! acknowledgement, tells; when it is lost `TRIES` times, a binary search
//! finds the largest size that gets through, and the session reports both
//! numbers so the operator can set `--udp-mtu` (docs/protocol.md, 6.8).
//!
//! Probe plaintext: `kind u8 (1 probe, 2 ack) ‖ id u32 LE ‖ size u16 LE`,
//! a probe then zero padding up to `size` bytes of datagram; an ack echoes
//! the id and gives the length of the datagram that arrived.
use std::collections::VecDeque;

/// Probe header and the whole acknowledgement.
pub const ACK_LEN: usize = 7;
/// The largest probe plaintext we build.
pub const MAX_PROBE: usize = 9000;
/// Sizes at or below this are taken to work (IPv4's minimum reassembly size).
pub const BASE: usize = 576;
/// Unanswered probes of one size before it counts as dropped: enough that
/// random loss (30% each way makes a round trip fail half the time) seldom
/// fakes a verdict.
pub const TRIES: u32 = 5;
/// Time between probes of one search (ms).
pub const INTERVAL_MS: u32 = 1000;
/// The search stops when the bounds are this close (bytes).
pub const RESOLUTION: usize = 16;
/// The first probe waits this long after the session starts (ms), so it
/// does not compete with the first packets.
pub const FIRST_DELAY_MS: u32 = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Probe,
    Ack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub kind: Kind,
    pub id: u32,
    /// Probe: the datagram size it was padded to. Ack: the size that arrived.
    pub size: u16,
}

/// A probe or acknowledgement plaintext; None if it is neither.
pub fn decode(b: &[u8]) -> Option<Probe> {
    if b.len() < ACK_LEN {
        return None;
    }
    let kind = match b[0] {
        1 => Kind::Probe,
        2 => Kind::Ack,
        _ => return None,
    };
    Some(Probe {
        kind,
        id: u32::from_le_bytes(b[1..5].try_into().ok()?),
        size: u16::from_le_bytes(b[5..7].try_into().ok()?),
    })
}

/// Writes the plaintext of a probe that makes a datagram of `size` bytes
/// once sealed with `overhead` bytes of header and tag. Returns its length.
pub fn encode_probe(p: &Due, overhead: usize, out: &mut [u8]) -> Option<usize> {
    let n = p.size.checked_sub(overhead)?.max(ACK_LEN);
    if n > out.len() {
        return None;
    }
    out[..n].fill(0);
    out[0] = 1;
    out[1..5].copy_from_slice(&p.id.to_le_bytes());
    out[5..7].copy_from_slice(&(p.size.min(u16::MAX as usize) as u16).to_le_bytes());
    Some(n)
}

pub fn encode_ack(id: u32, size: usize, out: &mut [u8; ACK_LEN]) {
    out[0] = 2;
    out[1..5].copy_from_slice(&id.to_le_bytes());
    out[5..7].copy_from_slice(&(size.min(u16::MAX as usize) as u16).to_le_bytes());
}

/// A probe to send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub id: u32,
    pub size: usize,
}

#[derive(Debug)]
struct Current {
    size: usize,
    id: u32,
    tries: u32,
    next_at: u32,
}

/// One direction's search. Sans-IO: `due` says when to send what, `acked`
/// takes answers; the session seals and sends.
#[derive(Debug)]
pub struct PathMtu {
    target: usize,
    /// Largest size known to work.
    low: usize,
    /// Smallest size known to fail (`target + 1` until one did).
    high: usize,
    cur: Option<Current>,
    first_at: Option<u32>,
    next_id: u32,
    confirmed: usize,
    done: bool,
    problem: Option<(usize, usize)>,
    /// Acknowledgements owed to the peer: (probe id, size received).
    answers: VecDeque<(u32, usize)>,
}

/// Acknowledgements queued at most (a peer flooding probes gets no more).
const MAX_ANSWERS: usize = 8;

fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

impl PathMtu {
    pub fn new(target: usize) -> PathMtu {
        PathMtu {
            target,
            low: BASE.min(target),
            high: target + 1,
            cur: None,
            first_at: None,
            next_id: 1,
            confirmed: 0,
            // Nothing to learn when the agreed size is the base itself.
            done: target <= BASE,
            problem: None,
            answers: VecDeque::new(),
        }
    }

    pub fn confirmed(&self) -> usize {
        self.confirmed
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// When `due` has something to send (None: nothing more to do).
    pub fn next_at(&self) -> Option<u32> {
        if self.done {
            return None;
        }
        match (&self.cur, self.first_at) {
            (Some(c), _) => Some(c.next_at),
            (None, Some(t)) => Some(t),
            (None, None) => None,
        }
    }

    /// Starts the clock (first call) and returns the probe to send now, if any.
    pub fn due(&mut self, now: u32) -> Option<Due> {
        if self.done {
            return None;
        }
        let first_at = *self
            .first_at
            .get_or_insert(now.wrapping_add(FIRST_DELAY_MS));
        if self.cur.is_none() {
            if !after(now, first_at) {
                return None;
            }
            self.cur = Some(Current {
                size: self.target,
                id: self.new_id(),
                tries: 0,
                next_at: now,
            });
        }
        let (size, tries, next_at) = {
            let c = self.cur.as_ref().expect("set above");
            (c.size, c.tries, c.next_at)
        };
        if !after(now, next_at) {
            return None;
        }
        if tries >= TRIES {
            // This size is dropped: search below it.
            self.high = size;
            if !self.next_size(now) {
                return None;
            }
        }
        let id = self.new_id();
        let c = self.cur.as_mut().expect("a size is being probed");
        c.tries += 1;
        c.id = id;
        c.next_at = now.wrapping_add(INTERVAL_MS);
        Some(Due { id, size: c.size })
    }

    fn new_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Moves to the middle of the bounds; false when the search is over.
    fn next_size(&mut self, now: u32) -> bool {
        if self.high <= self.low + RESOLUTION {
            self.finish();
            return false;
        }
        let mid = (self.low + self.high) / 2;
        self.cur = Some(Current {
            size: mid,
            id: 0,
            tries: 0,
            next_at: now,
        });
        true
    }

    fn finish(&mut self) {
        self.done = true;
        self.cur = None;
        if self.low < self.target {
            self.problem = Some((self.target, self.low));
        }
    }

    /// An acknowledgement: the peer received a datagram of `size` bytes.
    /// True when it answers one of our probes.
    pub fn acked(&mut self, id: u32, size: usize, now: u32) -> bool {
        if id == 0 || id >= self.next_id || size > self.target {
            return false;
        }
        self.confirmed = self.confirmed.max(size);
        if self.done {
            return true;
        }
        self.low = self.low.max(size);
        if self.low >= self.target {
            self.done = true;
            self.cur = None;
            return true;
        }
        if let Some(c) = &self.cur {
            if c.size <= size {
                self.next_size(now);
            }
        }
        true
    }

    /// A probe from the peer: queue its acknowledgement.
    pub fn answer(&mut self, id: u32, size: usize) {
        if self.answers.len() < MAX_ANSWERS {
            self.answers.push_back((id, size));
        }
    }

    pub fn take_answer(&mut self) -> Option<(u32, usize)> {
        self.answers.pop_front()
    }

    pub fn has_answers(&self) -> bool {
        !self.answers.is_empty()
    }

    /// (configured, largest that worked) once, when the path dropped the
    /// configured size.
    pub fn take_problem(&mut self) -> Option<(usize, usize)> {
        self.problem.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a search against a path that carries at most `limit` bytes,
    /// answering every probe that fits. Returns (problem, probes sent).
    fn search(target: usize, limit: usize) -> (Option<(usize, usize)>, u32) {
        let mut p = PathMtu::new(target);
        let mut now = 0u32;
        let mut sent = 0;
        for _ in 0..10_000 {
            if let Some(d) = p.due(now) {
                sent += 1;
                if d.size <= limit {
                    p.acked(d.id, d.size, now + 40);
                }
            }
            if p.is_done() {
                break;
            }
            now += 50;
        }
        assert!(p.is_done(), "the search ends");
        (p.take_problem(), sent)
    }

    #[test]
    fn a_path_that_carries_the_target_costs_one_probe() {
        assert_eq!(search(1350, 1500), (None, 1));
    }

    #[test]
    fn a_smaller_path_is_found_within_the_resolution() {
        let (problem, sent) = search(1350, 1000);
        let (target, works) = problem.expect("a problem is reported");
        assert_eq!(target, 1350);
        assert!(works <= 1000 && works + RESOLUTION >= 1000, "{works}");
        assert!(sent < 40, "{sent} probes");
    }

    #[test]
    fn the_base_needs_no_probe() {
        let mut p = PathMtu::new(BASE);
        assert_eq!(p.due(0), None);
        assert!(p.is_done());
    }

    #[test]
    fn probes_round_trip_and_pad_to_their_size() {
        let mut buf = [0u8; MAX_PROBE];
        let n = encode_probe(&Due { id: 9, size: 1350 }, 32, &mut buf).unwrap();
        assert_eq!(n, 1318);
        let p = decode(&buf[..n]).unwrap();
        assert_eq!((p.kind, p.id, p.size), (Kind::Probe, 9, 1350));
        let mut a = [0u8; ACK_LEN];
        encode_ack(9, 1350, &mut a);
        assert_eq!(
            decode(&a),
            Some(Probe {
                kind: Kind::Ack,
                id: 9,
                size: 1350
            })
        );
        assert_eq!(decode(&a[..6]), None);
        assert_eq!(decode(&[3, 0, 0, 0, 0, 0, 0]), None);
    }

    #[test]
    fn forged_sizes_and_ids_are_ignored() {
        let mut p = PathMtu::new(1350);
        assert_eq!(p.due(0), None, "the first probe waits");
        let d = p.due(FIRST_DELAY_MS).unwrap();
        assert!(!p.acked(d.id + 5, 1350, 0), "an id never sent");
        assert!(!p.acked(d.id, 9000, 0), "larger than the target");
        assert!(!p.is_done());
    }
}
