//! The handshake payloads: a compact, versioned binary encoding carried
//! encrypted inside the Noise messages. Every field is bounds-checked on
//! decode; a peer that sends something else gets a `Malformed` error, never
//! a panic. Layouts are in docs/protocol.md, section 2.

use super::HandshakeError;
use crate::packet::CipherKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Payload format version (first byte of both payloads). Version 2 added
/// the UDP MTU and keepalive period, negotiated by both sides.
pub const PAYLOAD_VERSION: u8 = 2;
/// The smallest UDP payload either side may offer (IPv4's minimum
/// reassembly size; the tunnel needs room for a useful segment).
pub const MIN_UDP_MTU: u16 = 576;
/// Keepalive periods either side may offer, seconds.
pub const KEEPALIVE_RANGE_S: (u16, u16) = (1, 3600);
/// Longest client id, in bytes.
pub const MAX_CLIENT_ID: usize = 16;
/// Longest refusal reason, in bytes (UTF-8).
pub const MAX_REASON: usize = 200;

/// `InitPayload::ip_mode`: the server picks the client's address.
pub const IP_MODE_SERVER_ASSIGNS: u8 = 0;
/// `InitPayload::ip_mode`: the client asks for `ip`.
pub const IP_MODE_CLIENT_SET: u8 = 1;
/// `InitPayload::ip_mode`: no address on the interface (e.g. TAP bridged).
pub const IP_MODE_NONE: u8 = 2;

const STATUS_ACCEPTED: u8 = 0;
const STATUS_REFUSED: u8 = 1;
const FLAG_TAP: u8 = 1;
const FLAG_PREFIX: u8 = 2;
const FAMILY_NONE: u8 = 0;
const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;

/// Largest encoded message-1 payload (before padding).
pub const MAX_INIT_PAYLOAD: usize = 1 + 8 + 2 + 1 + 2 + 1 + 2 + 2 + 1 + MAX_CLIENT_ID + 17;
/// Largest encoded message-2 payload (a refusal with the longest reason is
/// the larger of the two forms).
pub const MAX_RESPONSE_PAYLOAD: usize = {
    let refused = 1 + 1 + 1 + MAX_REASON;
    let accepted = 1 + 1 + 1 + 2 + 2 + 17 + 17 + 1 + 2 + 2 + 2;
    if refused > accepted {
        refused
    } else {
        accepted
    }
};

/// What the client asks for (message 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitPayload {
    /// Optional name, 0..=16 bytes of `A-Za-z0-9_-` (for the server's
    /// policy and logs).
    pub client_id: String,
    /// The client's virtual interface MTU.
    pub mtu: u16,
    /// One of `IP_MODE_*`.
    pub ip_mode: u8,
    /// The address the client wants; present exactly when `ip_mode` is
    /// `IP_MODE_CLIENT_SET`.
    pub ip: Option<IpAddr>,
    /// FEC the client applies to what it sends: (data shards, parity shards).
    pub fec: Option<(u8, u8)>,
    /// The data cipher the client will use; the server must use the same.
    pub cipher: CipherKind,
    /// The largest UDP payload the client may send and receive; both sides
    /// use the smaller of the two offers.
    pub udp_mtu: u16,
    /// The client's keepalive period (s); both sides use the shorter one.
    pub keepalive_s: u16,
}

/// The server's configuration sent with an acceptance (message 2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerConfigPayload {
    /// Layer 2 (TAP) rather than layer 3 (TUN).
    pub tap: bool,
    /// The server's virtual interface MTU.
    pub mtu: u16,
    /// The largest frame the tunnel carries (interface MTU plus link header).
    pub full_frame_mtu: u16,
    /// The server's address inside the tunnel.
    pub server_ip: Option<IpAddr>,
    /// The address the client must use (None: keep its own / none).
    pub client_ip: Option<IpAddr>,
    /// Prefix length of the tunnel network.
    pub prefixlen: Option<u8>,
    /// FEC the server applies to what it sends.
    pub fec: Option<(u8, u8)>,
    /// The UDP MTU both sides use (the smaller of the two offers).
    pub udp_mtu: u16,
    /// The keepalive period both sides use, seconds (the shorter offer).
    pub keepalive_s: u16,
}

