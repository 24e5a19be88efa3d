//! The whole sans-IO pipeline: IP packet in → KCP → FEC 10/3 → AES-256-GCM →
//! datagrams → open → FEC → KCP → packet out, ACKs flowing back. What one core
//! can push when no syscall is involved (target: 500,000 packets/s).
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kcpvpn_crypto::packet::CipherKind;
use kcpvpn_kcp::KcpConfig;
use kcpvpn_tunnel::session::{Session, SessionConfig, Transmit};

/// Collects datagrams into reused buffers (no allocation in steady state).
struct Batch {
    bufs: Vec<Vec<u8>>,
    n: usize,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            bufs: (0..4096).map(|_| Vec::with_capacity(2048)).collect(),
            n: 0,
        }
    }
}

impl Transmit for Batch {
    fn buf(&mut self) -> &mut Vec<u8> {
        if self.n == self.bufs.len() {
            self.bufs.push(Vec::with_capacity(2048));
        }
        let b = &mut self.bufs[self.n];
        b.clear();
        b
    }
    fn commit(&mut self) {
        self.n += 1;
    }
}

fn config(fec: Option<(u8, u8)>, cipher: CipherKind, udp_mtu: usize) -> SessionConfig {
    SessionConfig {
        kcp: KcpConfig {
            snd_wnd: 4096,
            rcv_wnd: 4096,
            ..KcpConfig::profile("fast").unwrap()
        },
        fec_send: fec,
        fec_recv: fec,
        rapid_fec: false,
        cipher,
        keepalive_ms: 10_000,
        idle_timeout_ms: 0,
        udp_mtu,
        send_buffer_bytes: 64 << 20,
        max_packet: 9100,
        mss_clamp_mtu: Some(1500),
        ethernet: false,
        flow_queueing: false,
        rekey_interval_ms: 0,
    }
}

/// Moves `burst` packets of `size` bytes from A to B, ACKs back to A.
fn round(
    a: &mut Session,
    b: &mut Session,
    tx: &mut Batch,
    back: &mut Batch,
    pkt: &mut [u8],
    burst: usize,
    now: u32,
) -> usize {
    for _ in 0..burst {
        a.send_packet(pkt, now);
    }
    tx.n = 0;
    a.flush(now, tx);
    let mut got = 0;
    for i in 0..tx.n {
        b.input(&mut tx.bufs[i], now, &mut |p: &[u8]| got += p.len());
    }
    back.n = 0;
    b.flush(now, back);
    for i in 0..back.n {
        a.input(&mut back.bufs[i], now, &mut |_p: &[u8]| {});
    }
    got
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    let burst = 64;
    // (name, FEC, cipher, UDP MTU, packet size)
    type Case = (&'static str, Option<(u8, u8)>, CipherKind, usize, usize);
    let cases: [Case; 5] = [
        (
            "aes256gcm+fec10/3, 1400 B packets",
            Some((10, 3)),
            CipherKind::Aes256Gcm,
            1500,
            1400,
        ),
        (
            "aes256gcm+fec10/3, 1500 B over udp-mtu 1350",
            Some((10, 3)),
            CipherKind::Aes256Gcm,
            1350,
            1500,
        ),
        (
            "aes256gcm, no fec, 1400 B",
            None,
            CipherKind::Aes256Gcm,
            1500,
            1400,
        ),
        (
            "chacha20+fec10/3, 1400 B",
            Some((10, 3)),
            CipherKind::ChaCha20Poly1305,
            1500,
            1400,
        ),
        ("none, no fec, 1400 B", None, CipherKind::None, 1500, 1400),
    ];
    for (name, fec, cipher, udp_mtu, size) in cases {
        let cfg = config(fec, cipher, udp_mtu);
        let mut a = Session::new(cfg.clone(), 1, &[1; 32], &[2; 32], 2, 0).unwrap();
        let mut b = Session::new(cfg, 1, &[2; 32], &[1; 32], 1, 0).unwrap();
        let (mut tx, mut back) = (Batch::new(), Batch::new());
        let mut pkt = vec![0x45u8; size];
        let mut now = 0u32;
        g.throughput(Throughput::Elements(burst as u64));
        g.bench_function(BenchmarkId::new("packets", name), |bch| {
            bch.iter(|| {
                now = now.wrapping_add(1);
                let got = round(&mut a, &mut b, &mut tx, &mut back, &mut pkt, burst, now);
                assert_eq!(got, burst * size, "every packet must come out");
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
