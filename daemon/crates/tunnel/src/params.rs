//! Every bound and default of the data plane, defined once. The command
//! line's flag table, its validation and the docs read them through the
//! Python bindings (`kcpvpn._engine`); nothing restates them.
//!
//! [`SessionParams`] is one side's transport settings (the flags);
//! [`Terms`] is what the handshake settled for one session; from both,
//! [`SessionParams::session_config`] derives the session's configuration.
use crate::session::{overhead, SessionConfig};
use kcpvpn_crypto::handshake::{KEEPALIVE_RANGE_S, MIN_UDP_MTU};
use kcpvpn_crypto::packet::CipherKind;
use kcpvpn_kcp::KcpConfig;

/// Largest UDP payload either side may configure: 576 (IPv4's minimum
/// reassembly size) .. 8972 (a 9000-byte jumbo frame minus IPv4 and UDP).
pub const UDP_MTU_RANGE: (u16, u16) = (MIN_UDP_MTU, 8972);
/// Interface MTU: the smallest IPv4 datagram every host takes .. jumbo.
pub const VNI_MTU_RANGE: (u16, u16) = (576, 9000);
/// IPv6 needs at least this link MTU (RFC 8200).
pub const IPV6_MIN_MTU: u16 = 1280;
/// Largest frame read from an interface.
pub const FRAME_MTU_MAX: u32 = 65535;
/// Default full-frame MTU = interface MTU + this: an Ethernet header (14),
/// a VLAN tag (4) and 4 bytes of slack, so TAP frames are never cut.
pub const FRAME_HEADROOM: u16 = 22;
/// KCP windows, segments: below 64 a fast link stalls; a large message
/// must fit the receive window.
pub const WINDOW_RANGE: (u16, u16) = (64, 32768);
/// Reed-Solomon over GF(2^8): data + parity shards per group.
pub const FEC_MAX_SHARDS: u16 = 255;
/// Keepalive period, seconds.
pub const KEEPALIVE_RANGE: (u16, u16) = KEEPALIVE_RANGE_S;
/// Seconds between key updates (`--rekey-interval`).
pub const REKEY_INTERVAL_RANGE: (u32, u32) = (1, 86_400);
/// A peer silent for this many keepalive periods (plus a second) is gone.
pub const IDLE_KEEPALIVES: u32 = 3;
/// KCP timer interval, ms (KCP clamps to this itself).
pub const INTERVAL_RANGE: (u32, u32) = (10, 5000);
pub const RESEND_MAX: u32 = 255;
/// Socket and send-queue buffers, bytes.
pub const BUFFER_RANGE: (u32, u32) = (65536, 1 << 30);
/// DSCP is 6 bits.
pub const DSCP_MAX: u8 = 63;
/// IP + UDP headers in front of each datagram (IPv4; IPv6 adds 20).
pub const IP_UDP_HEADER: usize = 28;

/// The original's `--kcp-mode` profiles: (name, nodelay, interval ms,
/// resend, nc). `manual` takes the four values from the hidden flags.
pub const KCP_PROFILES: [(&str, bool, u32, u32, bool); 4] = [
    ("normal", false, 40, 2, true),
    ("fast", false, 30, 2, true),
    ("fast2", true, 20, 2, true),
    ("fast3", true, 10, 2, true),
];
pub const KCP_MODES: [&str; 5] = ["fast3", "fast2", "fast", "normal", "manual"];
pub const CONGESTION: [&str; 2] = ["bbr", "off"];

/// Defaults of the transport flags.
pub mod defaults {
    pub const UDP_MTU: u16 = 1350;
    pub const KCP_MODE: &str = "fast";
    pub const SND_WND: u16 = 4096;
    pub const RCV_WND: u16 = 4096;
    pub const DATA_SHARDS: u8 = 10;
    /// The most parity per group; the peer's loss reports pick how many.
    pub const PARITY_SHARDS: u8 = 8;
    pub const RAPID_FEC: bool = true;
    pub const CONGESTION: &str = "bbr";
    pub const CIPHER: &str = "aes";
    pub const KEEPALIVE_S: u16 = 10;
    pub const REKEY_INTERVAL_S: u32 = 120;
    pub const SOCKBUF: u32 = 4 << 20;
    pub const SMUXBUF: u32 = 4 << 20;
    pub const VNI_MTU: u16 = 1500;
    /// Manual KCP mode's values when none are given.
    pub const MANUAL: (bool, u32, u32, bool) = (false, 50, 0, false);
}

/// A setting that cannot be used, with what would be right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParamError(pub String);

fn err<T>(msg: String) -> Result<T, ParamError> {
    Err(ParamError(msg))
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    what: &str,
    v: T,
    (lo, hi): (T, T),
) -> Result<(), ParamError> {
    if v < lo || v > hi {
        return err(format!("{what} {v} is out of range: use {lo}..{hi}"));
    }
    Ok(())
}

