//! kcpvpn's KCP: a sans-IO ARQ that is wire-compatible with the reference C
//! KCP (skywind3000/kcp, `ikcp.c`) in message mode, but built for speed:
//!
//! * send and receive buffers are rings indexed by `sn % capacity`, so an ACK,
//!   an UNA advance and a received segment cost O(1) (the reference scans lists);
//! * segment payloads live in preallocated, reused buffers: no allocation per
//!   segment once the buffers are warm;
//! * output is flushed on demand: after `send` or `input` the caller may call
//!   [`Kcp::flush`] at once and get the ACKs and new data as datagrams, instead
//!   of waiting for the next interval tick. [`Kcp::update`] / [`Kcp::check`]
//!   keep the reference's tick for timers.
//!
//! Time is `u32` milliseconds from an arbitrary origin, wrapping; nothing here
//! reads a clock or does I/O. The wire format is in docs/protocol.md §3.
pub mod bbr;
mod kcp;
pub mod wire;

pub use kcp::Kcp;
pub use wire::{
    carries_any_segment, carries_segment, CMD_ACK, CMD_PUSH, CMD_WASK, CMD_WINS, OVERHEAD,
};

/// Smallest receive window, as in the reference: a peer may send messages of
/// up to 127 fragments, which must all fit in our window to be reassembled.
pub const MIN_RCV_WND: u16 = 128;
/// Largest number of fragments of one message (`frg` is one byte).
pub const MAX_FRAGMENTS: usize = 255;
/// Smallest MTU the reference accepts.
pub const MIN_MTU: usize = 50;
/// Largest MTU (a UDP payload can be no larger).
pub const MAX_MTU: usize = 65535;

/// Tuning of one KCP endpoint. Both ends should use the same profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KcpConfig {
    /// Reference `nodelay`: minimum RTO 30 ms instead of 100 ms, RTO backoff
    /// x1.5 instead of x2, no extra rto/8 on a first transmission.
    pub nodelay: bool,
    /// Timer tick in ms (clamped to 10..=5000 like the reference).
    pub interval: u32,
    /// Fast retransmit after this many ACKs that skipped a segment (0 = off).
    pub resend: u32,
    /// No congestion window (only the send and remote windows limit sending).
    pub nc: bool,
    /// Send window in segments.
    pub snd_wnd: u16,
    /// Receive window in segments (at least 128, as in the reference).
    pub rcv_wnd: u16,
    /// Largest datagram emitted, bytes (segments of up to `mtu - 24` payload bytes).
    pub mtu: usize,
    /// Send ACKs without waiting for the interval tick: `check` returns `now`
    /// and `update` flushes ACKs whenever some are pending.
    pub ack_nodelay: bool,
    /// A segment transmitted this many times marks the link dead (`is_dead`).
    pub dead_link: u32,
    /// Pace sending and bound data in flight by a model of the path
    /// (bottleneck rate and propagation delay; see [`bbr`]) instead of the
    /// reference's loss-driven window. Overrides `nc`. Off by default, like
    /// the reference; the daemon turns it on.
    pub bbr: bool,
    /// Hand out a one-segment message that arrived beyond a gap at once,
    /// instead of after the gap is filled (receiver side only; the wire is
    /// unchanged). For packets, whose order the protocols inside tolerate,
    /// this removes head-of-line blocking behind every retransmission.
    pub unordered: bool,
}

/// Profile names accepted by [`KcpConfig::profile`].
pub const PROFILES: [&str; 4] = ["normal", "fast", "fast2", "fast3"];

impl KcpConfig {
    /// The original kcpvpn's `--kcp-mode` profiles (nodelay, interval, resend, nc):
    /// normal 0,40,2,1 · fast 0,30,2,1 · fast2 1,20,2,1 · fast3 1,10,2,1.
    /// Windows 1024/1024, MTU 1400. `manual` is [`KcpConfig::manual`].
    pub fn profile(name: &str) -> Option<KcpConfig> {
        let (nodelay, interval) = match name {
            "normal" => (false, 40),
            "fast" => (false, 30),
            "fast2" => (true, 20),
            "fast3" => (true, 10),
            _ => return None,
        };
        Some(KcpConfig::manual(nodelay, interval, 2, true))
    }

