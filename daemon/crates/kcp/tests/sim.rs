//! Deterministic simulations of two `Kcp` endpoints over a simulated link.
mod common;

use common::*;
use kcpvpn_kcp::{
    carries_segment, Kcp, KcpConfig, KcpError, KcpStats, CMD_PUSH, CMD_WASK, CMD_WINS,
};
use proptest::prelude::*;

fn cfg(profile: &str, nc: bool) -> KcpConfig {
    let mut c = KcpConfig::profile(profile).unwrap();
    c.nc = nc;
    c.mtu = 1350;
    c
}

fn no_hook(_: &mut Sim, _: &mut Kcp, _: &mut Kcp) {}

/// Every profile, congestion control on and off, loss 0–30% with
/// duplication, jitter and reordering, both directions at once, periodic
/// update and on-demand flush: every message exactly once, in order, intact.
#[test]
fn every_profile_delivers_exactly_once_in_order() {
    let mut runs = 0;
    for profile in kcpvpn_kcp::PROFILES {
        for nc in [true, false] {
            for (k, loss) in [0.0, 0.1, 0.3].into_iter().enumerate() {
                let seed = 1000 + runs as u64;
                let mut a = Kcp::new(0x1234, cfg(profile, nc));
                let mut b = Kcp::new(0x1234, cfg(profile, nc));
                let mut sim = Sim::new(LinkCfg::lossy(loss), LinkCfg::lossy(loss), seed);
                sim.on_demand = k % 2 == 1 || profile == "fast3";
                let mut sa = Stream::new(seed, 150, 9000);
                let mut sb = Stream::new(seed + 1, 40, 3000);
                sim.run(
                    &mut a,
                    &mut b,
                    &mut sa,
                    &mut sb,
                    600_000,
                    3_000,
                    &mut no_hook,
                )
                .unwrap_or_else(|e| panic!("{profile} nc={nc} loss={loss}: {e}"));
                let s = a.stats();
                assert_eq!(s.messages_sent, 150);
                assert_eq!(b.stats().messages_recv, 150);
                if loss > 0.0 {
                    assert!(
                        s.retransmits + s.fast_retransmits > 0,
                        "{profile} {loss}: no retransmission"
                    );
                    assert!(
                        b.stats().dup_segments > 0,
                        "duplicating link but no duplicate counted"
                    );
                }
                assert_eq!(a.wait_snd(), 0);
                let rs = b.stats();
                assert_eq!(
                    (rs.rcv_buf, rs.rcv_queue),
                    (0, 0),
                    "receiver holds segments after delivering all"
                );
                assert!(!a.is_dead() && !b.is_dead());
                runs += 1;
            }
        }
    }
    assert_eq!(runs, 24);
}

/// Unordered delivery at 10–30% loss with duplication and reordering, both
/// directions, packet-sized messages and two-fragment ones: every message
/// exactly once and intact, and some handed out before an earlier gap was
/// filled.
#[test]
fn unordered_delivers_exactly_once_and_early() {
    for (k, loss) in [0.1, 0.3].into_iter().enumerate() {
        let seed = 77 + k as u64;
        let mut c = cfg("fast", true);
        c.unordered = true;
        let mut a = Kcp::new(0x1234, c.clone());
        let mut b = Kcp::new(0x1234, c);
        let mut sim = Sim::new(LinkCfg::lossy(loss), LinkCfg::lossy(loss), seed);
        let mut sa = Stream::fixed(seed, 400, 1000);
        sa.any_order = true;
        let mut sb = Stream::fixed(seed + 1, 100, 2500);
        sb.any_order = true;
        sim.run(
            &mut a,
            &mut b,
            &mut sa,
            &mut sb,
            600_000,
            3_000,
            &mut no_hook,
        )
        .unwrap_or_else(|e| panic!("loss={loss}: {e}"));
        assert_eq!(b.stats().messages_recv, 400);
        assert_eq!(a.stats().messages_recv, 100);
        assert!(b.stats().early_deliveries > 0, "loss={loss}: nothing early");
        // Two-fragment messages are never handed out early.
        assert_eq!(a.stats().early_deliveries, 0);
        let rs = b.stats();
        assert_eq!((rs.rcv_buf, rs.rcv_queue), (0, 0), "segments left behind");
    }
}

