//! Cost of moving one 1400-byte datagram (one full 1376-byte segment) between
//! two endpoints: send + flush + input + recv, plus the ACK going back
//! (flush + input), on a clean link. `ours` is kcpvpn-kcp with on-demand
//! flush; `reference_c` is ikcp.c (via kcp-io) driven the same way with
//! ikcp_flush. Throughput is in segments.
//!
//! cargo bench -p kcpvpn-kcp --bench kcp
use std::cell::RefCell;
use std::rc::Rc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kcpvpn_kcp::{Kcp, KcpConfig};

const MTU: usize = 1400;

fn cfg() -> KcpConfig {
    KcpConfig {
        nc: true,
        mtu: MTU,
        ..KcpConfig::profile("fast2").unwrap()
    }
}

/// `batch` segments per round: send them all, one flush, every datagram into
/// the receiver, recv them all, one ACK flush back.
fn ours_round(a: &mut Kcp, b: &mut Kcp, msg: &[u8], buf: &mut [u8], now: &mut u32, batch: usize) {
    *now = now.wrapping_add(1);
    let t = *now;
    for _ in 0..batch {
        a.send(msg).unwrap();
    }
    a.flush(t, &mut |d| b.input(d, t).unwrap());
    for _ in 0..batch {
        b.recv(buf).unwrap();
    }
    b.flush(t, &mut |d| a.input(d, t).unwrap());
}

fn bench_ours(c: &mut Criterion) {
    let mut g = c.benchmark_group("ours");
    for batch in [1usize, 64] {
        let mut a = Kcp::new(1, cfg());
        let mut b = Kcp::new(1, cfg());
        let msg = vec![0xa5; a.mss()];
        let mut buf = vec![0; 65536];
        let mut now = 0;
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("segment_x{batch}"), |bn| {
            bn.iter(|| ours_round(&mut a, &mut b, &msg, &mut buf, &mut now, batch))
        });
        assert_eq!(a.wait_snd(), 0);
    }
    // ACK processing with a full window in flight: 1024 segments outstanding,
    // acknowledged one ACK datagram each, even sn first (every ACK then sits
    // above holes), then the odd ones.
    g.throughput(Throughput::Elements(1024));
    g.bench_function("window_1024_sack", |bn| {
        bn.iter_batched(
            || {
                let wide = KcpConfig {
                    snd_wnd: 1024,
                    rcv_wnd: 1024,
                    ..cfg()
                };
                let (mut a, mut b) = (Kcp::new(1, wide.clone()), Kcp::new(1, wide));
                let msg = vec![0xa5; a.mss()];
                for _ in 0..1024 {
                    a.send(&msg).unwrap();
                }
                let mut segs = Vec::new();
                // The remote window starts at 128: let an ACK open it first.
                a.flush(0, &mut |d| segs.push(d.to_vec()));
                b.input(&segs.remove(0), 0).unwrap();
                b.flush(0, &mut |d| a.input(d, 0).unwrap());
                a.flush(0, &mut |d| segs.push(d.to_vec()));
                let (mut even, mut odd) = (Vec::new(), Vec::new());
                for (i, s) in segs.iter().enumerate() {
                    b.input(s, 1).unwrap();
                    b.flush(1, &mut |d| {
                        if i % 2 == 0 {
                            even.push(d.to_vec())
                        } else {
                            odd.push(d.to_vec())
                        }
                    });
                }
                (a, even, odd)
            },
            |(mut a, even, odd)| {
                for d in even.iter().chain(odd.iter()) {
                    a.input(d, 2).unwrap();
                }
                a
            },
            BatchSize::PerIteration,
        );
    });
    g.finish();
}

struct C {
    k: kcp_io::core::Kcp,
    out: Rc<RefCell<Vec<Vec<u8>>>>,
}

fn c_kcp() -> C {
    let out = Rc::new(RefCell::new(Vec::new()));
    let sink = out.clone();
    let c = cfg();
    let kc = kcp_io::core::KcpConfig {
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
    let mut k = kcp_io::core::Kcp::with_config(1, &kc, move |d: &[u8]| {
        sink.borrow_mut().push(d.to_vec());
        Ok(d.len())
    })
    .unwrap();
    k.update(0);
    C { k, out }
}

fn bench_reference(c: &mut Criterion) {
    let mut g = c.benchmark_group("reference_c");
    for batch in [1usize, 64] {
        let mut a = c_kcp();
        let mut b = c_kcp();
        let msg = vec![0xa5; MTU - 24];
        let mut buf = vec![0; 65536];
        let mut pending = Vec::new();
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("segment_x{batch}"), |bn| {
            bn.iter(|| {
                for _ in 0..batch {
                    a.k.send(&msg).unwrap();
                }
                a.k.flush();
                std::mem::swap(&mut pending, &mut *a.out.borrow_mut());
                for d in pending.drain(..) {
                    b.k.input(&d).unwrap();
                }
                for _ in 0..batch {
                    b.k.recv(&mut buf).unwrap();
                }
                b.k.flush();
                std::mem::swap(&mut pending, &mut *b.out.borrow_mut());
                for d in pending.drain(..) {
                    a.k.input(&d).unwrap();
                }
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = bench_ours, bench_reference
}
criterion_main!(benches);