/// KCP's timing profile: a named one or the four values of manual mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KcpMode {
    Profile(&'static str),
    Manual {
        nodelay: bool,
        interval: u32,
        resend: u32,
        nc: bool,
    },
}

impl KcpMode {
    pub fn parse(name: &str) -> Result<KcpMode, ParamError> {
        match KCP_PROFILES.iter().find(|p| p.0 == name) {
            Some(p) => Ok(KcpMode::Profile(p.0)),
            None if name == "manual" => {
                let (nodelay, interval, resend, nc) = defaults::MANUAL;
                Ok(KcpMode::Manual {
                    nodelay,
                    interval,
                    resend,
                    nc,
                })
            }
            None => err(format!(
                "KCP mode {name:?} is unknown: use {}",
                KCP_MODES.join(", ")
            )),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            KcpMode::Profile(n) => n,
            KcpMode::Manual { .. } => "manual",
        }
    }

    /// (nodelay, interval ms, resend, nc).
    pub fn values(&self) -> (bool, u32, u32, bool) {
        match *self {
            KcpMode::Profile(n) => {
                let p = KCP_PROFILES
                    .iter()
                    .find(|p| p.0 == n)
                    .expect("profile names come from the table");
                (p.1, p.2, p.3, p.4)
            }
            KcpMode::Manual {
                nodelay,
                interval,
                resend,
                nc,
            } => (nodelay, interval, resend, nc),
        }
    }
}

/// One side's transport settings: what its flags say.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionParams {
    pub kcp_mode: KcpMode,
    pub snd_wnd: u16,
    pub rcv_wnd: u16,
    pub ack_nodelay: bool,
    /// BBR-style pacing (true) or the reference's window (false).
    pub bbr: bool,
    pub unordered: bool,
    /// FEC of what this side sends: (data, most parity); None = off.
    pub fec: Option<(u8, u8)>,
    pub rapid_fec: bool,
    pub cipher: CipherKind,
    pub keepalive_s: u16,
    /// Largest UDP payload this side sends and takes; the session uses the
    /// smaller of the two sides' values.
    pub udp_mtu: u16,
    /// Bytes queued for sending before the interface is read no further.
    pub send_buffer: u32,
    /// Lower the MSS of TCP SYNs crossing the tunnel to fit it.
    pub mss_clamp: bool,
    /// Flow queueing with CoDel at the tunnel's entry.
    pub flow_queueing: bool,
    /// Seconds between key updates; the client starts them.
    pub rekey_interval_s: u32,
}

impl Default for SessionParams {
    fn default() -> Self {
        SessionParams {
            kcp_mode: KcpMode::parse(defaults::KCP_MODE).expect("the default mode exists"),
            snd_wnd: defaults::SND_WND,
            rcv_wnd: defaults::RCV_WND,
            ack_nodelay: false,
            bbr: defaults::CONGESTION == "bbr",
            unordered: false,
            fec: Some((defaults::DATA_SHARDS, defaults::PARITY_SHARDS)),
            rapid_fec: defaults::RAPID_FEC,
            cipher: CipherKind::parse(defaults::CIPHER).expect("the default cipher exists"),
            keepalive_s: defaults::KEEPALIVE_S,
            udp_mtu: defaults::UDP_MTU,
            send_buffer: defaults::SMUXBUF,
            mss_clamp: true,
            flow_queueing: true,
            rekey_interval_s: defaults::REKEY_INTERVAL_S,
        }
    }
}

/// What the handshake settled for one session, from this side's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    /// FEC the peer applies to what it sends us.
    pub peer_fec: Option<(u8, u8)>,
    /// The UDP MTU both sides use.
    pub udp_mtu: u16,
    /// The keepalive period both sides use, seconds.
    pub keepalive_s: u16,
    /// The tunnel interface's MTU (for the MSS clamp).
    pub vni_mtu: u16,
    /// The largest packet or frame the tunnel carries.
    pub max_frame: u16,
    /// Ethernet frames (TAP) rather than IP packets.
    pub tap: bool,
}

/// Checks a peer's FEC offer: usable by Reed-Solomon and within what we
/// are willing to hold per session.
pub fn check_peer_fec(fec: Option<(u8, u8)>) -> Result<(), ParamError> {
    if let Some((d, p)) = fec {
        if d == 0 || p == 0 {
            return err("FEC needs at least one data and one parity shard".into());
        }
        if d as u16 + p as u16 > FEC_MAX_SHARDS {
            return err(format!(
                "FEC of {d} data + {p} parity shards exceeds {FEC_MAX_SHARDS} shards per group"
            ));
        }
    }
    Ok(())
}

