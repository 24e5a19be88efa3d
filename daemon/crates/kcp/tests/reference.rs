//! Differential tests against the reference C KCP (ikcp.c, compiled by the
//! `kcp-io` dev-dependency): our sender → C receiver and C sender → our
//! receiver, over a lossy, reordering, duplicating link with a simulated clock.
mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::*;
use kcpvpn_kcp::wire::Header;
use kcpvpn_kcp::{Kcp, KcpConfig, CMD_ACK, CMD_PUSH};

/// The reference, configured like ours.
struct CKcp {
    k: kcp_io::core::Kcp,
    out: Rc<RefCell<Vec<Vec<u8>>>>,
    buf: Vec<u8>,
}

impl CKcp {
    fn new(conv: u32, c: &KcpConfig) -> CKcp {
        let out = Rc::new(RefCell::new(Vec::new()));
        let sink = out.clone();
        let cfg = kcp_io::core::KcpConfig {
            nodelay: c.nodelay,
            interval: c.interval,
            resend: c.resend as i32,
            nc: c.nc,
            mtu: c.mtu as u32,
            snd_wnd: c.snd_wnd as u32,
            rcv_wnd: c.rcv_wnd as u32,
            max_fragments: 127,
            stream_mode: false,
        };
        let k = kcp_io::core::Kcp::with_config(conv, &cfg, move |d: &[u8]| {
            sink.borrow_mut().push(d.to_vec());
            Ok(d.len())
        })
        .expect("ikcp_create");
        CKcp {
            k,
            out,
            buf: vec![0; 1 << 20],
        }
    }
    fn drain(&mut self, out: &mut Vec<Vec<u8>>) {
        out.append(&mut self.out.borrow_mut());
    }
}

impl Endpoint for CKcp {
    fn send(&mut self, msg: &[u8]) -> Result<(), String> {
        self.k.send(msg).map(|_| ()).map_err(|e| e.to_string())
    }
    fn input(&mut self, d: &[u8], _now: u32) {
        // The reference takes its time from the last update (ikcp_update).
        self.k.input(d).expect("reference refused our datagram");
    }
    fn update(&mut self, now: u32, out: &mut Vec<Vec<u8>>) {
        self.k.update(now);
        self.drain(out);
    }
    fn flush(&mut self, now: u32, out: &mut Vec<Vec<u8>>) {
        // The reference has no on-demand flush worth the name: update only.
        self.update(now, out);
    }
    fn check(&self, now: u32) -> u32 {
        self.k.check(now)
    }
    fn recv(&mut self) -> Option<Vec<u8>> {
        let n = self.k.recv(&mut self.buf).ok()?;
        Some(self.buf[..n].to_vec())
    }
    fn wait_snd(&self) -> usize {
        self.k.waitsnd() as usize
    }
}

fn lens(v: &[Vec<u8>]) -> Vec<usize> {
    v.iter().map(|d| d.len()).collect()
}

fn config(profile: &str, nc: bool) -> KcpConfig {
    let mut c = KcpConfig::profile(profile).unwrap();
    c.nc = nc;
    c.mtu = 1350;
    c.snd_wnd = 256;
    c.rcv_wnd = 256;
    c
}

fn link(loss: f64) -> LinkCfg {
    LinkCfg {
        loss,
        dup: 0.1,
        delay: 30,
        jitter: 20,
        reorder: 0.15,
    }
}

/// Our sender → C receiver (and C's replies → us), every profile, 10–20% loss.
#[test]
fn ours_to_reference() {
    for (i, profile) in kcpvpn_kcp::PROFILES.into_iter().enumerate() {
        for nc in [true, false] {
            let seed = 100 + i as u64 * 2 + nc as u64;
            let c = config(profile, nc);
            let mut ours = Kcp::new(0xc0ffee, c.clone());
            let mut theirs = CKcp::new(0xc0ffee, &c);
            let mut sim = Sim::new(link(0.1 + 0.025 * i as f64), link(0.15), seed);
            sim.on_demand = i % 2 == 0;
            let mut sa = Stream::new(seed, 200, 9000);
            let mut sb = Stream::new(seed ^ 7, 50, 9000);
            sim.run(
                &mut ours,
                &mut theirs,
                &mut sa,
                &mut sb,
                900_000,
                2_000,
                &mut |_, _, _| {},
            )
            .unwrap_or_else(|e| panic!("ours → C, {profile} nc={nc}: {e}"));
            let s = ours.stats();
            assert!(s.retransmits + s.fast_retransmits > 0);
            assert_eq!(s.input_errors, 0);
        }
    }
}