/// A clean link: no retransmissions at all, and with congestion control the
/// window opens beyond its initial value.
#[test]
fn clean_link_needs_no_retransmission_and_cwnd_grows() {
    let mut a = Kcp::new(1, cfg("fast", false));
    let mut b = Kcp::new(1, cfg("fast", false));
    let mut sim = Sim::new(LinkCfg::clean(25), LinkCfg::clean(25), 7);
    sim.on_demand = true;
    let mut sa = Stream::fixed(7, 2000, 1300);
    let mut sb = Stream::empty();
    sim.run(&mut a, &mut b, &mut sa, &mut sb, 120_000, 100, &mut no_hook)
        .unwrap();
    let s = a.stats();
    assert_eq!((s.retransmits, s.fast_retransmits), (0, 0));
    assert!(s.cwnd > 8, "cwnd stayed at {}", s.cwnd);
    assert!(
        (45..=60).contains(&s.srtt),
        "srtt {} for a 50 ms RTT",
        s.srtt
    );
    assert_eq!(b.stats().dup_segments, 0);
}

/// One lost segment in a stream is repaired by fast retransmit (after two
/// skipping ACKs), not by the RTO.
#[test]
fn single_loss_is_repaired_by_fast_retransmit() {
    let mut c = cfg("fast", true);
    c.mtu = 200;
    let mut a = Kcp::new(1, c.clone());
    let mut b = Kcp::new(1, c);
    for i in 0..10u32 {
        a.send(&message(1, i, 150)).unwrap();
    }
    let mut dgrams = Vec::new();
    a.flush(0, &mut |d| dgrams.push(d.to_vec()));
    assert_eq!(
        dgrams.len(),
        10,
        "one 174-byte segment per 200-byte datagram"
    );
    // Segment 0 is lost; the others arrive, each acknowledged at once.
    for (i, d) in dgrams.iter().enumerate().skip(1) {
        b.input(d, 10).unwrap();
        let mut acks = Vec::new();
        b.flush(10, &mut |d| acks.push(d.to_vec()));
        for ack in acks {
            a.input(&ack, 20 + i as u32).unwrap();
        }
    }
    let mut again = Vec::new();
    a.flush(30, &mut |d| again.push(d.to_vec()));
    assert_eq!(again.len(), 1);
    assert_eq!(
        (
            again[0][4],
            u32::from_le_bytes(again[0][12..16].try_into().unwrap())
        ),
        (CMD_PUSH, 0)
    );
    assert_eq!((a.stats().fast_retransmits, a.stats().retransmits), (1, 0));
    b.input(&again[0], 40).unwrap();
    for i in 0..10u32 {
        assert_eq!(b.recv_vec().unwrap(), message(1, i, 150));
    }
    let mut acks = Vec::new();
    b.flush(40, &mut |d| acks.push(d.to_vec()));
    for ack in acks {
        a.input(&ack, 50).unwrap();
    }
    assert_eq!(a.stats().unneeded_retransmits, 0, "it repaired a loss");
}

/// A segment retransmitted needlessly is counted (its ACK echoes the
/// timestamp of a copy older than the last retransmission); a segment whose
/// only retransmission repaired a loss is not, and a segment counts once
/// however many copies arrive.
#[test]
fn unneeded_retransmissions_are_counted() {
    for original_arrives in [true, false] {
        let c = cfg("fast", true);
        let mut a = Kcp::new(1, c.clone());
        let mut b = Kcp::new(1, c);
        a.send(&message(1, 0, 100)).unwrap();
        let mut first = Vec::new();
        a.flush(0, &mut |d| first.push(d.to_vec()));
        // Nothing comes back in time: the timeout resends, twice.
        let mut copies = Vec::new();
        let mut now = 0;
        while copies.len() < 2 {
            now += 10;
            a.update(now, &mut |d| {
                if carries_segment(d, 0) {
                    copies.push(d.to_vec());
                }
            });
        }
        assert_eq!(a.stats().retransmits, 2);
        if original_arrives {
            copies.insert(0, first[0].clone());
        }
        for d in copies {
            b.input(&d, now + 1).unwrap();
            let mut acks = Vec::new();
            b.flush(now + 1, &mut |x| acks.push(x.to_vec()));
            for ack in acks {
                a.input(&ack, now + 2).unwrap();
            }
        }
        assert_eq!(b.recv_vec().unwrap(), message(1, 0, 100));
        // Lost: the first retransmission was needed, the second was not.
        assert_eq!(
            a.stats().unneeded_retransmits,
            1,
            "original arrived: {original_arrives}"
        );
    }
}

