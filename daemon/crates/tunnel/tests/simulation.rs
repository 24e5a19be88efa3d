//! Deterministic simulation of two sessions over a bad link: simulated clock,
//! seeded loss, reordering, duplication and delay. Every message must arrive
//! exactly once, in order, intact, for every KCP profile, FEC on and off and
//! rapid FEC on and off; forged, truncated and replayed datagrams must be
//! counted and dropped, never delivered.
use kcpvpn_crypto::packet::{CipherKind, Sealer, MSG_DATA, MSG_FEEDBACK};
use kcpvpn_fec::EncoderStats;
use kcpvpn_kcp::KcpConfig;
use kcpvpn_tunnel::keys::KeyStats;
use kcpvpn_tunnel::session::{Received, Session, SessionConfig, SessionStats, VecTransmit};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

mod common;
use common::flow_packet;

const KEY_AB: [u8; 32] = [0x11; 32];
const KEY_BA: [u8; 32] = [0x22; 32];

#[derive(Clone, Copy)]
struct LinkParams {
    loss: f64,
    dup: f64,
    delay_ms: u32,
    jitter_ms: u32,
}

/// One direction of the simulated path.
struct Link {
    p: LinkParams,
    rng: SmallRng,
    seq: u64,
    queue: BinaryHeap<Reverse<(u32, u64, Vec<u8>)>>,
    sent: u64,
    dropped: u64,
}

impl Link {
    fn new(p: LinkParams, seed: u64) -> Link {
        Link {
            p,
            rng: SmallRng::seed_from_u64(seed),
            seq: 0,
            queue: BinaryHeap::new(),
            sent: 0,
            dropped: 0,
        }
    }
    fn push(&mut self, now: u32, d: Vec<u8>) {
        self.sent += 1;
        if self.rng.random::<f64>() < self.p.loss {
            self.dropped += 1;
            return;
        }
        let copies = if self.rng.random::<f64>() < self.p.dup {
            2
        } else {
            1
        };
        for _ in 0..copies {
            // Jitter reorders: a later datagram may get a shorter delay.
            let j = if self.p.jitter_ms > 0 {
                self.rng.random_range(0..=self.p.jitter_ms)
            } else {
                0
            };
            self.seq += 1;
            self.queue
                .push(Reverse((now + self.p.delay_ms + j, self.seq, d.clone())));
        }
    }
    fn pop_due(&mut self, now: u32) -> Option<Vec<u8>> {
        if self
            .queue
            .peek()
            .is_some_and(|Reverse((t, _, _))| *t <= now)
        {
            self.queue.pop().map(|Reverse((_, _, d))| d)
        } else {
            None
        }
    }
}

fn config(profile: &str, fec: Option<(u8, u8)>, rapid: bool) -> SessionConfig {
    let kcp = KcpConfig::profile(profile).expect("profile");
    SessionConfig {
        kcp,
        fec_send: fec,
        fec_recv: fec,
        rapid_fec: rapid,
        cipher: CipherKind::Aes256Gcm,
        keepalive_ms: 10_000,
        idle_timeout_ms: 0,
        udp_mtu: 1350,
        send_buffer_bytes: 4 << 20,
        max_packet: 9100,
        mss_clamp_mtu: None,
        ethernet: false,
        // The messages here are not IP packets: served first in first out,
        // so the exact order KCP keeps is what these tests check.
        flow_queueing: false,
        rekey_interval_ms: 0,
    }
}

fn message(i: u32, rng: &mut SmallRng) -> Vec<u8> {
    // Mostly IP-packet sizes, sometimes a jumbo frame that spans several segments.
    let len = if rng.random::<f64>() < 0.05 {
        rng.random_range(1400..=9000)
    } else {
        rng.random_range(1..=1400)
    };
    // One UDP flow (the session keeps the order of a flow, not across
    // flows); the index sits where the payload starts.
    let mut m = vec![0u8; len.max(32)];
    m[0] = 0x45;
    m[9] = 17;
    m[12..16].copy_from_slice(&[10, 0, 0, 1]);
    m[16..20].copy_from_slice(&[10, 0, 0, 2]);
    m[20..24].copy_from_slice(&[0x13, 0x88, 0, 53]);
    m[28..32].copy_from_slice(&i.to_le_bytes());
    for (k, b) in m.iter_mut().enumerate().skip(32) {
        *b = (i as usize * 31 + k) as u8;
    }
    m
}

/// The index a message carries.
fn index_of(p: &[u8]) -> usize {
    u32::from_le_bytes(p[28..32].try_into().unwrap()) as usize
}

struct Outcome {
    delivered: Vec<Vec<u8>>,
    sent: Vec<Vec<u8>>,
    /// Per message: delivery time minus send time (ms).
    latency_ms: Vec<u32>,
    fec_recovered: u64,
    elapsed_ms: u32,
    /// The sender's and the receiver's counters at the end.
    a: SessionStats,
    b: SessionStats,
    /// A's FEC encoder counters when half the messages were sent, and at the end.
    enc_half: EncoderStats,
    enc_end: EncoderStats,
    a_keys: KeyStats,
    b_keys: KeyStats,
}

