//! Which Reed-Solomon crate should the FEC use? Compares the candidates on
//! our workload: groups of 10 data + 3 parity shards of 1402 bytes (a 1400 B
//! datagram plus its 2-byte size field): encode one group's parity, and
//! rebuild the data after losing 1, 2 or 3 data shards.
//!
//!   cargo bench -p kcpvpn-fec --bench rs_candidates
//!   cargo bench -p kcpvpn-fec --bench rs_candidates --no-default-features
//!
//! (the default build uses reed-solomon-erasure's C/SIMD kernels, feature
//! `simd-accel`; the second run measures its pure-Rust code. One crate cannot
//! be linked twice with different features, hence two runs.)
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

const DS: usize = 10;
const PS: usize = 3;
const LEN: usize = 1402;

fn data() -> Vec<Vec<u8>> {
    (0..DS)
        .map(|i| {
            (0..LEN)
                .map(|j| (i * 31 + j * 7 + (j >> 3)) as u8)
                .collect()
        })
        .collect()
}

fn rse_name() -> &'static str {
    if cfg!(feature = "simd-accel") {
        "reed-solomon-erasure+simd-accel"
    } else {
        "reed-solomon-erasure"
    }
}

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_10+3x1402");
    g.throughput(Throughput::Bytes((DS * LEN) as u64));
    let d = data();

    let rs = reed_solomon_erasure::galois_8::ReedSolomon::new(DS, PS).unwrap();
    let mut parity = vec![vec![0u8; LEN]; PS];
    g.bench_function(rse_name(), |b| {
        b.iter(|| {
            rs.encode_sep(black_box(&d), &mut parity).unwrap();
            black_box(&parity);
        })
    });

    let mut enc = reed_solomon_simd::ReedSolomonEncoder::new(DS, PS, LEN).unwrap();
    g.bench_function("reed-solomon-simd", |b| {
        b.iter(|| {
            for s in &d {
                enc.add_original_shard(black_box(s)).unwrap();
            }
            let r = enc.encode().unwrap();
            // Copy out, as the FEC would have to (the result borrows the encoder).
            for (p, out) in r.recovery_iter().zip(parity.iter_mut()) {
                out.copy_from_slice(p);
            }
        })
    });

    // novelpoly codes one payload into n shards (k rounded down to a power
    // of two): not systematic per datagram, shown for its cost only.
    let np = reed_solomon_novelpoly::CodeParams::derive_parameters(DS + PS, DS)
        .unwrap()
        .make_encoder();
    let payload: Vec<u8> = d.concat();
    g.bench_function("reed-solomon-novelpoly", |b| {
        b.iter(|| {
            let shards: Vec<reed_solomon_novelpoly::WrappedShard> =
                np.encode(black_box(&payload)).unwrap();
            black_box(shards);
        })
    });
    g.finish();
}

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_10+3x1402");
    g.throughput(Throughput::Bytes((DS * LEN) as u64));
    let d = data();
    let rs = reed_solomon_erasure::galois_8::ReedSolomon::new(DS, PS).unwrap();
    let mut parity = vec![vec![0u8; LEN]; PS];
    rs.encode_sep(&d, &mut parity).unwrap();
    let all: Vec<Vec<u8>> = d.iter().chain(parity.iter()).cloned().collect();

    let np = reed_solomon_novelpoly::CodeParams::derive_parameters(DS + PS, DS)
        .unwrap()
        .make_encoder();
    let payload: Vec<u8> = d.concat();
    let np_shards: Vec<reed_solomon_novelpoly::WrappedShard> = np.encode(&payload).unwrap();

    for lost in 1..=PS {
        // Lose the first `lost` data shards; use the first `lost` parity shards.
        let mut work: Vec<(Vec<u8>, bool)> = all.iter().map(|s| (s.clone(), true)).collect();
        let rse_decode = |work: &mut Vec<(Vec<u8>, bool)>| {
            for (i, w) in work.iter_mut().enumerate() {
                w.1 = i >= lost && (i < DS || i < DS + lost);
                if !w.1 {
                    w.0.fill(0);
                }
            }
            rs.reconstruct_data(work).unwrap();
        };
        rse_decode(&mut work);
        assert!(work[0].0 == d[0], "reed-solomon-erasure rebuilt wrong data");
        g.bench_function(BenchmarkId::new(rse_name(), lost), |b| {
            b.iter(|| {
                rse_decode(&mut work);
                black_box(&work);
            })
        });

        // reed-solomon-simd is another code (GF(2^16)): decode its own parity.
        let simd_parity: Vec<Vec<u8>> = reed_solomon_simd::encode(DS, PS, &d).unwrap();
        let parity = &simd_parity;
        let mut dec = reed_solomon_simd::ReedSolomonDecoder::new(DS, PS, LEN).unwrap();
        let mut out = vec![vec![0u8; LEN]; PS];
        let mut simd_decode = |out: &mut Vec<Vec<u8>>| {
            for (i, s) in d.iter().enumerate().skip(lost) {
                dec.add_original_shard(i, black_box(s)).unwrap();
            }
            for (j, p) in parity.iter().enumerate().take(lost) {
                dec.add_recovery_shard(j, black_box(p)).unwrap();
            }
            let r = dec.decode().unwrap();
            for (i, o) in out.iter_mut().enumerate().take(lost) {
                o.copy_from_slice(r.restored_original(i).unwrap());
            }
        };
        simd_decode(&mut out);
        assert!(out[0] == d[0], "reed-solomon-simd rebuilt wrong data");
        g.bench_function(BenchmarkId::new("reed-solomon-simd", lost), |b| {
            b.iter(|| simd_decode(&mut out))
        });

        g.bench_function(BenchmarkId::new("reed-solomon-novelpoly", lost), |b| {
            b.iter(|| {
                let rx: Vec<Option<reed_solomon_novelpoly::WrappedShard>> = np_shards
                    .iter()
                    .enumerate()
                    .map(|(i, s)| if i < lost { None } else { Some(s.clone()) })
                    .collect();
                black_box(np.reconstruct(rx).unwrap());
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .sample_size(30);
    targets = bench_encode, bench_decode
}
criterion_main!(benches);