/// Message 2's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponsePayload {
    Accepted(ServerConfigPayload),
    Refused(String),
}

fn invalid(msg: impl Into<String>) -> HandshakeError {
    HandshakeError::InvalidPayload(msg.into())
}

pub(crate) fn valid_client_id(id: &str) -> bool {
    id.len() <= MAX_CLIENT_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_fec(fec: Option<(u8, u8)>) -> Result<(u8, u8), &'static str> {
    match fec {
        None => Ok((0, 0)),
        Some((0, _)) | Some((_, 0)) => {
            Err("FEC needs at least one data and one parity shard (send no FEC instead of a 0)")
        }
        // Reed-Solomon over GF(2^8) has at most 256 shards per group; the
        // flags allow at most 255 in all.
        Some((d, p)) if d as usize + p as usize > 255 => {
            Err("FEC groups hold at most 255 shards (data + parity)")
        }
        Some(p) => Ok(p),
    }
}

impl InitPayload {
    /// Checks the fields a peer would refuse, with a message for the user.
    pub fn validate(&self) -> Result<(), HandshakeError> {
        if !valid_client_id(&self.client_id) {
            return Err(invalid(format!(
                "client id {:?} is invalid: use at most {MAX_CLIENT_ID} characters from A-Z a-z 0-9 _ -",
                self.client_id
            )));
        }
        match (self.ip_mode, self.ip) {
            (IP_MODE_CLIENT_SET, None) => {
                return Err(invalid("ip mode 1 (client-set) needs an address"))
            }
            (IP_MODE_CLIENT_SET, Some(_)) => {}
            (IP_MODE_SERVER_ASSIGNS | IP_MODE_NONE, None) => {}
            (IP_MODE_SERVER_ASSIGNS | IP_MODE_NONE, Some(_)) => {
                return Err(invalid(
                    "an address is only sent with ip mode 1 (client-set)",
                ))
            }
            (m, _) => {
                return Err(invalid(format!(
                    "ip mode {m} is invalid: 0 server-assigns, 1 client-set, 2 none"
                )))
            }
        }
        check_fec(self.fec).map_err(invalid)?;
        check_terms(self.udp_mtu, self.keepalive_s).map_err(invalid)?;
        Ok(())
    }
}

fn check_terms(udp_mtu: u16, keepalive_s: u16) -> Result<(), String> {
    if udp_mtu < MIN_UDP_MTU {
        return Err(format!(
            "UDP MTU {udp_mtu} is below the minimum of {MIN_UDP_MTU} bytes"
        ));
    }
    let (lo, hi) = KEEPALIVE_RANGE_S;
    if !(lo..=hi).contains(&keepalive_s) {
        return Err(format!(
            "keepalive period {keepalive_s} s is out of range ({lo}..{hi} s)"
        ));
    }
    Ok(())
}

impl ServerConfigPayload {
    /// Checks what the client would reject, so the server can say so
    /// before answering.
    pub fn validate(&self) -> Result<(), HandshakeError> {
        check_fec(self.fec).map_err(invalid)?;
        check_terms(self.udp_mtu, self.keepalive_s).map_err(invalid)?;
        if let Some(p) = self.prefixlen {
            let v4 = matches!(self.client_ip.or(self.server_ip), Some(IpAddr::V4(_)));
            if p > 128 || (v4 && p > 32) {
                return Err(invalid(format!(
                    "prefix length {p} is out of range for the tunnel addresses"
                )));
            }
        }
        Ok(())
    }
}

fn put_ip(out: &mut Vec<u8>, ip: Option<IpAddr>) {
    match ip {
        None => out.push(FAMILY_NONE),
        Some(IpAddr::V4(a)) => {
            out.push(FAMILY_V4);
            out.extend_from_slice(&a.octets());
        }
        Some(IpAddr::V6(a)) => {
            out.push(FAMILY_V6);
            out.extend_from_slice(&a.octets());
        }
    }
}

/// A bounds-checked cursor over an untrusted payload.
struct Rd<'a>(&'a [u8]);

