//! Cost of the FEC layer per group of 10 data + 3 parity shards, 1400-byte
//! datagrams: encoding (10 data shards out at once + 3 parity), and decoding
//! a group with 0 to 3 data shards lost.
//!
//!   cargo bench -p kcpvpn-fec --bench fec
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kcpvpn_fec::{FecDecoder, FecEncoder};
use std::hint::black_box;

const DS: usize = 10;
const PS: usize = 3;
const LEN: usize = 1400;

fn datagrams() -> Vec<Vec<u8>> {
    (0..DS)
        .map(|i| (0..LEN).map(|j| (i * 13 + j * 3) as u8).collect())
        .collect()
}

fn bench(c: &mut Criterion) {
    let d = datagrams();
    let mut g = c.benchmark_group("fec_group_10+3x1400");
    g.throughput(Throughput::Bytes((DS * LEN) as u64));

    let mut enc = FecEncoder::new(DS, PS, 1500);
    g.bench_function("encode", |b| {
        b.iter(|| {
            for x in &d {
                enc.encode(black_box(x), &mut |s| {
                    black_box(s);
                });
            }
        })
    });

    // One encoded group; each iteration re-stamps it as the next group so
    // the decoder always sees fresh groups (sliding its window as in use).
    let mut shards: Vec<Vec<u8>> = Vec::new();
    FecEncoder::new(DS, PS, 1500).encode_all(&d, &mut shards);
    for lost in 0..=PS {
        let mut dec = FecDecoder::new(DS, PS, 64);
        let mut shards = shards.clone();
        let mut group = 0u32;
        let mut delivered = 0usize;
        g.bench_function(BenchmarkId::new("decode_lost", lost), |b| {
            b.iter(|| {
                for (i, s) in shards.iter_mut().enumerate() {
                    if i < lost {
                        continue;
                    }
                    let seqid = group * (DS + PS) as u32 + i as u32;
                    s[..4].copy_from_slice(&seqid.to_le_bytes());
                    dec.input(s, &mut |x| {
                        delivered += 1;
                        black_box(x);
                    })
                    .unwrap();
                }
                group += 1;
            })
        });
        assert_eq!(dec.stats().recovered as usize, lost * group as usize);
        assert_eq!(delivered, DS * group as usize);
    }
    g.finish();
}

trait EncodeAll {
    fn encode_all(&mut self, d: &[Vec<u8>], out: &mut Vec<Vec<u8>>);
}

impl EncodeAll for FecEncoder {
    fn encode_all(&mut self, d: &[Vec<u8>], out: &mut Vec<Vec<u8>>) {
        for x in d {
            self.encode(x, &mut |s| out.push(s.to_vec()));
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .sample_size(30);
    targets = bench
}
criterion_main!(benches);