/// Times at which `a` transmits its one segment over a link that drops
/// everything, driven by check()/update() only.
fn retransmit_times(c: KcpConfig, until: u32) -> Vec<u32> {
    let interval = c.interval;
    let mut a = Kcp::new(1, c);
    a.send(b"x").unwrap();
    let mut times = Vec::new();
    let mut now = 0u32;
    while now < until {
        let mut n = 0;
        a.update(now, &mut |d| n += (d[4] == CMD_PUSH) as usize);
        if n > 0 {
            times.push(now);
        }
        let next = a.check(now);
        assert!(
            next.wrapping_sub(now) <= interval,
            "check beyond one interval"
        );
        now = next.max(now + 1);
    }
    times
}

/// RTO backoff as in the reference: without nodelay the first deadline is
/// rto + rto/8 and the RTO doubles; with nodelay it grows by half.
#[test]
fn rto_backoff_matches_the_reference() {
    // normal: initial rto 200: 0, 225 (200+25), 625 (+400), 1425 (+800), then
    // +1600 in the reference, but a backoff never exceeds a second here (so
    // traffic resumes within a second of a path's return): 2425, 3425.
    assert_eq!(
        retransmit_times(cfg("normal", true), 3500),
        [0, 225, 625, 1425, 2425, 3425]
    );
    // fast2 (nodelay): 0, 200, 500 (+300), 950 (+450), 1625 (+675).
    assert_eq!(
        retransmit_times(cfg("fast2", true), 1700),
        [0, 200, 500, 950, 1625]
    );
}

/// The sender's counters after 200 short messages over a clean link with
/// `delay` ms each way (its RTT estimate settled).
fn after_a_short_stream(c: KcpConfig, delay: u32) -> KcpStats {
    let mut a = Kcp::new(1, c.clone());
    let mut b = Kcp::new(1, c);
    let mut sim = Sim::new(LinkCfg::clean(delay), LinkCfg::clean(delay), 3);
    sim.on_demand = true;
    let mut sa = Stream::fixed(3, 200, 100);
    let mut sb = Stream::empty();
    sim.run(&mut a, &mut b, &mut sa, &mut sb, 60_000, 0, &mut no_hook)
        .unwrap();
    a.stats()
}

/// Minimum RTO: 30 ms with nodelay, 100 ms without, whatever the RTT.
#[test]
fn minimum_rto_depends_on_nodelay() {
    for (profile, want) in [("fast3", 30), ("fast", 100)] {
        let s = after_a_short_stream(cfg(profile, true), 1);
        assert!(s.srtt <= 3);
        // rto = srtt + max(interval, 4 rttvar), floored at the minimum.
        let interval = KcpConfig::profile(profile).unwrap().interval;
        assert_eq!(
            s.rto,
            want.max(s.srtt + interval.max(4 * s.rttvar)),
            "{profile}"
        );
    }
}

/// With bbr the RTO follows the path (srtt + max(10 ms, 4 rttvar), at least
/// 30 ms) instead of the profile's 100 ms minimum, and backs off by half.
#[test]
fn bbr_rto_follows_the_round_trip() {
    let mut c = cfg("fast", true);
    c.bbr = true;
    let s = after_a_short_stream(c.clone(), 20);
    assert!((40..=42).contains(&s.srtt), "srtt {}", s.srtt);
    assert_eq!(s.rto, s.srtt + 10.max(4 * s.rttvar));
    // Nothing acknowledged: the initial 200 ms, +rto/8 for the first
    // deadline as without nodelay, then x1.5: 0, 225, 525, 975.
    assert_eq!(retransmit_times(c, 1000), [0, 225, 525, 975]);
}