const SHORT: HandshakeError = HandshakeError::Malformed("payload is truncated");

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HandshakeError> {
        if self.0.len() < n {
            return Err(SHORT);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, HandshakeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, HandshakeError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().map_err(|_| SHORT)?,
        ))
    }
    fn u64(&mut self) -> Result<u64, HandshakeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| SHORT)?,
        ))
    }
    fn ip(&mut self) -> Result<Option<IpAddr>, HandshakeError> {
        match self.u8()? {
            FAMILY_NONE => Ok(None),
            FAMILY_V4 => {
                let b: [u8; 4] = self.take(4)?.try_into().map_err(|_| SHORT)?;
                Ok(Some(IpAddr::V4(Ipv4Addr::from(b))))
            }
            FAMILY_V6 => {
                let b: [u8; 16] = self.take(16)?.try_into().map_err(|_| SHORT)?;
                Ok(Some(IpAddr::V6(Ipv6Addr::from(b))))
            }
            _ => Err(HandshakeError::Malformed("unknown address family")),
        }
    }
    fn fec(&mut self) -> Result<Option<(u8, u8)>, HandshakeError> {
        match (self.u8()?, self.u8()?) {
            (0, 0) => Ok(None),
            (0, _) => Err(HandshakeError::Malformed(
                "FEC parity shards without data shards",
            )),
            p => Ok(Some(p)),
        }
    }
    fn version(&mut self) -> Result<(), HandshakeError> {
        match self.u8()? {
            PAYLOAD_VERSION => Ok(()),
            _ => Err(HandshakeError::Malformed(
                "unsupported payload version (peer runs a different kcpvpn version)",
            )),
        }
    }
}

/// Encodes message 1's payload (without padding) after validating it.
pub fn encode_init(
    p: &InitPayload,
    timestamp_ms: u64,
    out: &mut Vec<u8>,
) -> Result<(), HandshakeError> {
    p.validate()?;
    let (ds, ps) = check_fec(p.fec).map_err(invalid)?;
    out.push(PAYLOAD_VERSION);
    out.extend_from_slice(&timestamp_ms.to_le_bytes());
    out.extend_from_slice(&p.mtu.to_le_bytes());
    out.push(p.ip_mode);
    out.extend_from_slice(&[ds, ps, p.cipher.to_wire()]);
    out.extend_from_slice(&p.udp_mtu.to_le_bytes());
    out.extend_from_slice(&p.keepalive_s.to_le_bytes());
    out.push(p.client_id.len() as u8);
    out.extend_from_slice(p.client_id.as_bytes());
    if p.ip_mode == IP_MODE_CLIENT_SET {
        put_ip(out, p.ip);
    }
    Ok(())
}

/// Decodes message 1's payload: (timestamp in unix ms, payload). Trailing
/// bytes must be zero padding.
pub fn decode_init(b: &[u8]) -> Result<(u64, InitPayload), HandshakeError> {
    let mut r = Rd(b);
    r.version()?;
    let ts = r.u64()?;
    let mtu = r.u16()?;
    let ip_mode = r.u8()?;
    let fec = r.fec()?;
    let cipher =
        CipherKind::from_wire(r.u8()?).ok_or(HandshakeError::Malformed("unknown cipher code"))?;
    let udp_mtu = r.u16()?;
    let keepalive_s = r.u16()?;
    check_terms(udp_mtu, keepalive_s)
        .map_err(|_| HandshakeError::Malformed("UDP MTU or keepalive period out of range"))?;
    let n = r.u8()? as usize;
    if n > MAX_CLIENT_ID {
        return Err(HandshakeError::Malformed("client id too long"));
    }
    let id = r.take(n)?;
    // valid_client_id only admits ASCII, so the conversion cannot fail after it.
    let client_id = std::str::from_utf8(id).ok().filter(|s| valid_client_id(s));
    let client_id = client_id.ok_or(HandshakeError::Malformed(
        "client id has characters outside A-Za-z0-9_-",
    ))?;
    let ip = match ip_mode {
        IP_MODE_CLIENT_SET => Some(
            r.ip()?
                .ok_or(HandshakeError::Malformed("ip mode 1 without an address"))?,
        ),
        IP_MODE_SERVER_ASSIGNS | IP_MODE_NONE => None,
        _ => return Err(HandshakeError::Malformed("unknown ip mode")),
    };
    if r.0.iter().any(|&x| x != 0) {
        return Err(HandshakeError::Malformed("non-zero padding"));
    }
    Ok((
        ts,
        InitPayload {
            client_id: client_id.to_owned(),
            mtu,
            ip_mode,
            ip,
            fec,
            cipher,
            udp_mtu,
            keepalive_s,
        },
    ))
}