impl Outcome {
    /// Parity shards per data shard A sent in the second half of the run
    /// (after the loss estimate settled).
    fn late_parity_ratio(&self) -> f64 {
        let d = self.enc_end.data_shards - self.enc_half.data_shards;
        let p = self.enc_end.parity_shards - self.enc_half.parity_shards;
        p as f64 / d.max(1) as f64
    }
}

/// Sends `n` messages from A to B (and a trickle back) over the lossy link.
fn simulate(cfg: SessionConfig, link: LinkParams, n: u32, seed: u64, gap_ms: u32) -> Outcome {
    let mut now: u32 = 1000;
    let mut a = Session::new(cfg.clone(), 7, &KEY_AB, &KEY_BA, 2, now).unwrap();
    let rekey = cfg.rekey_interval_ms > 0;
    let mut b = Session::new(cfg, 7, &KEY_BA, &KEY_AB, 1, now).unwrap();
    if rekey {
        // The receiver starts the key updates (as the client would).
        b.start_rekeying(now);
    }
    let mut ab = Link::new(link, seed);
    let mut ba = Link::new(link, seed ^ 0xdead);
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed);
    let mut sent = Vec::new();
    let mut sent_at = Vec::new();
    let mut delivered = Vec::new();
    let mut latency_ms = Vec::new();
    let mut next_send = now;
    let limit = now + 600_000;
    let mut enc_half = EncoderStats::default();
    while now < limit {
        if sent.len() == n as usize / 2 {
            enc_half = a.fec_encoder_stats().unwrap_or_default();
        }
        if sent.len() < n as usize && now >= next_send && a.wants_packets() {
            let m = message(sent.len() as u32, &mut rng);
            assert!(a.send_packet(&mut m.clone(), now));
            sent.push(m);
            sent_at.push(now);
            next_send = now + gap_ms;
        }
        let mut tx = VecTransmit::default();
        a.flush(now, &mut tx);
        a.poll(now, &mut tx);
        for d in tx.datagrams.drain(..) {
            ab.push(now, d);
        }
        while let Some(mut d) = ab.pop_due(now) {
            b.input(&mut d, now, &mut |p: &[u8]| {
                // Messages carry their index (unordered delivery reorders).
                let i = index_of(p);
                latency_ms.push(now - sent_at[i]);
                delivered.push(p.to_vec());
            });
        }
        let mut tx = VecTransmit::default();
        b.flush(now, &mut tx);
        b.poll(now, &mut tx);
        for d in tx.datagrams.drain(..) {
            ba.push(now, d);
        }
        while let Some(mut d) = ba.pop_due(now) {
            a.input(&mut d, now, &mut |_p: &[u8]| panic!("B sent no data"));
        }
        if delivered.len() == n as usize && sent.len() == n as usize {
            break;
        }
        now += 1;
    }
    Outcome {
        delivered,
        sent,
        latency_ms,
        fec_recovered: b.fec_recovered(),
        elapsed_ms: now - 1000,
        a: a.stats.clone(),
        b: b.stats.clone(),
        enc_half,
        enc_end: a.fec_encoder_stats().unwrap_or_default(),
        a_keys: a.key_stats().clone(),
        b_keys: b.key_stats().clone(),
    }
}

fn assert_exactly_once(o: &Outcome, what: &str) {
    assert_eq!(
        o.delivered.len(),
        o.sent.len(),
        "{what}: {} of {} delivered",
        o.delivered.len(),
        o.sent.len()
    );
    for (i, (d, s)) in o.delivered.iter().zip(&o.sent).enumerate() {
        assert!(
            d == s,
            "{what}: message {i} differs (len {} vs {})",
            d.len(),
            s.len()
        );
    }
}

/// Unordered delivery: the same messages, each exactly once, in any order.
fn assert_exactly_once_any_order(o: &Outcome, what: &str) {
    let mut d = o.delivered.clone();
    let mut s = o.sent.clone();
    d.sort();
    s.sort();
    assert!(
        d == s,
        "{what}: {} delivered of {} sent, or some differ",
        d.len(),
        s.len()
    );
}

#[test]
fn unordered_sessions_deliver_exactly_once_and_sooner() {
    let link = LinkParams {
        loss: 0.1,
        dup: 0.02,
        delay_ms: 20,
        jitter_ms: 0,
    };
    let run = |unordered: bool| {
        let mut cfg = config("fast", Some((10, 3)), true);
        cfg.kcp.bbr = true;
        cfg.kcp.unordered = unordered;
        simulate(cfg, link, 2000, 31, 1)
    };
    let (ordered, unordered) = (run(false), run(true));
    assert_exactly_once(&ordered, "ordered");
    assert_exactly_once_any_order(&unordered, "unordered");
    // Messages no longer wait behind a retransmission: the slowest ones
    // arrive sooner.
    let p99 = |o: &Outcome| {
        let mut l = o.latency_ms.clone();
        l.sort_unstable();
        l[l.len() * 99 / 100]
    };
    assert!(
        p99(&unordered) < p99(&ordered),
        "p99 one-way latency {} ms unordered, {} ms ordered",
        p99(&unordered),
        p99(&ordered)
    );
}