/// Times at which a message of `a` reaches `b` over 20 ms each way, when a
/// message is sent every 10 ms and the first transmission of the last one
/// (a tail: nothing follows it to reveal the loss) is dropped. `(sent, got)`.
fn tail_loss_repair(c: KcpConfig, count: u32) -> (u32, u32) {
    let mut a = Kcp::new(1, c.clone());
    let mut b = Kcp::new(1, c);
    let mut wire: Vec<(u32, bool, Vec<u8>)> = Vec::new(); // (due, to b, datagram)
    let mut dropped = false;
    let (mut sent_last, mut got_last) = (None, None);
    let mut received = 0u32;
    for now in 0..5_000u32 {
        if now % 10 == 0 && now / 10 < count {
            a.send(&message(1, now / 10, 200)).unwrap();
            if now / 10 == count - 1 {
                sent_last = Some(now);
            }
        }
        let mut out_a = Vec::new();
        let mut out_b = Vec::new();
        let due: Vec<_> = wire.iter().filter(|w| w.0 == now).cloned().collect();
        wire.retain(|w| w.0 != now);
        for (_, to_b, d) in due {
            if to_b {
                b.input(&d, now).unwrap();
                b.flush(now, &mut |x| out_b.push(x.to_vec()));
            } else {
                a.input(&d, now).unwrap();
            }
        }
        a.update(now, &mut |x| out_a.push(x.to_vec()));
        b.update(now, &mut |x| out_b.push(x.to_vec()));
        for d in out_a {
            if !dropped && carries_segment(&d, count - 1) {
                dropped = true;
                continue;
            }
            wire.push((now + 20, true, d));
        }
        for d in out_b {
            wire.push((now + 20, false, d));
        }
        while let Some(m) = b.recv_vec() {
            assert_eq!(m, message(1, received, 200));
            received += 1;
            if received == count {
                got_last = Some(now);
            }
        }
        if got_last.is_some() {
            break;
        }
    }
    assert!(dropped);
    (
        sent_last.unwrap(),
        got_last.expect("the tail never arrived"),
    )
}

/// A lost tail costs bbr a round trip and a little (the timeout is all
/// there is to find it), not the 100 ms minimum RTO and then some: what
/// made a flow that FEC could not cover stall (an inner TCP through 5%
/// loss without parity for bulk groups moved 19 Mbit/s, with this 64).
#[test]
fn bbr_repairs_a_lost_tail_within_a_round_trip_and_a_little() {
    let mut c = cfg("fast", true);
    c.bbr = true;
    let (sent, got) = tail_loss_repair(c.clone(), 100);
    // rto 50 + 6 (rto/8) + 20 one way: 76 after sending, not 20.
    let wait = got - sent;
    assert!((70..=85).contains(&wait), "tail repaired after {wait} ms");
    // Without bbr the profile's minimum applies: 100 + 12 + 20.
    c.bbr = false;
    let (sent, got) = tail_loss_repair(c, 100);
    assert!(got - sent >= 130, "{}", got - sent);
}

