//! Packet protection and handshake costs.
//! Run: cargo bench -p kcpvpn-crypto --bench crypto -- --warm-up-time 1 --measurement-time 3
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kcpvpn_crypto::handshake::{
    generate_private_key, public_key, stretch_secret, ClientIdentity, InitPayload, Initiator, Peer,
    Responder, ServerConfigPayload, ServerIdentity, IP_MODE_SERVER_ASSIGNS,
};
use kcpvpn_crypto::packet::{CipherKind, Opener, Sealer, HEADER_LEN, MSG_DATA};
use std::hint::black_box;

const LEN: usize = 1400;

fn packets(c: &mut Criterion) {
    let key = [3u8; 32];
    let mut g = c.benchmark_group("packet");
    g.throughput(Throughput::Bytes(LEN as u64));
    for kind in CipherKind::ALL {
        let mut s = Sealer::new(kind, &key, 1);
        let mut out = Vec::with_capacity(2048);
        let plain = vec![0x5au8; LEN];
        g.bench_function(format!("seal_into/{}", kind.name()), |b| {
            b.iter(|| {
                s.seal_into(MSG_DATA, black_box(&plain), &mut out).unwrap();
                black_box(out.len())
            })
        });
        let mut buf = vec![0u8; HEADER_LEN + LEN + kind.tag_len()];
        g.bench_function(format!("seal_in_place/{}", kind.name()), |b| {
            b.iter(|| {
                s.seal_in_place(MSG_DATA, black_box(&mut buf)).unwrap();
            })
        });
        // Opening: each iteration opens a fresh copy of one sealed datagram
        // under an ever-increasing counter, so the replay window accepts it.
        // Sealing a pool up front keeps sealing out of the measurement.
        let mut s2 = Sealer::new(kind, &key, 1);
        let pool: Vec<Vec<u8>> = (0..4096)
            .map(|_| {
                let mut d = Vec::new();
                s2.seal_into(MSG_DATA, &plain, &mut d).unwrap();
                d
            })
            .collect();
        let mut scratch = vec![0u8; pool[0].len()];
        g.bench_function(format!("open/{}", kind.name()), |b| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                let mut done = 0u64;
                while done < iters {
                    let mut o = Opener::new(kind, &key);
                    let n = (iters - done).min(pool.len() as u64) as usize;
                    let start = std::time::Instant::now();
                    for d in &pool[..n] {
                        scratch.copy_from_slice(d);
                        black_box(o.open_in_place(&mut scratch).unwrap().payload.len());
                    }
                    total += start.elapsed();
                    done += n as u64;
                }
                total
            })
        });
    }
    g.finish();
}

fn handshake(c: &mut Criterion) {
    let psk = [7u8; 32];
    let wishes = InitPayload {
        client_id: "bench".into(),
        mtu: 1400,
        ip_mode: IP_MODE_SERVER_ASSIGNS,
        ip: None,
        fec: Some((10, 3)),
        cipher: CipherKind::Aes256Gcm,
        udp_mtu: 1350,
        keepalive_s: 10,
    };
    let config = ServerConfigPayload {
        mtu: 1400,
        full_frame_mtu: 1400,
        server_ip: Some("10.0.0.1".parse().unwrap()),
        client_ip: Some("10.0.0.2".parse().unwrap()),
        prefixlen: Some(24),
        udp_mtu: 1350,
        keepalive_s: 10,
        ..Default::default()
    };
    let mut g = c.benchmark_group("handshake");
    g.bench_function("full (message 1 + message 2, both sides)", |b| {
        let mut resp = Responder::with_capacity(&psk, 60_000, 1 << 20);
        let mut now = 1_000_000u64;
        b.iter(|| {
            now += 1;
            let (mut ini, m1) = Initiator::new(&psk, wishes.clone(), 1, now).unwrap();
            let (_, pending) = resp.read_init(&m1, now).unwrap();
            let (m2, _) = pending.accept(&config, 2);
            black_box(ini.read_response(&m2).unwrap().unwrap());
        })
    });
    g.bench_function("read_init forged (server cost of garbage)", |b| {
        let mut resp = Responder::new(&psk, 60_000);
        let (_, m1) = Initiator::new(&[1u8; 32], wishes.clone(), 1, 0).unwrap();
        b.iter(|| black_box(resp.read_init(&m1, 0).is_err()))
    });
    // Identity mode (IKpsk1): two more Diffie-Hellmans on each side.
    let server_key = generate_private_key();
    let client = ClientIdentity {
        private_key: generate_private_key(),
        server_public_key: public_key(&server_key),
    };
    let peers = vec![Peer {
        public_key: public_key(&client.private_key),
        client_id: "bench".into(),
        ip: None,
    }];
    let identity = ServerIdentity::new(server_key, peers).unwrap();
    g.bench_function("identity full (message 1 + message 2, both sides)", |b| {
        let mut resp =
            Responder::with_capacity(&psk, 60_000, 1 << 20).with_identity(identity.clone());
        let mut now = 1_000_000u64;
        b.iter(|| {
            now += 1;
            let (mut ini, m1) =
                Initiator::start(&psk, Some(&client), wishes.clone(), 1, now).unwrap();
            let (_, pending) = resp.read_init(&m1, now).unwrap();
            let (m2, _) = pending.accept(&config, 2);
            black_box(ini.read_response(&m2).unwrap().unwrap());
        })
    });
    g.bench_function("identity read_init forged (server cost of garbage)", |b| {
        let mut resp = Responder::new(&psk, 60_000).with_identity(identity.clone());
        let (_, m1) = Initiator::start(&[1u8; 32], Some(&client), wishes.clone(), 1, 0).unwrap();
        b.iter(|| black_box(resp.read_init(&m1, 0).is_err()))
    });
    g.finish();
    let mut g = c.benchmark_group("stretch");
    g.sample_size(10);
    g.bench_function("stretch_secret (Argon2id m=64MiB t=3 p=1)", |b| {
        b.iter(|| black_box(stretch_secret(b"secret")))
    });
    g.finish();
}

criterion_group!(benches, packets, handshake);
criterion_main!(benches);