#[test]
fn every_profile_fec_and_loss_delivers_exactly_once_in_order() {
    for profile in ["normal", "fast", "fast2", "fast3"] {
        for fec in [None, Some((10, 3))] {
            for rapid in [false, true] {
                if rapid && fec.is_none() {
                    continue;
                }
                for bbr in [false, true] {
                    for loss in [0.0, 0.1, 0.3] {
                        let link = LinkParams {
                            loss,
                            dup: 0.02,
                            delay_ms: 20,
                            jitter_ms: 10,
                        };
                        let mut cfg = config(profile, fec, rapid);
                        cfg.kcp.bbr = bbr;
                        let o = simulate(cfg, link, 300, 42, 1);
                        assert_exactly_once(
                            &o,
                            &format!("{profile} fec={fec:?} rapid={rapid} bbr={bbr} loss={loss}"),
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn key_updates_under_load_lose_nothing_on_a_lossy_reordering_link() {
    for (loss, seed) in [(0.0, 1), (0.1, 2), (0.3, 3)] {
        let link = LinkParams {
            loss,
            dup: 0.02,
            delay_ms: 20,
            jitter_ms: 10,
        };
        let mut cfg = config("fast", Some((10, 3)), true);
        cfg.rekey_interval_ms = 150;
        // 6 s of traffic: at 30% loss each way a key update's round trip
        // fails half the time, and 3 s gave 2-3 updates depending on the
        // draw of the losses.
        let o = simulate(cfg, link, 6000, seed, 0);
        let what = format!("rekeying every 150 ms at {loss} loss");
        assert_exactly_once(&o, &what);
        // Both sides moved together, many times, and nothing was refused.
        assert!(o.b_keys.rekeys >= 3, "{what}: {:?}", o.b_keys);
        assert!(
            o.a_keys.epoch.abs_diff(o.b_keys.epoch) <= 1,
            "{what}: {:?} {:?}",
            o.a_keys,
            o.b_keys
        );
        assert_eq!(o.a.auth_failures + o.b.auth_failures, 0, "{what}");
        assert_eq!(o.a_keys.unknown_phase + o.b_keys.unknown_phase, 0, "{what}");
    }
}

#[test]
fn fec_recovers_losses_without_waiting_for_retransmission() {
    let link = LinkParams {
        loss: 0.05,
        dup: 0.0,
        delay_ms: 20,
        jitter_ms: 0,
    };
    let o = simulate(config("fast", Some((10, 3)), false), link, 2000, 7, 0);
    assert_exactly_once(&o, "fec 10/3 at 5% loss");
    assert!(o.fec_recovered > 0, "FEC recovered nothing at 5% loss");
}

/// Sparse traffic (one message per 100 ms): without rapid FEC a lost packet
/// waits for a retransmission; with it, parity follows within one interval.
#[test]
fn rapid_fec_recovers_sparse_traffic() {
    let link = LinkParams {
        loss: 0.1,
        dup: 0.0,
        delay_ms: 20,
        jitter_ms: 0,
    };
    let with = simulate(config("fast", Some((10, 3)), true), link, 200, 9, 100);
    let without = simulate(config("fast", Some((10, 3)), false), link, 200, 9, 100);
    assert_exactly_once(&with, "rapid");
    assert_exactly_once(&without, "no rapid");
    assert!(with.fec_recovered > 0, "rapid FEC recovered nothing");
    // Without rapid FEC a group of sparse traffic fills only after ~1 s, so
    // its parity also rebuilds shards KCP has long retransmitted: counting
    // recoveries can't tell the two apart. Messages that missed the one-way
    // delay (+10 ms) can: with rapid FEC almost none, without it every loss.
    let late = |o: &Outcome| o.latency_ms.iter().filter(|&&l| l > 20 + 10).count();
    assert!(
        late(&with) * 10 < late(&without) && late(&with) <= 4,
        "late messages: {} with rapid FEC, {} without",
        late(&with),
        late(&without)
    );
    let _ = (with.elapsed_ms, without.elapsed_ms);
    // Latency: with rapid FEC a lost message of sparse traffic is repaired
    // within a few ms of its parity; without, it waits for the RTO (>= 100 ms).
    let worst = |o: &Outcome| {
        let mut l = o.latency_ms.clone();
        l.sort_unstable();
        l[l.len() * 95 / 100]
    };
    assert!(
        worst(&with) <= 20 + 10,
        "rapid FEC p95 one-way latency {} ms",
        worst(&with)
    );
    assert!(
        worst(&without) >= 20 + 100,
        "without rapid FEC p95 {} ms",
        worst(&without)
    );
}

/// Rapid FEC tells low-rate traffic from a flow by the datagrams of the last
/// interval or two, not by whether anything at all was sent: a lone reply a
/// few ms after the ACK of its request (sent alone) gets its parity at once,
/// while a partial group at the tail of a flow waits one interval for company.
#[test]
fn rapid_parity_leaves_at_once_for_low_rate_traffic_and_waits_in_a_flow() {
    let mut a = Session::new(
        config("fast", Some((10, 3)), true),
        7,
        &KEY_AB,
        &KEY_BA,
        2,
        0,
    )
    .unwrap();
    let send = |a: &mut Session, now: u32, packets: usize| -> usize {
        for _ in 0..packets {
            assert!(a.send_packet(&mut vec![7u8; 1200], now));
        }
        let mut tx = VecTransmit::default();
        a.flush(now, &mut tx);
        a.poll(now, &mut tx);
        tx.datagrams.len()
    };
    // Before any report the link is assumed lossy, so a lone datagram gets parity.
    assert!(
        send(&mut a, 1000, 1) > 1,
        "the first lone datagram's parity"
    );
    assert!(
        send(&mut a, 1003, 1) > 1,
        "a lone datagram 3 ms after another"
    );
    assert!(send(&mut a, 1010, 1) > 1, "a third one, 7 ms later");
    // A flow: 12 datagrams (more than a group of 10) in one flush. The full
    // group's parity leaves with it; the partial group's waits the interval.
    let flow = send(&mut a, 1020, 12);
    assert!(flow > 12, "the full group's parity");
    let mut tx = VecTransmit::default();
    a.poll(1020 + 29, &mut tx);
    assert_eq!(
        tx.datagrams.len(),
        0,
        "the flow's partial group waits an interval"
    );
    a.poll(1020 + 30, &mut tx);
    assert!(!tx.datagrams.is_empty(), "then its parity leaves");
}

fn pair() -> (Session, Session) {
    let cfg = config("fast", Some((10, 3)), false);
    (
        Session::new(cfg.clone(), 7, &KEY_AB, &KEY_BA, 2, 0).unwrap(),
        Session::new(cfg, 7, &KEY_BA, &KEY_AB, 1, 0).unwrap(),
    )
}

fn one_datagram(a: &mut Session) -> Vec<u8> {
    assert!(a.send_packet(&mut b"hello through the tunnel".to_vec(), 0));
    let mut tx = VecTransmit::default();
    a.flush(0, &mut tx);
    tx.datagrams.into_iter().next().expect("a datagram")
}

#[test]
fn tampered_datagrams_are_counted_and_never_delivered() {
    let (mut a, mut b) = pair();
    let d = one_datagram(&mut a);
    for i in 0..d.len() {
        let mut t = d.clone();
        t[i] ^= 0x40;
        let got = b.input(&mut t, 0, &mut |_p: &[u8]| {
            panic!("tampered datagram delivered")
        });
        assert_eq!(got, Received::Dropped, "flipped byte {i} accepted");
    }
    assert!(b.stats.auth_failures + b.stats.malformed + b.stats.replays >= d.len() as u64);
    let mut ok = d.clone();
    let mut got = Vec::new();
    assert_eq!(
        b.input(&mut ok, 0, &mut |p: &[u8]| got.push(p.to_vec())),
        Received::Data
    );
    assert_eq!(got, vec![b"hello through the tunnel".to_vec()]);
}

#[test]
fn truncated_replayed_and_foreign_datagrams_are_dropped() {
    let (mut a, mut b) = pair();
    let d = one_datagram(&mut a);
    for n in 0..d.len() {
        let mut t = d[..n].to_vec();
        assert_eq!(
            b.input(&mut t, 0, &mut |_p: &[u8]| panic!("truncated delivered")),
            Received::Dropped
        );
    }
    let mut first = d.clone();
    let mut count = 0;
    b.input(&mut first, 0, &mut |_p: &[u8]| count += 1);
    let mut again = d.clone();
    assert_eq!(
        b.input(&mut again, 0, &mut |_p: &[u8]| count += 1),
        Received::Dropped
    );
    assert_eq!(count, 1);
    assert_eq!(b.stats.replays, 1);

    // A session keyed differently (another secret) can't speak to B.
    let cfg = config("fast", Some((10, 3)), false);
    let mut stranger = Session::new(cfg, 7, &[0x33; 32], &[0x44; 32], 2, 0).unwrap();
    let mut f = one_datagram(&mut stranger);
    assert_eq!(
        b.input(&mut f, 0, &mut |_p: &[u8]| panic!("foreign delivered")),
        Received::Dropped
    );
    assert!(b.stats.auth_failures >= 1);
}

#[test]
fn keepalive_and_idle_timeout() {
    let mut cfg = config("fast", None, false);
    cfg.keepalive_ms = 1000;
    cfg.idle_timeout_ms = 3500;
    let mut a = Session::new(cfg.clone(), 7, &KEY_AB, &KEY_BA, 2, 0).unwrap();
    let mut b = Session::new(cfg, 7, &KEY_BA, &KEY_AB, 1, 0).unwrap();
    // A keeps talking (keepalives), B hears it and stays up; A hears nothing and times out.
    let mut now = 0;
    while now < 5000 {
        let mut tx = VecTransmit::default();
        a.poll(now, &mut tx);
        for mut d in tx.datagrams {
            // Keepalives, and the path-MTU probe that follows the start.
            let got = b.input(&mut d, now, &mut |_p: &[u8]| {});
            assert!(
                matches!(got, Received::Keepalive | Received::Probe),
                "{got:?}"
            );
        }
        let mut sink = VecTransmit::default();
        b.poll(now, &mut sink);
        now += 50;
    }
    assert!(
        b.stats.keepalives_in >= 3,
        "B heard {} keepalives",
        b.stats.keepalives_in
    );
    assert_eq!(b.stats.keepalives_in, a.stats.keepalives_out);
    assert!(a.closed().is_some(), "A should have timed out");
    assert!(b.closed().is_none(), "B heard keepalives and must stay up");
}

// --- adaptive FEC (docs/protocol.md, section 6.7) ---------------------------

fn bulk(loss: f64, seed: u64) -> Outcome {
    let link = LinkParams {
        loss,
        dup: 0.0,
        delay_ms: 20,
        jitter_ms: 0,
    };
    simulate(config("fast", Some((10, 3)), false), link, 4000, seed, 0)
}

#[test]
fn clean_link_sends_no_parity_once_reports_arrive() {
    let o = bulk(0.0, 11);
    assert_exactly_once(&o, "clean link");
    assert!(
        o.b.feedback_out > 0 && o.a.feedback_in > 0,
        "no reports: {:?}",
        o.b
    );
    assert_eq!(
        o.a.fec_parity, 0.0,
        "parity still {} on a clean link",
        o.a.fec_parity
    );
    assert!(
        o.a.fec_loss_ppm < 1000,
        "loss estimate {} ppm",
        o.a.fec_loss_ppm
    );
    // Full parity (3 per 10) until the first reports, then none at all.
    assert!(o.enc_half.parity_shards > 0, "should start at full parity");
    assert_eq!(o.late_parity_ratio(), 0.0);
    // On the wire: data shards plus a report per 100 ms, nothing else.
    let data = o.enc_end.data_shards - o.enc_half.data_shards;
    assert!(data > 1000);
    // The receiver batches ACKs it has nothing to send with (up to 4, or
    // 1 ms): far fewer datagrams back than data datagrams received.
    let data_in = o.enc_end.data_shards;
    assert!(
        o.b.datagrams_out * 2 < data_in,
        "{} datagrams back for {data_in} data datagrams",
        o.b.datagrams_out
    );
}

#[test]
fn lossy_link_raises_parity_and_fec_recovers() {
    let o = bulk(0.1, 12);
    assert_exactly_once(&o, "10% loss");
    // Full groups may fail 5% of the time on average (section 6.7): a
    // mix of 2 and 3 parity shards per 10 (2.79 for exactly 10%).
    assert!(
        (2.0..=3.0).contains(&o.a.fec_parity),
        "parity {} at 10% loss",
        o.a.fec_parity
    );
    assert!(
        (50_000..200_000).contains(&o.a.fec_loss_ppm),
        "loss estimate {} ppm for 10% loss",
        o.a.fec_loss_ppm
    );
    assert!(
        o.late_parity_ratio() >= 0.1,
        "parity ratio {}",
        o.late_parity_ratio()
    );
    assert!(o.fec_recovered > 100, "recovered only {}", o.fec_recovered);
}

#[test]
fn parity_follows_the_loss_rate() {
    let low = bulk(0.01, 13);
    let high = bulk(0.05, 13);
    assert_exactly_once(&low, "1% loss");
    assert_exactly_once(&high, "5% loss");
    // With 10% of full groups failing on average (binomial, section 6.7),
    // 1% needs no parity shard per 10 data shards (9.6% fail without) and
    // 5% 1.02 (0 or 1, mostly 1); the measured loss wanders around the
    // true rate.
    assert!(
        (0.0..=0.3).contains(&low.a.fec_parity),
        "1%: {}",
        low.a.fec_parity
    );
    assert!(
        (0.8..=1.5).contains(&high.a.fec_parity),
        "5%: {}",
        high.a.fec_parity
    );
    assert!(low.late_parity_ratio() < high.late_parity_ratio());
}

/// Seals what the peer of `pair()`'s A would send it (B → A key, A's id).
fn as_b(counter: u64, msg_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut s = Sealer::new(CipherKind::Aes256Gcm, &KEY_BA, 2);
    s.set_counter_for_testing(counter);
    let mut d = Vec::new();
    s.seal_into(msg_type, payload, &mut d).unwrap();
    d
}

fn report(expected: u32, lost: u32) -> Vec<u8> {
    let mut p = vec![1u8];
    p.extend_from_slice(&expected.to_le_bytes());
    p.extend_from_slice(&lost.to_le_bytes());
    p
}

#[test]
fn bad_feedback_is_dropped_and_counted_good_feedback_adapts() {
    let (mut a, _) = pair();
    assert_eq!(a.stats.fec_parity, 3.0, "full parity before any report");
    let mut no = |_p: &[u8]| panic!("feedback delivered as a packet");
    // Authentic but malformed: short, unknown version, more lost than sent.
    let mut bad_version = report(100, 0);
    bad_version[0] = 2;
    for (i, p) in [
        vec![],
        vec![1u8],
        report(100, 0)[..8].to_vec(),
        bad_version,
        report(10, 11),
    ]
    .into_iter()
    .enumerate()
    {
        let mut d = as_b(i as u64, MSG_FEEDBACK, &p);
        assert_eq!(a.input(&mut d, 0, &mut no), Received::Dropped, "report {i}");
    }
    assert_eq!(a.stats.malformed, 5);
    // Forged: another key.
    let mut s = Sealer::new(CipherKind::Aes256Gcm, &[0x55; 32], 2);
    s.set_counter_for_testing(100);
    let mut f = Vec::new();
    s.seal_into(MSG_FEEDBACK, &report(1000, 0), &mut f).unwrap();
    assert_eq!(a.input(&mut f, 0, &mut no), Received::Dropped);
    assert_eq!(a.stats.auth_failures, 1);
    // A data datagram relabelled as feedback fails authentication too.
    let mut relabel = as_b(10, MSG_DATA, &report(1000, 0));
    relabel[0] = MSG_FEEDBACK;
    assert_eq!(a.input(&mut relabel, 0, &mut no), Received::Dropped);
    assert_eq!(a.stats.auth_failures, 2);
    assert_eq!((a.stats.feedback_in, a.stats.fec_parity), (0, 3.0));

    // Genuine reports of a clean link bring the estimate down to 0.5% and
    // parity to zero (each moves the estimate a quarter of the way: 11
    // from the 10% prior)...
    let mut c = 20;
    while a.stats.fec_loss_ppm > 5_000 {
        let mut d = as_b(c, MSG_FEEDBACK, &report(1000, 0));
        assert_eq!(a.input(&mut d, 10, &mut no), Received::Feedback);
        c += 1;
        assert!(
            c < 35,
            "loss estimate stuck at {} ppm",
            a.stats.fec_loss_ppm
        );
    }
    assert_eq!(a.stats.fec_parity, 0.0);
    // ...and a trailing byte (a later version's field) is ignored.
    let mut longer = report(1000, 0);
    longer.push(0xAA);
    let mut d = as_b(c, MSG_FEEDBACK, &longer);
    assert_eq!(a.input(&mut d, 10, &mut no), Received::Feedback);
    // Loss that stays brings it back up: at first only as far as the
    // link's recent floor plus 2% (a sudden rise looks like a queue
    // overflowing), fully once the floor has caught up (3 s later at most).
    let mut c = c + 1;
    let mut t = 20;
    let mut lossy = |a: &mut Session, t: u32, c: &mut u64| {
        let mut d = as_b(*c, MSG_FEEDBACK, &report(1000, 80));
        assert_eq!(a.input(&mut d, t, &mut no), Received::Feedback);
        *c += 1;
    };
    lossy(&mut a, t, &mut c);
    assert!(
        a.stats.fec_loss_ppm <= 10_000,
        "one 8% report moved the estimate to {} ppm",
        a.stats.fec_loss_ppm
    );
    while t < 4_000 {
        t += 100;
        lossy(&mut a, t, &mut c);
    }
    assert!(
        a.stats.fec_parity > 0.5 && a.stats.fec_loss_ppm > 60_000,
        "parity {} ({} ppm) after 4 s of 8% loss",
        a.stats.fec_parity,
        a.stats.fec_loss_ppm
    );
    // Reports that stop coming restore full parity at the next flush.
    let mut d = as_b(c, MSG_FEEDBACK, &report(1000, 0));
    a.input(&mut d, t + 10, &mut |_p: &[u8]| {
        panic!("feedback delivered as a packet")
    });
    let mut tx = VecTransmit::default();
    a.flush(t + 10 + 2000, &mut tx);
    assert_eq!(a.stats.fec_parity, 3.0);
}

#[test]
fn a_burst_of_loss_above_the_steady_level_barely_moves_parity() {
    // The link loses 5%; then its bottleneck queue overflows for 0.5 s and
    // the reports say 30%. Parity for 30% would only add to the full
    // queue: the reports count for twice the 5% floor plus sampling noise
    // (3 sd of 1000 datagrams) at most: ~10% after five of them instead of
    // 24%, were they taken at their word.
    let (mut a, _) = pair();
    let mut no = |_p: &[u8]| panic!("feedback delivered as a packet");
    let mut c = 0;
    let mut feed = |a: &mut Session, t: u32, lost: u32| {
        let mut d = as_b(c, MSG_FEEDBACK, &report(1000, lost));
        assert_eq!(a.input(&mut d, t, &mut no), Received::Feedback);
        c += 1;
    };
    for i in 0..40 {
        feed(&mut a, i * 100, 50);
    }
    let steady = a.stats.fec_loss_ppm;
    assert!((45_000..=55_000).contains(&steady), "{steady} ppm at 5%");
    for i in 40..45 {
        feed(&mut a, i * 100, 300);
    }
    let burst = a.stats.fec_loss_ppm;
    assert!(
        burst <= 120_000,
        "a congestion burst took the estimate from {steady} to {burst} ppm"
    );
}

#[test]
fn no_feedback_while_idle_or_without_fec() {
    for fec in [Some((10, 3)), None] {
        let mut cfg = config("fast", fec, true);
        cfg.keepalive_ms = 1000;
        let mut a = Session::new(cfg.clone(), 7, &KEY_AB, &KEY_BA, 2, 0).unwrap();
        let mut b = Session::new(cfg, 7, &KEY_BA, &KEY_AB, 1, 0).unwrap();
        let mut got = 0;
        let mut after_traffic = None;
        for now in 0..30_000u32 {
            // Traffic for the first 2 s, then nothing but keepalives.
            if now < 2000 && now % 10 == 0 {
                assert!(a.send_packet(&mut [0x45; 200], now));
            }
            let mut tx = VecTransmit::default();
            a.flush(now, &mut tx);
            a.poll(now, &mut tx);
            for mut d in tx.datagrams.drain(..) {
                b.input(&mut d, now + 1, &mut |_p: &[u8]| got += 1);
            }
            b.flush(now, &mut tx);
            b.poll(now, &mut tx);
            for mut d in tx.datagrams.drain(..) {
                a.input(&mut d, now + 1, &mut |_p: &[u8]| {});
            }
            if now == 2500 {
                after_traffic = Some((a.stats.feedback_out, b.stats.feedback_out));
            }
        }
        assert_eq!(got, 200);
        assert!(
            b.stats.keepalives_in >= 20,
            "{fec:?}: idle link carried no keepalives"
        );
        let (fa, fb) = after_traffic.unwrap();
        assert_eq!(
            (a.stats.feedback_out, b.stats.feedback_out),
            (fa, fb),
            "{fec:?}: feedback sent while idle"
        );
        if fec.is_some() {
            // ~one report per 100 ms of the 2 s of traffic, each way (A hears B's ACKs).
            assert!((10..=25).contains(&fb), "B sent {fb} reports");
            assert!(fa > 0 && fa <= 25, "A sent {fa} reports");
        } else {
            assert_eq!((fa, fb), (0, 0));
        }
    }
}

/// A session idle after a bulk transfer gives back what the transfer grew:
/// the process's heap shrinks to about where it started.
#[test]
fn an_idle_session_gives_back_its_buffers() {
    let cfg = config("fast", Some((10, 3)), true);
    let mut a = Session::new(cfg.clone(), 7, &KEY_AB, &KEY_BA, 2, 0).unwrap();
    let mut b = Session::new(cfg, 7, &KEY_BA, &KEY_AB, 1, 0).unwrap();
    let heap = |s: &Session| s.heap_bytes();
    let idle_size = heap(&a) + heap(&b);
    let mut now = 0u32;
    fn one_way(x: &mut Session, y: &mut Session, now: u32) {
        let mut tx = VecTransmit::default();
        x.flush(now, &mut tx);
        x.poll(now, &mut tx);
        for mut d in tx.datagrams {
            y.input(&mut d, now, &mut |_p: &[u8]| {});
        }
    }
    let pump = |a: &mut Session, b: &mut Session, now: u32| {
        one_way(a, b, now);
        one_way(b, a, now);
    };
    // 20 MB one way, pushed faster than it drains: the queues fill.
    let mut sent = 0;
    while sent < 16_000 {
        while a.wants_packets() && sent < 16_000 {
            a.send_packet(&mut vec![0x45; 1280], now);
            sent += 1;
        }
        pump(&mut a, &mut b, now);
        now += 5;
    }
    let busy = heap(&a) + heap(&b);
    for _ in 0..4000 {
        pump(&mut a, &mut b, now);
        now += 10;
    }
    let idle = heap(&a) + heap(&b);
    eprintln!("heap: start {idle_size}, busy {busy}, idle again {idle}");
    assert!(
        busy > 4 * idle_size,
        "busy {busy} idle at start {idle_size}"
    );
    assert!(
        idle < 2 * idle_size,
        "idle again: {idle} (start {idle_size}, busy {busy})"
    );
}

#[test]
fn huge_loss_reports_keep_the_measured_loss_in_range() {
    // An authenticated but broken peer reporting everything lost, as much
    // as a report can say, thousands of times within one window: the
    // measured loss stays 100%, it does not overflow.
    let (mut a, _) = pair();
    let mut no = |_p: &[u8]| panic!("feedback delivered as a packet");
    for c in 0..5000u64 {
        let mut d = as_b(c, MSG_FEEDBACK, &report(u32::MAX, u32::MAX));
        assert_eq!(a.input(&mut d, 10, &mut no), Received::Feedback);
    }
    assert_eq!(a.stats.loss_ppm, 1_000_000);
}

/// A download and, with `ping`, a packet of a sparse flow every 100 ms,
/// through flow queueing over a link losing 5% one way; returns the
/// sender's FEC counters and the parity it chose for full groups.
fn download_beside(ping: bool) -> (EncoderStats, f64) {
    let mut cfg = config("fast", Some((10, 3)), false);
    cfg.flow_queueing = true;
    let mut a = Session::new(cfg.clone(), 7, &KEY_AB, &KEY_BA, 2, 0).unwrap();
    let mut b = Session::new(cfg, 7, &KEY_BA, &KEY_AB, 1, 0).unwrap();
    let mut rng = SmallRng::seed_from_u64(5);
    for now in 0..4000u32 {
        for _ in 0..3 {
            a.send_packet(&mut flow_packet(0, 5000, 0, 1200), now);
        }
        if ping && now % 100 == 50 {
            a.send_packet(&mut flow_packet(0, 6000, 0, 84), now);
        }
        let mut tx = VecTransmit::default();
        a.flush(now, &mut tx);
        a.poll(now, &mut tx);
        for mut d in tx.datagrams {
            if rng.random::<f64>() >= 0.05 {
                b.input(&mut d, now, &mut |_p: &[u8]| {});
            }
        }
        let mut back = VecTransmit::default();
        b.flush(now, &mut back);
        b.poll(now, &mut back);
        for mut d in back.datagrams {
            a.input(&mut d, now, &mut |_p: &[u8]| {});
        }
    }
    (a.fec_encoder_stats().unwrap(), a.stats.fec_parity)
}

/// The group that takes a ping sharing the tunnel with a download gets the
/// strict parity of a group closed early (3 shards at 5% loss), not the 1-2
/// that full groups get there, so it almost never waits for a retransmission;
/// the download's own groups keep the adaptive count.
#[test]
fn a_sparse_flows_packet_gets_strict_parity_in_a_full_group() {
    let (with, parity) = download_beside(true);
    let (without, _) = download_beside(false);
    assert!(
        parity < 2.5,
        "full groups got {parity} parity shards at 5% loss"
    );
    assert_eq!(without.protected_groups, 0, "{without:?}");
    // 40 pings; a few land in groups rapid FEC would close anyway or that
    // already had 3, and the padding in front of a ping (`sparse_markers`)
    // may end the group before the ping's.
    assert!(
        (30..=80).contains(&with.protected_groups),
        "protected {} groups for 40 pings: {with:?}",
        with.protected_groups
    );
}

/// A message of several segments whose first segment the peer acknowledged
/// and whose second it lost has not been delivered: the next message of its
/// flow must name it and wait for it, not overtake it.
#[test]
fn a_partly_acknowledged_message_is_not_overtaken_by_the_next_of_its_flow() {
    let cfg = config("fast", None, false);
    let mut a = Session::new(cfg.clone(), 7, &KEY_AB, &KEY_BA, 2, 0).unwrap();
    let mut b = Session::new(cfg, 7, &KEY_BA, &KEY_AB, 1, 0).unwrap();
    let seq = |p: &[u8]| u32::from_le_bytes(p[28..32].try_into().unwrap());
    let mut got = Vec::new();
    let mut now = 0;
    // Three segments; the datagram with the second is lost.
    assert!(a.send_packet(&mut flow_packet(0, 5000, 1, 3000), now));
    let mut tx = VecTransmit::default();
    a.flush(now, &mut tx);
    assert_eq!(tx.datagrams.len(), 3, "one segment per datagram");
    for (i, mut d) in tx.datagrams.into_iter().enumerate() {
        if i != 1 {
            b.input(&mut d, now, &mut |p: &[u8]| got.push(seq(p)));
        }
    }
    // B's ACKs reach A: the first segment is below `una`, the last acknowledged.
    now += 5;
    let mut back = VecTransmit::default();
    b.flush(now, &mut back);
    for mut d in back.datagrams {
        a.input(&mut d, now, &mut |_p: &[u8]| {});
    }
    // The flow's next packet, one segment, arrives before the lost one is resent.
    assert!(a.send_packet(&mut flow_packet(0, 5000, 2, 100), now));
    let mut tx = VecTransmit::default();
    a.flush(now, &mut tx);
    assert!(!tx.datagrams.is_empty());
    for mut d in tx.datagrams {
        b.input(&mut d, now, &mut |p: &[u8]| got.push(seq(p)));
    }
    assert!(
        got.is_empty(),
        "delivered ahead of its flow's previous packet: {got:?}"
    );
    // The retransmission repairs the first; both go out, in order.
    while got.len() < 2 && now < 5000 {
        now += 1;
        let mut tx = VecTransmit::default();
        a.flush(now, &mut tx);
        a.poll(now, &mut tx);
        for mut d in tx.datagrams {
            b.input(&mut d, now, &mut |p: &[u8]| got.push(seq(p)));
        }
        let mut back = VecTransmit::default();
        b.flush(now, &mut back);
        b.poll(now, &mut back);
        for mut d in back.datagrams {
            a.input(&mut d, now, &mut |_p: &[u8]| {});
        }
    }
    assert_eq!(got, [1, 2]);
}