/// Dead link: when the link drops everything, `is_dead` turns true on the
/// `dead_link`-th transmission of one segment, and not before.
#[test]
fn dead_link_is_detected() {
    for (profile, dead_link) in [("fast3", 3u32), ("fast3", 20), ("normal", 5)] {
        let mut c = cfg(profile, true);
        c.dead_link = dead_link;
        let mut a = Kcp::new(1, c);
        a.send(b"into the void").unwrap();
        let mut now = 0u32;
        while !a.is_dead() && now < 10_000_000 {
            a.update(now, &mut |_| {});
            if !a.is_dead() {
                assert!(a.stats().segments_sent < dead_link as u64);
            }
            now = a.check(now).max(now + 1);
        }
        assert!(a.is_dead(), "{profile}: dead_link {dead_link} not detected");
        let s = a.stats();
        assert_eq!(
            (s.segments_sent, s.retransmits),
            (dead_link as u64, dead_link as u64 - 1)
        );
    }
    // A working link that dies is detected too; a healthy one never is.
    let mut a = Kcp::new(1, cfg("fast3", true));
    let mut b = Kcp::new(1, cfg("fast3", true));
    let mut sim = Sim::new(LinkCfg::lossy(0.2), LinkCfg::lossy(0.2), 6);
    let (mut sa, mut sb) = (Stream::fixed(6, 300, 800), Stream::empty());
    sim.run(&mut a, &mut b, &mut sa, &mut sb, 300_000, 0, &mut no_hook)
        .unwrap();
    assert!(!a.is_dead() && !b.is_dead());
    sim.ab.blackhole = true;
    sim.ba.blackhole = true;
    let (mut sa, mut sb) = (Stream::fixed(7, 1, 100), Stream::empty());
    let r = sim.run(
        &mut a,
        &mut b,
        &mut sa,
        &mut sb,
        sim.t + 600_000,
        0,
        &mut |sim: &mut Sim, a: &mut Kcp, _| {
            if a.is_dead() {
                sim.t = u64::MAX / 2; // stop: nothing more to learn
            }
        },
    );
    assert!(r.is_err());
    assert!(a.is_dead());
}

/// A receiver that stops reading: its window closes, the sender stops and
/// probes (WASK) when the receiver's "window open" (WINS) is lost; once
/// reading resumes everything arrives.
#[test]
fn window_probing_when_the_receiver_stops_reading() {
    let mut c = cfg("fast2", true);
    c.rcv_wnd = 128;
    let mut a = Kcp::new(9, c.clone());
    let mut b = Kcp::new(9, c);
    let mut sim = Sim::new(LinkCfg::clean(20), LinkCfg::clean(20), 11);
    sim.on_demand = true;
    sim.b_reads_from = 20_000;
    let mut sa = Stream::fixed(11, 600, 1000);
    let mut sb = Stream::empty();
    let mut saw_zero_window = false;
    sim.run(
        &mut a,
        &mut b,
        &mut sa,
        &mut sb,
        600_000,
        0,
        &mut |sim: &mut Sim, a: &mut Kcp, b: &mut Kcp| {
            if sim.t > 2_000 && sim.t < 20_000 {
                let (sa_, sb_) = (a.stats(), b.stats());
                if sa_.rmt_wnd == 0 {
                    saw_zero_window = true;
                    assert_eq!(
                        sb_.rcv_queue, 128,
                        "zero window with a queue that is not full"
                    );
                }
            }
            // The receiver's WINS after it resumes reading is lost.
            sim.ba.blackhole = (20_000..20_500).contains(&sim.t);
        },
    )
    .unwrap();
    assert!(saw_zero_window);
    assert!(a.stats().probes_sent >= 1, "the sender never probed");
    assert!(b.stats().probes_recv >= 1 && b.stats().wins_sent >= 2);
}

/// The reference probing schedule: first WASK 7 s after the window closed,
/// then the wait grows by half (10.5 s ...).
#[test]
fn probe_schedule() {
    let mut a = Kcp::new(1, cfg("fast", true));
    a.send(b"x").unwrap();
    let mut sink = Vec::new();
    a.flush(0, &mut |d| sink.push(d.to_vec()));
    // The peer acknowledges and announces a zero window.
    let mut ack = Vec::new();
    kcpvpn_kcp::wire::Header {
        conv: 1,
        cmd: kcpvpn_kcp::CMD_ACK,
        frg: 0,
        wnd: 0,
        ts: 0,
        sn: 0,
        una: 1,
        len: 0,
    }
    .encode(&mut ack);
    a.input(&ack, 10).unwrap();
    a.send(b"y").unwrap();
    let mut wask_times = Vec::new();
    for now in (10..40_000).step_by(10) {
        a.update(now, &mut |d| {
            assert_ne!(d[4], CMD_PUSH, "sent data into a zero window");
            if d[4] == CMD_WASK {
                wask_times.push(now);
            }
        });
    }
    // Window seen closed at the first flush (t=10..40): +7000, then +10500, then +15750.
    assert_eq!(wask_times.len(), 3, "{wask_times:?}");
    assert_eq!(wask_times[1] - wask_times[0], 10_500);
    assert_eq!(wask_times[2] - wask_times[1], 15_750);
    assert!((7_000..=7_060).contains(&wask_times[0]), "{wask_times:?}");
    // A WINS with an open window reopens it.
    let mut wins = Vec::new();
    kcpvpn_kcp::wire::Header {
        conv: 1,
        cmd: CMD_WINS,
        frg: 0,
        wnd: 64,
        ts: 0,
        sn: 0,
        una: 1,
        len: 0,
    }
    .encode(&mut wins);
    a.input(&wins, 40_000).unwrap();
    let mut pushed = 0;
    a.flush(40_000, &mut |d| pushed += (d[4] == CMD_PUSH) as usize);
    assert_eq!(pushed, 1);
}