/// Cuts `reason` to at most `MAX_REASON` bytes on a character boundary.
pub fn clip_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON {
        return reason;
    }
    let mut end = MAX_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Encodes message 2's payload. Infallible: the reason is clipped and every
/// configuration value has an encoding (the client validates on decode; use
/// `ServerConfigPayload::validate` to catch mistakes first).
pub fn encode_response(p: &ResponsePayload, out: &mut Vec<u8>) {
    out.push(PAYLOAD_VERSION);
    match p {
        ResponsePayload::Refused(reason) => {
            let r = clip_reason(reason);
            out.extend_from_slice(&[STATUS_REFUSED, r.len() as u8]);
            out.extend_from_slice(r.as_bytes());
        }
        ResponsePayload::Accepted(c) => {
            let flags = if c.tap { FLAG_TAP } else { 0 }
                | if c.prefixlen.is_some() {
                    FLAG_PREFIX
                } else {
                    0
                };
            out.extend_from_slice(&[STATUS_ACCEPTED, flags]);
            out.extend_from_slice(&c.mtu.to_le_bytes());
            out.extend_from_slice(&c.full_frame_mtu.to_le_bytes());
            put_ip(out, c.server_ip);
            put_ip(out, c.client_ip);
            out.push(c.prefixlen.unwrap_or(0));
            let (ds, ps) = c.fec.unwrap_or((0, 0));
            out.extend_from_slice(&[ds, ps]);
            out.extend_from_slice(&c.udp_mtu.to_le_bytes());
            out.extend_from_slice(&c.keepalive_s.to_le_bytes());
        }
    }
}

