//! The running emulator: two AF_PACKET sockets and one thread per direction,
//! each owning a [`Link`]. Threads never touch Python; the owner talks to
//! them through a mutex per direction (new parameters in, counters out) and
//! an eventfd per thread that wakes it for new parameters or to stop.
use crate::link::{Link, LinkParams, LinkStats, SlotId};
use crate::sys::{self, PacketSocket, RecvBatch, SendBatch};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

const BATCH: usize = 64;
/// Longest sleep without a deadline, so a lost wake-up costs little.
const IDLE_NS: u64 = 200_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    AToB = 0,
    BToA = 1,
}

impl Direction {
    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "a_to_b" => Some(Direction::AToB),
            "b_to_a" => Some(Direction::BToA),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Direction::AToB => "a_to_b",
            Direction::BToA => "b_to_a",
        }
    }
}

/// Counters of one direction: the link's plus the I/O layer's.
#[derive(Clone, Copy, Debug, Default)]
pub struct DirStats {
    pub link: LinkStats,
    /// Frames larger than the interface MTU allows (offloads left on?), dropped.
    pub rx_oversize: u64,
    /// Frames the kernel refused to send.
    pub tx_errors: u64,
}

struct DirShared {
    pending: Mutex<Option<LinkParams>>,
    /// Set with `pending`, so the thread can look before every batch without a lock.
    has_pending: AtomicBool,
    stats: Mutex<DirStats>,
    /// Wakes this direction's thread (new parameters, stop); drained by it.
    wake: OwnedFd,
}

impl DirShared {
    fn new() -> io::Result<DirShared> {
        Ok(DirShared {
            pending: Mutex::new(None),
            has_pending: AtomicBool::new(false),
            stats: Mutex::default(),
            wake: sys::eventfd()?,
        })
    }
}

struct Shared {
    stop: AtomicBool,
    dirs: [DirShared; 2],
    error: Mutex<Option<String>>,
}

impl Shared {
    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for d in &self.dirs {
            sys::signal(d.wake.as_raw_fd());
        }
    }
}

pub struct Emulator {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Emulator {
    /// Open both interfaces and start forwarding. Each direction gets its own
    /// random stream derived from `seed`.
    pub fn start(
        if_a: &str,
        if_b: &str,
        a_to_b: LinkParams,
        b_to_a: LinkParams,
        seed: u64,
    ) -> io::Result<Emulator> {
        if if_a == if_b {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "if_a and if_b must be two different interfaces",
            ));
        }
        let invalid =
            |e: crate::link::ParamError| io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
        let link_ab = Link::new(a_to_b, seed).map_err(invalid)?;
        let link_ba = Link::new(b_to_a, seed ^ 0x5DEE_CE66_D1CE_4E5B).map_err(invalid)?;
        let a = Arc::new(PacketSocket::open(if_a)?);
        let b = Arc::new(PacketSocket::open(if_b)?);
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            dirs: [DirShared::new()?, DirShared::new()?],
            error: Mutex::new(None),
        });
        let mut threads = Vec::new();
        for (dir, rx, tx, link) in [
            (Direction::AToB, &a, &b, link_ab),
            (Direction::BToA, &b, &a, link_ba),
        ] {
            let (rx, tx, sh) = (rx.clone(), tx.clone(), shared.clone());
            let t = std::thread::Builder::new()
                .name(format!("emu-{}", dir.name()))
                .spawn(move || {
                    if let Err(e) = pump(&rx, &tx, link, &sh, dir) {
                        let msg = format!("{} ({} -> {}): {e}", dir.name(), rx.ifname, tx.ifname);
                        sh.error.lock().unwrap().get_or_insert(msg);
                        sh.stop();
                    }
                })?;
            threads.push(t);
        }
        Ok(Emulator { shared, threads })
    }

    /// Replace a direction's impairments; applies to frames arriving from now on.
    pub fn set(&self, dir: Direction, params: LinkParams) -> Result<(), crate::link::ParamError> {
        params.validate()?;
        let d = &self.shared.dirs[dir as usize];
        *d.pending.lock().unwrap() = Some(params);
        d.has_pending.store(true, Ordering::Release);
        sys::signal(d.wake.as_raw_fd());
        Ok(())
    }

    pub fn stats(&self, dir: Direction) -> DirStats {
        *self.shared.dirs[dir as usize].stats.lock().unwrap()
    }

    /// Why a direction stopped on its own, if it did.
    pub fn error(&self) -> Option<String> {
        self.shared.error.lock().unwrap().clone()
    }

    pub fn is_running(&self) -> bool {
        !self.shared.stop.load(Ordering::SeqCst)
    }

    /// Stop both threads and wait for them (frames still held are discarded).
    pub fn stop(&mut self) {
        self.shared.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

fn pump(
    rx: &PacketSocket,
    tx: &PacketSocket,
    mut link: Link,
    sh: &Shared,
    dir: Direction,
) -> io::Result<()> {
    sys::tighten_timer_slack();
    let me = &sh.dirs[dir as usize];
    let mut rb = RecvBatch::new(BATCH, rx.max_frame());
    let mut sb = SendBatch::new(BATCH);
    let mut ids = [0 as SlotId; BATCH];
    let mut io = DirStats::default();
    let wake = me.wake.as_raw_fd();

    let mut flush = |link: &mut Link, io: &mut DirStats, now: u64| -> io::Result<()> {
        loop {
            let n = link.pop_due(now, &mut ids[..sb.capacity()]);
            if n == 0 {
                return Ok(());
            }
            let (_, failed) = sb.send(tx.fd(), ids[..n].iter().map(|id| link.frame(*id)))?;
            io.tx_errors += failed as u64;
            for id in &ids[..n] {
                link.release(*id);
            }
        }
    };

    // New parameters apply before the next frame is read: a frame that arrives
    // after `set` returned never sees the old ones, even when it and the wake-up
    // come in the same wait.
    let apply_pending = |link: &mut Link| {
        if me.has_pending.swap(false, Ordering::Acquire) {
            if let Some(p) = me.pending.lock().unwrap().take() {
                // Validated by `set`.
                let _ = link.set_params(p);
            }
        }
    };

    while !sh.stop.load(Ordering::Relaxed) {
        apply_pending(&mut link);
        let now = sys::monotonic_ns();
        flush(&mut link, &mut io, now)?;
        let timeout = link
            .next_deadline()
            .map_or(IDLE_NS, |d| d.saturating_sub(now).clamp(1, IDLE_NS));
        let (readable, woken) = sys::wait(rx.fd(), wake, timeout)?;
        if woken {
            // Drain it, or it stays readable and the thread spins.
            sys::drain(wake);
            if sh.stop.load(Ordering::Relaxed) {
                break;
            }
        }
        if readable {
            // Bounded rounds so due frames and the stop flag are checked regularly.
            for _ in 0..16 {
                apply_pending(&mut link);
                let n = rb.recv(rx.fd())?;
                let now = sys::monotonic_ns();
                for i in 0..n {
                    let (frame, trunc, outgoing) = rb.get(i);
                    if outgoing {
                        continue;
                    }
                    if trunc || frame.len() > rx.max_frame() {
                        io.rx_oversize += 1;
                        continue;
                    }
                    link.input(now, frame);
                }
                flush(&mut link, &mut io, now)?;
                if n < BATCH {
                    break;
                }
            }
        }
        *me.stats.lock().unwrap() = DirStats {
            link: link.stats(),
            ..io
        };
    }
    *me.stats.lock().unwrap() = DirStats {
        link: link.stats(),
        ..io
    };
    Ok(())
}