/// Congestion control (nc off): a timeout collapses cwnd to 1.
#[test]
fn timeout_collapses_cwnd() {
    let mut a = Kcp::new(1, cfg("fast", false));
    let mut b = Kcp::new(1, cfg("fast", false));
    let mut sim = Sim::new(LinkCfg::clean(10), LinkCfg::clean(10), 12);
    sim.on_demand = true;
    let mut sa = Stream::fixed(12, 3000, 1300);
    let mut sb = Stream::empty();
    let mut max_cwnd = 0;
    let mut retx = 0;
    let mut after_timeout = Vec::new();
    sim.run(
        &mut a,
        &mut b,
        &mut sa,
        &mut sb,
        300_000,
        0,
        &mut |sim: &mut Sim, a: &mut Kcp, _| {
            let s = a.stats();
            max_cwnd = max_cwnd.max(s.cwnd);
            if s.retransmits > retx {
                // First look after the flush that retransmitted.
                retx = s.retransmits;
                after_timeout.push(s.cwnd);
            }
            sim.ab.blackhole = (400..700).contains(&sim.t);
        },
    )
    .unwrap();
    assert!(max_cwnd > 16, "cwnd never opened: {max_cwnd}");
    assert!(
        !after_timeout.is_empty() && after_timeout.iter().all(|&c| c == 1),
        "{after_timeout:?}"
    );
}