/// Decodes message 2's payload. No trailing bytes allowed.
pub fn decode_response(b: &[u8]) -> Result<ResponsePayload, HandshakeError> {
    let mut r = Rd(b);
    r.version()?;
    let out = match r.u8()? {
        STATUS_REFUSED => {
            let n = r.u8()? as usize;
            if n > MAX_REASON {
                return Err(HandshakeError::Malformed("refusal reason too long"));
            }
            let raw = std::str::from_utf8(r.take(n)?)
                .map_err(|_| HandshakeError::Malformed("refusal reason is not UTF-8"))?;
            // The reason ends up on a terminal: no control characters.
            let reason = raw
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            ResponsePayload::Refused(reason)
        }
        STATUS_ACCEPTED => {
            let flags = r.u8()?;
            if flags & !(FLAG_TAP | FLAG_PREFIX) != 0 {
                return Err(HandshakeError::Malformed("unknown configuration flags"));
            }
            let mtu = r.u16()?;
            let full_frame_mtu = r.u16()?;
            let server_ip = r.ip()?;
            let client_ip = r.ip()?;
            let prefix = r.u8()?;
            let fec = r.fec()?;
            let udp_mtu = r.u16()?;
            let keepalive_s = r.u16()?;
            let prefixlen = if flags & FLAG_PREFIX != 0 {
                Some(prefix)
            } else {
                None
            };
            let c = ServerConfigPayload {
                tap: flags & FLAG_TAP != 0,
                mtu,
                full_frame_mtu,
                server_ip,
                client_ip,
                prefixlen,
                fec,
                udp_mtu,
                keepalive_s,
            };
            c.validate()
                .map_err(|_| HandshakeError::Malformed("server configuration out of range"))?;
            ResponsePayload::Accepted(c)
        }
        _ => return Err(HandshakeError::Malformed("unknown response status")),
    };
    if !r.0.is_empty() {
        return Err(HandshakeError::Malformed(
            "trailing bytes after the response payload",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn init() -> InitPayload {
        InitPayload {
            client_id: "laptop-1".into(),
            mtu: 1400,
            ip_mode: IP_MODE_CLIENT_SET,
            ip: Some("10.0.0.2".parse().unwrap()),
            fec: Some((10, 3)),
            cipher: CipherKind::ChaCha20Poly1305,
            udp_mtu: 1350,
            keepalive_s: 10,
        }
    }

    #[test]
    fn init_round_trip_with_padding() {
        let mut v = Vec::new();
        encode_init(&init(), 1_700_000_000_123, &mut v).unwrap();
        v.extend_from_slice(&[0; 50]);
        assert_eq!(decode_init(&v).unwrap(), (1_700_000_000_123, init()));
        // Non-zero padding is refused.
        *v.last_mut().unwrap() = 1;
        assert!(matches!(decode_init(&v), Err(HandshakeError::Malformed(_))));
    }

    #[test]
    fn init_validation() {
        let mut p = init();
        p.client_id = "bad id!".into();
        assert!(encode_init(&p, 0, &mut Vec::new())
            .unwrap_err()
            .to_string()
            .contains("A-Z a-z 0-9"));
        p.client_id = "x".repeat(17);
        assert!(encode_init(&p, 0, &mut Vec::new()).is_err());
        p.client_id = "x".repeat(16);
        assert!(encode_init(&p, 0, &mut Vec::new()).is_ok());
        p.ip = None;
        assert!(encode_init(&p, 0, &mut Vec::new()).is_err());
        p.ip_mode = IP_MODE_NONE;
        assert!(encode_init(&p, 0, &mut Vec::new()).is_ok());
        p.ip_mode = 3;
        assert!(encode_init(&p, 0, &mut Vec::new()).is_err());
        p.ip_mode = IP_MODE_SERVER_ASSIGNS;
        p.fec = Some((0, 2));
        assert!(encode_init(&p, 0, &mut Vec::new()).is_err());
    }

    #[test]
    fn decoder_rejects_bad_fields() {
        let mut v = Vec::new();
        encode_init(&init(), 5, &mut v).unwrap();
        // version, ip mode, FEC (parity without data), cipher, id length, address family
        // and the UDP MTU (below 576) and keepalive (0) of version 2
        let cases: [(usize, u8); 8] = [
            (0, 1),
            (11, 3),
            (12, 0),
            (14, 9),
            (16, 1),
            (17, 0),
            (19, 17),
            (28, 5),
        ];
        for (at, val) in cases {
            let mut w = v.clone();
            w[at] = val;
            assert!(
                matches!(decode_init(&w), Err(HandshakeError::Malformed(_))),
                "byte {at} = {val}"
            );
        }
        // bad character in the id
        let mut w = v.clone();
        w[20] = b'!';
        assert!(decode_init(&w).is_err());
        for n in 0..v.len() {
            assert!(decode_init(&v[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn response_round_trips() {
        let c = ServerConfigPayload {
            tap: true,
            mtu: 1350,
            full_frame_mtu: 1364,
            server_ip: Some("fd00::1".parse().unwrap()),
            client_ip: Some("fd00::2".parse().unwrap()),
            prefixlen: Some(64),
            fec: Some((20, 5)),
            udp_mtu: 1350,
            keepalive_s: 10,
        };
        for p in [
            ResponsePayload::Accepted(c.clone()),
            ResponsePayload::Accepted(ServerConfigPayload {
                udp_mtu: MIN_UDP_MTU,
                keepalive_s: 1,
                ..Default::default()
            }),
            ResponsePayload::Refused("no".into()),
        ] {
            let mut v = Vec::new();
            encode_response(&p, &mut v);
            assert!(v.len() <= MAX_RESPONSE_PAYLOAD);
            assert_eq!(decode_response(&v).unwrap(), p);
            v.push(0);
            assert!(decode_response(&v).is_err(), "trailing byte");
        }
    }

    #[test]
    fn long_reason_is_clipped_on_a_char_boundary() {
        let long = "é".repeat(150); // 300 bytes
        let mut v = Vec::new();
        encode_response(&ResponsePayload::Refused(long), &mut v);
        assert_eq!(v.len(), MAX_RESPONSE_PAYLOAD);
        let ResponsePayload::Refused(r) = decode_response(&v).unwrap() else {
            panic!()
        };
        assert_eq!(r, "é".repeat(100));
    }

    #[test]
    fn reason_control_chars_are_neutralised() {
        let mut v = Vec::new();
        encode_response(&ResponsePayload::Refused("a\x1b[2Jb".into()), &mut v);
        assert_eq!(
            decode_response(&v).unwrap(),
            ResponsePayload::Refused("a?[2Jb".into())
        );
    }

    #[test]
    fn out_of_range_prefix_is_rejected() {
        let c = ServerConfigPayload {
            client_ip: Some("10.0.0.2".parse().unwrap()),
            prefixlen: Some(33),
            udp_mtu: 1350,
            keepalive_s: 10,
            ..Default::default()
        };
        assert!(c.validate().is_err());
        let mut v = Vec::new();
        encode_response(&ResponsePayload::Accepted(c), &mut v);
        assert!(decode_response(&v).is_err());
    }

    fn arb_ip() -> impl Strategy<Value = Option<IpAddr>> {
        prop_oneof![
            Just(None),
            any::<[u8; 4]>().prop_map(|b| Some(IpAddr::from(b))),
            any::<[u8; 16]>().prop_map(|b| Some(IpAddr::from(b))),
        ]
    }

    fn arb_fec() -> impl Strategy<Value = Option<(u8, u8)>> {
        // Valid groups only: at least one of each kind, at most 255 shards.
        prop_oneof![
            Just(None),
            (1u8..=254)
                .prop_flat_map(|d| (Just(d), 1u8..=(255 - d)))
                .prop_map(Some)
        ]
    }

    #[test]
    fn unusable_fec_groups_are_refused() {
        for bad in [(10, 0), (0, 3), (200, 200), (128, 128)] {
            assert!(check_fec(Some(bad)).is_err(), "{bad:?} accepted");
        }
        assert_eq!(check_fec(Some((254, 1))), Ok((254, 1)));
    }

    fn arb_init() -> impl Strategy<Value = InitPayload> {
        (
            "[A-Za-z0-9_-]{0,16}",
            any::<u16>(),
            0u8..3,
            arb_ip().prop_filter("v", |i| i.is_some()),
            arb_fec(),
            prop::sample::select(CipherKind::ALL.to_vec()),
            MIN_UDP_MTU..=u16::MAX,
            1u16..=3600,
        )
            .prop_map(
                |(client_id, mtu, ip_mode, ip, fec, cipher, udp_mtu, keepalive_s)| InitPayload {
                    client_id,
                    mtu,
                    ip_mode,
                    ip: if ip_mode == IP_MODE_CLIENT_SET {
                        ip
                    } else {
                        None
                    },
                    fec,
                    cipher,
                    udp_mtu,
                    keepalive_s,
                },
            )
    }

    proptest! {
        #[test]
        fn prop_init_round_trip(p in arb_init(), ts in any::<u64>(), pad in 0usize..300) {
            let mut v = Vec::new();
            encode_init(&p, ts, &mut v).unwrap();
            prop_assert!(v.len() <= MAX_INIT_PAYLOAD);
            v.resize(v.len() + pad, 0);
            prop_assert_eq!(decode_init(&v).unwrap(), (ts, p));
        }

        #[test]
        fn prop_response_round_trip(tap in any::<bool>(), mtu in any::<u16>(), ff in any::<u16>(),
                                    s in arb_ip(), c in arb_ip(), prefix in prop::option::of(0u8..=32),
                                    fec in arb_fec(), reason in ".{0,300}", refused in any::<bool>(),
                                    udp_mtu in MIN_UDP_MTU..=u16::MAX, keepalive_s in 1u16..=3600) {
            let p = if refused {
                ResponsePayload::Refused(reason.clone())
            } else {
                ResponsePayload::Accepted(ServerConfigPayload { tap, mtu, full_frame_mtu: ff, server_ip: s, client_ip: c, prefixlen: prefix, fec, udp_mtu, keepalive_s })
            };
            let mut v = Vec::new();
            encode_response(&p, &mut v);
            prop_assert!(v.len() <= MAX_RESPONSE_PAYLOAD);
            let d = decode_response(&v).unwrap();
            match (&p, d) {
                (ResponsePayload::Refused(r), ResponsePayload::Refused(got)) => {
                    let want: String = clip_reason(r).chars().map(|c| if c.is_control() { '?' } else { c }).collect();
                    prop_assert_eq!(got, want);
                }
                (a, b) => prop_assert_eq!(a, &b),
            }
        }

        #[test]
        fn prop_decoders_never_panic(b in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_init(&b);
            let _ = decode_response(&b);
        }
    }
}