    /// Caller-given (nodelay, interval, resend, nc) with the default windows and MTU.
    pub fn manual(nodelay: bool, interval: u32, resend: u32, nc: bool) -> KcpConfig {
        KcpConfig {
            nodelay,
            interval,
            resend,
            nc,
            snd_wnd: 1024,
            rcv_wnd: 1024,
            mtu: 1400,
            ack_nodelay: false,
            dead_link: 20,
            bbr: false,
            unordered: false,
        }
    }

    /// Checks values that cannot be used as given (the interval is clamped
    /// instead, like the reference does).
    pub fn validate(&self) -> Result<(), KcpError> {
        if !(MIN_MTU..=MAX_MTU).contains(&self.mtu) {
            return Err(KcpError::Config(format!(
                "mtu {} is out of range: use {MIN_MTU}..={MAX_MTU} bytes",
                self.mtu
            )));
        }
        if self.snd_wnd == 0 {
            return Err(KcpError::Config(
                "snd_wnd is 0: use at least 1 segment".into(),
            ));
        }
        if self.rcv_wnd == 0 {
            return Err(KcpError::Config(format!(
                "rcv_wnd is 0: use at least 1 (it is raised to {MIN_RCV_WND} anyway)"
            )));
        }
        if self.dead_link == 0 {
            return Err(KcpError::Config(
                "dead_link is 0: use at least 1 transmission".into(),
            ));
        }
        Ok(())
    }

    /// The configuration actually used: interval clamped to 10..=5000, receive
    /// window at least 128, MTU clamped to 50..=65535, send window and
    /// dead_link at least 1.
    pub fn normalized(&self) -> KcpConfig {
        KcpConfig {
            interval: self.interval.clamp(10, 5000),
            snd_wnd: self.snd_wnd.max(1),
            rcv_wnd: self.rcv_wnd.max(MIN_RCV_WND),
            mtu: self.mtu.clamp(MIN_MTU, MAX_MTU),
            dead_link: self.dead_link.max(1),
            ..self.clone()
        }
    }
}

impl Default for KcpConfig {
    /// The `fast` profile.
    fn default() -> KcpConfig {
        KcpConfig::manual(false, 30, 2, true)
    }
}

