//! The hot path does not allocate: once buffers are warm, send → flush →
//! input → recv → ACK → input runs without a single heap allocation, with
//! and without loss. (One test per binary: the counting allocator is global.)
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use kcpvpn_kcp::{Kcp, KcpConfig};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Moves `rounds` rounds of 32 full-size segments from a to b; drops every
/// `drop_every`-th data datagram (0 = none).
fn exchange(
    a: &mut Kcp,
    b: &mut Kcp,
    msg: &[u8],
    buf: &mut [u8],
    now: &mut u32,
    rounds: usize,
    drop_every: usize,
) {
    let mut n = 0usize;
    for _ in 0..rounds {
        *now = now.wrapping_add(5);
        let t = *now;
        for _ in 0..32 {
            a.send(msg).unwrap();
        }
        a.flush(t, &mut |d| {
            n += 1;
            if drop_every == 0 || n % drop_every != 0 {
                b.input(d, t).unwrap();
            }
        });
        while let Ok(len) = b.recv(buf) {
            assert_eq!(len, msg.len());
        }
        b.flush(t, &mut |d| a.input(d, t).unwrap());
    }
}

#[test]
fn steady_state_does_not_allocate() {
    let cfg = KcpConfig {
        nc: true,
        ..KcpConfig::profile("fast2").unwrap()
    };
    let mut a = Kcp::new(1, cfg.clone());
    let mut b = Kcp::new(1, cfg);
    let msg = vec![0x5a; a.mss()];
    let mut buf = vec![0; 65536];
    let mut now = 0;
    for drop_every in [0, 7] {
        // Warm-up: rings, reassembly slots and ACK list reach their working size.
        exchange(&mut a, &mut b, &msg, &mut buf, &mut now, 400, drop_every);
        let before = ALLOCS.load(Ordering::Relaxed);
        exchange(&mut a, &mut b, &msg, &mut buf, &mut now, 200, drop_every);
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        assert_eq!(
            allocs, 0,
            "{allocs} allocations for 6400 segments (drop every {drop_every})"
        );
    }
    let s = a.stats();
    assert!(
        s.fast_retransmits + s.retransmits > 0,
        "the lossy phase did lose segments"
    );
    // Everything sent was delivered (the last round's losses may still be in flight).
    assert!(b.stats().messages_recv + a.wait_snd() as u64 >= 2 * 600 * 32 - 64);
}