/// Garbage and truncated datagrams are refused without panicking, and a
/// refused first segment changes nothing.
#[test]
fn garbage_is_refused_without_state_change() {
    let mut a = Kcp::new(5, KcpConfig::default());
    let mut b = Kcp::new(5, KcpConfig::default());
    a.send(&[1; 3000]).unwrap();
    let mut d = Vec::new();
    a.flush(0, &mut |x| d.push(x.to_vec()));
    let before = b.stats();
    for bad in [
        &d[0][..0],
        &d[0][..23],
        &d[0][..24], // header claims 1376 payload bytes
        &d[0][..d[0].len() - 1],
    ] {
        assert!(
            matches!(b.input(bad, 1), Err(KcpError::Truncated { .. })),
            "{} bytes",
            bad.len()
        );
    }
    // frg 200 announces 201 fragments: more than a 128-segment window holds.
    let mut frg = d[0].clone();
    frg[5] = 200;
    let small = KcpConfig {
        rcv_wnd: 128,
        ..KcpConfig::default()
    };
    let mut c = Kcp::new(5, small);
    assert!(matches!(
        c.input(&frg, 1),
        Err(KcpError::BadFragment { fragments: 201, .. })
    ));
    let mut cmd = d[0].clone();
    cmd[4] = 0;
    assert!(matches!(
        b.input(&cmd, 1),
        Err(KcpError::BadCommand { cmd: 0, at: 0 })
    ));
    let after = b.stats();
    assert_eq!(after.input_errors, before.input_errors + 5);
    assert_eq!(
        (after.segments_recv, after.rcv_buf, after.rcv_queue),
        (0, 0, 0)
    );
    let mut out = 0;
    b.flush(2, &mut |_| out += 1);
    assert_eq!(out, 0, "a refused datagram must not be acknowledged");
    // The valid datagrams still work afterwards.
    for x in &d {
        b.input(x, 3).unwrap();
    }
    assert_eq!(b.recv_vec().unwrap(), vec![1; 3000]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary bytes, alone or after a valid conv, never panic.
    #[test]
    fn arbitrary_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2000), conv_prefix in any::<bool>()) {
        let mut k = Kcp::new(0x0102_0304, KcpConfig::default());
        k.send(&[7; 5000]).unwrap();
        let mut sink = 0usize;
        k.flush(0, &mut |d| sink += d.len());
        let mut d = data.clone();
        if conv_prefix && d.len() >= 4 {
            d[..4].copy_from_slice(&0x0102_0304u32.to_le_bytes());
        }
        let _ = k.input(&d, 5);
        while k.recv_vec().is_some() {}
        k.flush(10, &mut |d| sink += d.len());
        k.update(1000, &mut |d| sink += d.len());
        let _ = k.check(1000);
    }

    /// Valid datagrams with corrupted bytes never panic, and the endpoint
    /// keeps delivering clean traffic afterwards.
    #[test]
    fn corrupted_datagrams_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let mut a = Kcp::new(3, KcpConfig::default());
        let mut b = Kcp::new(3, KcpConfig::default());
        for i in 0..4u32 { a.send(&message(9, i, 2000)).unwrap(); }
        let mut ds = Vec::new();
        a.flush(0, &mut |d| ds.push(d.to_vec()));
        let mut bad = ds[0].clone();
        for (at, x) in flips { let n = bad.len(); bad[at % n] ^= x | 1; }
        bad.truncate(cut % (bad.len() + 1));
        let _ = b.input(&bad, 1);
        while b.recv_vec().is_some() {}
        for d in &ds { let _ = b.input(d, 2); }
        let mut got = 0;
        while b.recv_vec().is_some() { got += 1; }
        prop_assert!(got <= 4);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random link conditions and configurations: exactly once, in order, intact.
    #[test]
    fn random_links_deliver_exactly_once(
        seed in any::<u64>(), loss in 0.0f64..0.3, dup in 0.0f64..0.2, delay in 1u32..150,
        jitter in 0u32..60, reorder in 0.0f64..0.3, profile in 0usize..4, nc in any::<bool>(),
        on_demand in any::<bool>(), ack_nodelay in any::<bool>(), mtu in 200usize..1500,
    ) {
        let mut c = cfg(kcpvpn_kcp::PROFILES[profile], nc);
        c.mtu = mtu;
        c.ack_nodelay = ack_nodelay;
        let max = Kcp::new(1, c.clone()).max_message().min(9000);
        let link = LinkCfg { loss, dup, delay, jitter, reorder };
        let mut a = Kcp::new(77, c.clone());
        let mut b = Kcp::new(77, c);
        let mut sim = Sim::new(link.clone(), link, seed);
        sim.on_demand = on_demand;
        let mut sa = Stream::new(seed, 60, max);
        let mut sb = Stream::new(seed ^ 1, 20, max);
        let r = sim.run(&mut a, &mut b, &mut sa, &mut sb, 900_000, 2_000, &mut no_hook);
        prop_assert!(r.is_ok(), "{:?}", r);
    }
}

/// With bbr on a clean link, where the receiver's cumulative `una` already
/// covers every segment its ACKs name, the ACKs' round trips still reach the
/// model: its propagation time is the path's, not a stale or missing value.
#[test]
fn bbr_measures_the_round_trip_on_an_in_order_link() {
    let mut c = cfg("fast3", true);
    c.bbr = true;
    let mut a = Kcp::new(1, c.clone());
    let mut b = Kcp::new(1, c);
    let mut sim = Sim::new(LinkCfg::clean(20), LinkCfg::clean(20), 3);
    let mut sa = Stream::fixed(5, 3000, 1300);
    let mut sb = Stream::empty();
    sim.run(&mut a, &mut b, &mut sa, &mut sb, 60_000, 100, &mut no_hook)
        .unwrap();
    let s = a.stats();
    assert!(
        (40..=44).contains(&s.min_rtt),
        "min RTT {} for a 40 ms path (srtt {})",
        s.min_rtt,
        s.srtt
    );
}