/// Counters (monotonic, `u64`) and a snapshot of the estimator and windows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KcpStats {
    /// Messages accepted by `send` / returned by `recv`.
    pub messages_sent: u64,
    pub messages_recv: u64,
    /// Datagrams emitted by flush / accepted by input (whole or in part).
    pub datagrams_out: u64,
    pub datagrams_in: u64,
    /// PUSH segments transmitted, retransmissions included.
    pub segments_sent: u64,
    /// PUSH segments received (duplicates and out-of-window ones included).
    pub segments_recv: u64,
    /// Retransmissions after an RTO expired.
    pub retransmits: u64,
    /// Retransmissions after `resend` ACKs skipped a segment.
    pub fast_retransmits: u64,
    /// Segments retransmitted although the peer turned out to have them: it
    /// acknowledged an earlier copy (late, or rebuilt by FEC) after the last
    /// retransmission left. Counted once per segment. A high share of
    /// `retransmits + fast_retransmits` means the timeout fires too early for
    /// the path's jitter, or FEC repairs what ARQ already resent.
    pub unneeded_retransmits: u64,
    /// PUSH segments received that we already had.
    pub dup_segments: u64,
    /// PUSH segments beyond the receive window (dropped, not acknowledged).
    pub out_of_window: u64,
    pub acks_sent: u64,
    pub acks_recv: u64,
    /// Window probes (WASK) sent / received, window tells (WINS) sent.
    pub probes_sent: u64,
    pub probes_recv: u64,
    pub wins_sent: u64,
    /// Datagrams rejected by `input` (bad conv, truncated, unknown command...).
    pub input_errors: u64,
    /// Smoothed RTT, RTT variation and retransmission timeout, ms.
    pub srtt: u32,
    pub rttvar: u32,
    pub rto: u32,
    /// Congestion window and slow-start threshold, segments (with `bbr`:
    /// the data allowed in flight, and 0).
    pub cwnd: u32,
    pub ssthresh: u32,
    /// The peer's last advertised free receive window, segments.
    pub rmt_wnd: u32,
    /// Segments queued but never sent / sent and not yet acknowledged.
    pub snd_queue: u32,
    pub snd_inflight: u32,
    /// Segments ready for `recv` / received out of order.
    pub rcv_queue: u32,
    pub rcv_buf: u32,
    /// With `bbr`: the bottleneck rate estimate (kbit/s of segments, 0
    /// before a measurement) and the propagation RTT estimate (ms).
    pub bandwidth_kbit: u64,
    pub min_rtt: u32,
    /// With `bbr`: times the model started over for want of rate samples,
    /// times a standing queue shrank the estimate, and rounds paced below
    /// the estimate to drain a standing queue.
    pub cc_restarts: u64,
    pub cc_queue_corrections: u64,
    pub cc_queue_drains: u64,
    /// With `bbr`: the pacing trim in percent (100: none; lower while the
    /// estimate runs above what the path carries).
    pub cc_trim_pct: u64,
    /// Messages handed out before a gap before them was filled (`unordered`).
    pub early_deliveries: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KcpError {
    #[error("truncated KCP datagram: the segment at byte {at} needs {need} bytes but the {len}-byte datagram ends first (dropped)")]
    Truncated { at: usize, need: usize, len: usize },
    #[error("KCP segment for conversation {got:#010x} reached conversation {expected:#010x}: route datagrams by Kcp::conv_of first")]
    ConvMismatch { expected: u32, got: u32 },
    #[error("unknown KCP command {cmd} at byte {at} (expected 81 push, 82 ack, 83 window ask, 84 window tell): not a KCP datagram or corrupted")]
    BadCommand { cmd: u8, at: usize },
    #[error("KCP segment announces a message of {fragments} fragments, more than the receive window of {rcv_wnd} segments can hold: raise rcv_wnd or make the sender use smaller messages")]
    BadFragment { fragments: usize, rcv_wnd: u32 },
    #[error("message of {size} bytes is larger than {max} bytes (min(255, rcv_wnd) fragments of mtu - 24 bytes): split it or raise the MTU")]
    MessageTooLarge { size: usize, max: usize },
    #[error("no complete message is waiting: check peek_size() first")]
    NoMessage,
    #[error("receive buffer of {have} bytes is too small for the next message of {need} bytes: use peek_size() to size it")]
    BufferTooSmall { need: usize, have: usize },
    #[error("invalid KCP configuration: {0}")]
    Config(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_match_the_original() {
        let p = |n| {
            let c = KcpConfig::profile(n).unwrap();
            (c.nodelay, c.interval, c.resend, c.nc)
        };
        assert_eq!(p("normal"), (false, 40, 2, true));
        assert_eq!(p("fast"), (false, 30, 2, true));
        assert_eq!(p("fast2"), (true, 20, 2, true));
        assert_eq!(p("fast3"), (true, 10, 2, true));
        assert!(KcpConfig::profile("turbo").is_none());
        let d = KcpConfig::default();
        assert_eq!(d, KcpConfig::profile("fast").unwrap());
        assert_eq!(
            (d.snd_wnd, d.rcv_wnd, d.mtu, d.dead_link),
            (1024, 1024, 1400, 20)
        );
    }

    #[test]
    fn validation_and_normalization() {
        let mut c = KcpConfig::default();
        assert!(c.validate().is_ok());
        c.mtu = 49;
        assert!(matches!(c.validate(), Err(KcpError::Config(m)) if m.contains("mtu 49")));
        c.mtu = 1400;
        c.snd_wnd = 0;
        assert!(c.validate().is_err());
        c.snd_wnd = 8;
        c.rcv_wnd = 16;
        c.interval = 1;
        let n = c.normalized();
        assert_eq!((n.rcv_wnd, n.interval, n.snd_wnd), (128, 10, 8));
        c.interval = 9999;
        assert_eq!(c.normalized().interval, 5000);
    }
}