/// C sender → our receiver (and our replies → C).
#[test]
fn reference_to_ours() {
    for (i, profile) in kcpvpn_kcp::PROFILES.into_iter().enumerate() {
        for nc in [true, false] {
            let seed = 200 + i as u64 * 2 + nc as u64;
            let c = config(profile, nc);
            let mut theirs = CKcp::new(0xbeef, &c);
            let mut ours = Kcp::new(0xbeef, c.clone());
            let mut sim = Sim::new(link(0.2), link(0.1), seed);
            sim.on_demand = i % 2 == 1;
            let mut sa = Stream::new(seed, 200, 9000);
            let mut sb = Stream::new(seed ^ 7, 50, 9000);
            sim.run(
                &mut theirs,
                &mut ours,
                &mut sa,
                &mut sb,
                900_000,
                2_000,
                &mut |_, _, _| {},
            )
            .unwrap_or_else(|e| panic!("C → ours, {profile} nc={nc}: {e}"));
            let s = ours.stats();
            assert_eq!(s.messages_recv, 200);
            assert!(s.dup_segments > 0);
            assert_eq!(s.input_errors, 0);
        }
    }
}

/// Byte-level agreement on a clean exchange: the reference's datagram for a
/// 3000-byte message decodes as ours would write it (same fragments, lengths,
/// sn, una, wnd), and our ACKs retire its segments.
#[test]
fn wire_format_agrees() {
    let mut c = KcpConfig::profile("fast").unwrap();
    c.rcv_wnd = 128;
    c.snd_wnd = 128;
    let mut theirs = CKcp::new(42, &c);
    let mut ours = Kcp::new(42, c.clone());
    let msg = message(1, 0, 3000);
    theirs.send(&msg).unwrap();
    ours.send(&msg).unwrap();
    let mut cd = Vec::new();
    theirs.update(1030, &mut cd);
    let mut od = Vec::new();
    ours.flush(1030, &mut |d| od.push(d.to_vec()));
    assert!(
        cd == od,
        "same segments, same bytes, same packing: {:?} vs {:?}",
        lens(&cd),
        lens(&od)
    );
    let mut segs = Vec::new();
    for d in &cd {
        let mut at = 0;
        while let Some(h) = Header::decode(&d[at..]) {
            segs.push(h);
            at += 24 + h.len as usize;
        }
    }
    let summary: Vec<_> = segs
        .iter()
        .map(|h| (h.conv, h.cmd, h.frg, h.sn, h.len, h.wnd, h.ts))
        .collect();
    assert_eq!(
        summary,
        [
            (42, CMD_PUSH, 2, 0, 1376, 128, 1030),
            (42, CMD_PUSH, 1, 1, 1376, 128, 1030),
            (42, CMD_PUSH, 0, 2, 248, 128, 1030)
        ]
    );
    // Ours receives theirs and acknowledges; theirs accepts the ACKs.
    let mut peer = Kcp::new(42, c);
    for d in &cd {
        peer.input(d, 1040).unwrap();
    }
    assert_eq!(peer.recv_vec().unwrap(), msg);
    let mut acks = Vec::new();
    peer.flush(1040, &mut |d| acks.push(d.to_vec()));
    assert_eq!(acks.len(), 1);
    assert!(acks[0].chunks(24).all(|s| s[4] == CMD_ACK));
    for a in &acks {
        theirs.input(a, 1050);
    }
    assert_eq!(theirs.wait_snd(), 0);
}
