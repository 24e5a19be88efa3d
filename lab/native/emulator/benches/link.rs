//! Cost of the impairment state machine per 1400-byte frame (no I/O).
//! Run: cargo bench -p kcpvpn-emulator --bench link -- --warm-up-time 1 --measurement-time 3
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kcpvpn_emulator::{Link, LinkParams, NS_PER_MS};
use std::hint::black_box;

const LEN: usize = 1414; // 1400-byte IP packet in an Ethernet frame

fn link(c: &mut Criterion) {
    let frame = vec![0x5au8; LEN];
    let mut g = c.benchmark_group("link");
    g.throughput(Throughput::Bytes(LEN as u64));
    let cases = [
        ("transparent", LinkParams::default()),
        (
            "100mbit_20ms_loss1pct",
            LinkParams {
                rate_bps: 100_000_000,
                delay_ns: 20 * NS_PER_MS,
                loss: 0.01,
                queue_bytes: u64::MAX,
                ..Default::default()
            },
        ),
        (
            "jitter_reorder_dup",
            LinkParams {
                delay_ns: 10 * NS_PER_MS,
                jitter_ns: 2 * NS_PER_MS,
                reorder: 0.01,
                duplicate: 0.01,
                ..Default::default()
            },
        ),
    ];
    for (name, params) in cases {
        let mut l = Link::new(params, 1).unwrap();
        // A steady state: frames 10 µs apart, each input followed by a poll,
        // so a delayed link holds about delay/10 µs frames.
        let mut now = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                now += 10_000;
                l.input(now, black_box(&frame));
                let mut n = 0;
                l.poll(now, &mut |f| n += f.len());
                black_box(n)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, link);
criterion_main!(benches);