impl SessionParams {
    /// Checks every value against its bounds.
    pub fn validate(&self) -> Result<(), ParamError> {
        in_range("send window", self.snd_wnd, WINDOW_RANGE)?;
        in_range("receive window", self.rcv_wnd, WINDOW_RANGE)?;
        in_range("UDP MTU", self.udp_mtu, UDP_MTU_RANGE)?;
        in_range("keepalive period (s)", self.keepalive_s, KEEPALIVE_RANGE)?;
        in_range("send buffer", self.send_buffer, BUFFER_RANGE)?;
        check_peer_fec(self.fec)?;
        if let KcpMode::Manual {
            interval, resend, ..
        } = self.kcp_mode
        {
            in_range("KCP interval (ms)", interval, INTERVAL_RANGE)?;
            in_range("KCP resend", resend, (0, RESEND_MAX))?;
        }
        if (self.udp_mtu as usize) < overhead(self.fec.is_some()) + kcpvpn_kcp::wire::OVERHEAD + 256
        {
            return err(format!(
                "UDP MTU {} is too small to carry data",
                self.udp_mtu
            ));
        }
        Ok(())
    }

    /// The UDP MTU both sides use, given the peer's offer.
    pub fn agree_udp_mtu(&self, peer: u16) -> u16 {
        self.udp_mtu.min(peer).max(UDP_MTU_RANGE.0)
    }

    /// The keepalive period both sides use: the shorter one, so neither
    /// side declares the other idle while it keeps to its own period.
    pub fn agree_keepalive(&self, peer: u16) -> u16 {
        self.keepalive_s.min(peer).max(KEEPALIVE_RANGE.0)
    }

    fn kcp_config(&self) -> KcpConfig {
        let (nodelay, interval, resend, nc) = self.kcp_mode.values();
        KcpConfig {
            snd_wnd: self.snd_wnd,
            rcv_wnd: self.rcv_wnd,
            ack_nodelay: self.ack_nodelay,
            bbr: self.bbr,
            unordered: self.unordered,
            ..KcpConfig::manual(nodelay, interval, resend, nc)
        }
    }

    /// The configuration of one session with these settings and terms.
    pub fn session_config(&self, t: &Terms) -> Result<SessionConfig, ParamError> {
        check_peer_fec(t.peer_fec)?;
        if t.udp_mtu < UDP_MTU_RANGE.0 {
            return err(format!("agreed UDP MTU {} is too small", t.udp_mtu));
        }
        let keepalive_ms = t.keepalive_s.max(1) as u32 * 1000;
        Ok(SessionConfig {
            kcp: self.kcp_config(),
            fec_send: self.fec,
            fec_recv: t.peer_fec,
            rapid_fec: self.rapid_fec,
            cipher: self.cipher,
            keepalive_ms,
            idle_timeout_ms: IDLE_KEEPALIVES * keepalive_ms + 1000,
            udp_mtu: t.udp_mtu as usize,
            send_buffer_bytes: self.send_buffer as usize,
            max_packet: t.max_frame as usize,
            mss_clamp_mtu: self.mss_clamp.then_some(t.vni_mtu),
            ethernet: t.tap,
            flow_queueing: self.flow_queueing,
            rekey_interval_ms: self.rekey_interval_s.saturating_mul(1000),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_make_a_session() {
        let p = SessionParams::default();
        p.validate().unwrap();
        let t = Terms {
            peer_fec: Some((10, 3)),
            udp_mtu: 1350,
            keepalive_s: 10,
            vni_mtu: 1500,
            max_frame: 1522,
            tap: false,
        };
        let c = p.session_config(&t).unwrap();
        assert_eq!((c.keepalive_ms, c.idle_timeout_ms), (10_000, 31_000));
        crate::session::Session::new(c, 1, &[0; 32], &[0; 32], 2, 0).unwrap();
    }

    #[test]
    fn both_sides_agree_on_the_smaller_mtu_and_shorter_keepalive() {
        let p = SessionParams::default();
        assert_eq!(p.agree_udp_mtu(2100), 1350);
        assert_eq!(p.agree_udp_mtu(1200), 1200);
        assert_eq!(p.agree_keepalive(60), 10);
        assert_eq!(p.agree_keepalive(5), 5);
    }

    #[test]
    fn out_of_range_values_are_named() {
        let p = SessionParams {
            udp_mtu: 100,
            ..SessionParams::default()
        };
        assert!(p.validate().unwrap_err().0.contains("UDP MTU 100"));
        assert!(check_peer_fec(Some((200, 100))).is_err());
        assert!(check_peer_fec(Some((0, 3))).is_err());
        assert!(KcpMode::parse("turbo").unwrap_err().0.contains("fast3"));
    }

    #[test]
    fn the_profile_table_matches_kcp() {
        for (name, nodelay, interval, resend, nc) in KCP_PROFILES {
            let k = KcpConfig::profile(name).unwrap();
            assert_eq!(
                (k.nodelay, k.interval, k.resend, k.nc),
                (nodelay, interval, resend, nc)
            );
        }
    }
}
