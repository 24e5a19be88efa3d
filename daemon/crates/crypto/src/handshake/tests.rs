//! Handshake tests, h11 style: drive both state machines with bytes and
//! check the events and errors that come out.
use super::*;
use crate::packet::{CipherKind, Opener, Sealer, MSG_DATA};

const PSK: [u8; 32] = [0x42; 32];
const NOW: u64 = 1_750_000_000_000;

fn wishes() -> InitPayload {
    InitPayload {
        client_id: "alice".into(),
        mtu: 1400,
        ip_mode: IP_MODE_SERVER_ASSIGNS,
        ip: None,
        fec: Some((10, 3)),
        cipher: CipherKind::Aes256Gcm,
        udp_mtu: 1350,
        keepalive_s: 10,
    }
}

fn config() -> ServerConfigPayload {
    ServerConfigPayload {
        tap: false,
        mtu: 1400,
        full_frame_mtu: 1400,
        server_ip: Some("10.8.0.1".parse().unwrap()),
        client_ip: Some("10.8.0.2".parse().unwrap()),
        prefixlen: Some(24),
        fec: Some((10, 3)),
        udp_mtu: 1350,
        keepalive_s: 10,
    }
}

#[test]
fn happy_path_both_sides_agree_on_keys() {
    let (mut ini, m1) = Initiator::new(&PSK, wishes(), 77, NOW).unwrap();
    assert_eq!(m1.len(), INIT_LEN);
    assert_eq!(&m1[..8], &[MSG_INIT, 0, 0, 0, 77, 0, 0, 0]);
    let mut resp = Responder::new(&PSK, DEFAULT_MAX_AGE_MS);
    let (req, pending) = resp.read_init(&m1, NOW + 1500).unwrap();
    assert_eq!(
        req,
        InitRequest {
            sender_id: 77,
            timestamp_ms: NOW,
            payload: wishes()
        }
    );
    assert_eq!(pending.sender_id(), 77);
    let (m2, server_keys) = pending.accept(&config(), 9001);
    assert!(m2.len() <= MAX_RESPONSE_LEN);
    assert_eq!(
        &m2[..12],
        &[MSG_RESPONSE, 0, 0, 0, 0x29, 0x23, 0, 0, 77, 0, 0, 0]
    );
    let out = ini.read_response(&m2).unwrap().unwrap();
    let HandshakeOutcome::Accepted {
        config: got,
        keys,
        server_session_id,
    } = out
    else {
        panic!("refused")
    };
    assert_eq!(got, config());
    assert_eq!(server_session_id, 9001);
    assert_eq!(keys.send, server_keys.recv);
    assert_eq!(keys.recv, server_keys.send);
    assert_ne!(keys.send, keys.recv, "directions must have different keys");
    assert_eq!(resp.stats().requests, 1);

    // The keys work for packet protection in both directions.
    let mut c_seal = Sealer::new(CipherKind::Aes256Gcm, &keys.send, 9001);
    let mut s_open = Opener::new(CipherKind::Aes256Gcm, &server_keys.recv);
    let mut d = Vec::new();
    c_seal.seal_into(MSG_DATA, b"ping", &mut d).unwrap();
    assert_eq!(s_open.open_in_place(&mut d).unwrap().payload, b"ping");
    let mut s_seal = Sealer::new(CipherKind::Aes256Gcm, &server_keys.send, 77);
    let mut c_open = Opener::new(CipherKind::Aes256Gcm, &keys.recv);
    s_seal.seal_into(MSG_DATA, b"pong", &mut d).unwrap();
    assert_eq!(c_open.open_in_place(&mut d).unwrap().payload, b"pong");

    // Finished: a second response is an error, not a second outcome.
    assert_eq!(ini.read_response(&m2), Err(HandshakeError::AlreadyComplete));
}

#[test]
fn each_handshake_gets_fresh_keys() {
    let mut resp = Responder::new(&PSK, DEFAULT_MAX_AGE_MS);
    let mut all = Vec::new();
    for _ in 0..2 {
        let (_, m1) = Initiator::new(&PSK, wishes(), 1, NOW).unwrap();
        let (_, p) = resp.read_init(&m1, NOW).unwrap();
        all.push(p.accept(&config(), 2).1);
    }
    assert_ne!(all[0], all[1]);
}

#[test]
fn wrong_psk_fails_on_the_server() {
    let (_, m1) = Initiator::new(&[1u8; 32], wishes(), 1, NOW).unwrap();
    let mut resp = Responder::new(&PSK, DEFAULT_MAX_AGE_MS);
    assert_eq!(
        resp.read_init(&m1, NOW).unwrap_err(),
        HandshakeError::AuthFailed
    );
    assert_eq!(resp.stats().auth_failures, 1);
    assert!(
        resp.seen.is_empty(),
        "nothing kept for an unauthenticated message"
    );
}

#[test]
fn wrong_psk_fails_on_the_client() {
    // A server with another secret that (somehow) answers: e.g. a message 2
    // produced from a different handshake / key. The client must refuse it.
    let (mut ini, _m1) = Initiator::new(&PSK, wishes(), 5, NOW).unwrap();
    let (_, other_m1) = Initiator::new(&[9u8; 32], wishes(), 5, NOW).unwrap();
    let mut other = Responder::new(&[9u8; 32], DEFAULT_MAX_AGE_MS);
    let (_, p) = other.read_init(&other_m1, NOW).unwrap();
    let (m2, _) = p.accept(&config(), 3);
    let e = ini.read_response(&m2).unwrap_err();
    assert_eq!(e, HandshakeError::ResponseAuthFailed);
    assert!(e
        .to_string()
        .starts_with("authentication failed: the server does not share our secret"));
}

#[test]
fn forged_response_does_not_kill_the_attempt() {
    let (mut ini, m1) = Initiator::new(&PSK, wishes(), 5, NOW).unwrap();
    let mut resp = Responder::new(&PSK, DEFAULT_MAX_AGE_MS);
    let (_, p) = resp.read_init(&m1, NOW).unwrap();
    let (m2, _) = p.accept(&config(), 3);
    let mut forged = m2.clone();
    *forged.last_mut().unwrap() ^= 1;
    assert_eq!(
        ini.read_response(&forged),
        Err(HandshakeError::ResponseAuthFailed)
    );
    let mut random = m2.clone();
    random[20] ^= 0x55; // tamper with the ephemeral key
    assert_eq!(
        ini.read_response(&random),
        Err(HandshakeError::ResponseAuthFailed)
    );
    assert!(matches!(
        ini.read_response(&m2),
        Ok(Some(HandshakeOutcome::Accepted { .. }))
    ));
}

#[test]
fn responses_for_someone_else_are_ignored() {
    let (mut ini, m1) = Initiator::new(&PSK, wishes(), 5, NOW).unwrap();
    let mut resp = Responder::new(&PSK, DEFAULT_MAX_AGE_MS);
    let (_, p) = resp.read_init(&m1, NOW).unwrap();
    let (m2, _) = p.accept(&config(), 3);
    let mut other = m2.clone();
    other[8] = 6; // receiver id 6, not ours
    assert_eq!(ini.read_response(&other), Ok(None));
    assert_eq!(ini.read_response(&[MSG_DATA; 40]), Ok(None));
    assert_eq!(ini.read_response(&[]), Ok(None));
    assert!(ini.read_response(&m2).unwrap().is_some());
}

#[test]
fn replayed_message_1_is_refused() {
    let (_, m1) = Initiator::new(&PSK, wishes(), 1, NOW).unwrap();
    let mut resp = Responder::new(&PSK, DEFAULT_MAX_AGE_MS);
    resp.read_init(&m1, NOW).unwrap();
    assert_eq!(
        resp.read_init(&m1, NOW + 10_000).unwrap_err(),
        HandshakeError::Replayed
    );
    // After the freshness window it is refused as stale instead.
    assert!(matches!(
        resp.read_init(&m1, NOW + 60_001),
        Err(HandshakeError::Stale { .. })
    ));
    let s = resp.stats();
    assert_eq!((s.requests, s.replayed, s.stale), (1, 1, 1));
}

#[test]
fn stale_timestamps_either_way() {
    let mut resp = Responder::new(&PSK, 60_000);
    let (_, m1) = Initiator::new(&PSK, wishes(), 1, NOW).unwrap();
    assert_eq!(
        resp.read_init(&m1, NOW + 60_001).unwrap_err(),
        HandshakeError::Stale { skew_ms: 60_001 }
    );
    assert_eq!(
        resp.read_init(&m1, NOW - 60_001).unwrap_err(),
        HandshakeError::Stale { skew_ms: -60_001 }
    );
    // Stale messages are not remembered, so the boundary is still accepted.
    assert!(resp.read_init(&m1, NOW + 60_000).is_ok());
    // Configurable.
    let mut strict = Responder::new(&PSK, 1000);
    let (_, m1) = Initiator::new(&PSK, wishes(), 1, NOW).unwrap();
    assert!(matches!(
        strict.read_init(&m1, NOW + 1001),
        Err(HandshakeError::Stale { .. })
    ));
    assert!(HandshakeError::Stale { skew_ms: 5 }
        .to_string()
        .contains("clock"));
}

#[test]
fn replay_cache_is_bounded_and_expires() {
    let mut resp = Responder::with_capacity(&PSK, 1000, 2);
    let m = |t| Initiator::new(&PSK, wishes(), 1, t).unwrap().1;
    resp.read_init(&m(NOW), NOW).unwrap();
    resp.read_init(&m(NOW), NOW).unwrap();
    // Full of live entries: refuse rather than forget (forgetting would let
    // those messages be replayed).
    assert_eq!(
        resp.read_init(&m(NOW), NOW).unwrap_err(),
        HandshakeError::Busy
    );
    // Once they expire, room is made.
    resp.read_init(&m(NOW + 1500), NOW + 1500).unwrap();
    assert!(resp.seen.len() <= 2);
    assert_eq!(resp.stats().busy, 1);
}

#[test]
fn refusal_carries_the_reason() {
    let (mut ini, m1) = Initiator::new(&PSK, wishes(), 1, NOW).unwrap();
    let mut resp = Responder::new(&PSK, DEFAULT_MAX_AGE_MS);
    let (_, p) = resp.read_init(&m1, NOW).unwrap();
    let m2 = p.refuse("cipher mismatch: server uses chacha20");
    assert_eq!(
        ini.read_response(&m2).unwrap().unwrap(),
        HandshakeOutcome::Refused {
            reason: "cipher mismatch: server uses chacha20".into()
        }
    );
}

#[test]
fn message_1_is_at_least_as_large_as_any_message_2() {
    let mut resp = Responder::new(&PSK, DEFAULT_MAX_AGE_MS);
    let longest = "x".repeat(1000);
    let big_cfg = ServerConfigPayload {
        tap: true,
        mtu: u16::MAX,
        full_frame_mtu: u16::MAX,
        server_ip: Some("fd00::1".parse().unwrap()),
        client_ip: Some("fd00::2".parse().unwrap()),
        prefixlen: Some(128),
        fec: Some((255, 255)),
        udp_mtu: 1350,
        keepalive_s: 10,
    };
    let mut small = wishes();
    small.client_id.clear();
    small.fec = None;
    let (_, m1) = Initiator::new(&PSK, small, 1, NOW).unwrap();
    let (_, p) = resp.read_init(&m1, NOW).unwrap();
    let refusal = p.refuse(&longest);
    let (_, m1b) = Initiator::new(&PSK, wishes(), 1, NOW).unwrap();
    let (_, p) = resp.read_init(&m1b, NOW).unwrap();
    let (acceptance, _) = p.accept(&big_cfg, 1);
    assert_eq!(refusal.len(), MAX_RESPONSE_LEN);
    assert!(m1.len() >= refusal.len() && m1.len() >= acceptance.len());
    assert_eq!(
        m1.len(),
        m1b.len(),
        "message 1 size does not depend on the payload"
    );
}

#[test]
fn truncated_garbage_and_oversized_message_1() {
    let mut resp = Responder::new(&PSK, DEFAULT_MAX_AGE_MS);
    let (_, m1) = Initiator::new(&PSK, wishes(), 1, NOW).unwrap();
    for n in [0, 1, 8, 40, INIT_LEN - 1] {
        assert_eq!(
            resp.read_init(&m1[..n], NOW).unwrap_err(),
            HandshakeError::Truncated,
            "len {n}"
        );
    }
    assert_eq!(
        resp.read_init(&vec![MSG_INIT; MAX_INIT_LEN + 1], NOW)
            .unwrap_err(),
        HandshakeError::Oversized
    );
    let mut wrong_type = m1.clone();
    wrong_type[0] = MSG_RESPONSE;
    assert_eq!(
        resp.read_init(&wrong_type, NOW).unwrap_err(),
        HandshakeError::BadType
    );
    let mut reserved = m1.clone();
    reserved[3] = 1;
    assert_eq!(
        resp.read_init(&reserved, NOW).unwrap_err(),
        HandshakeError::BadType
    );
    let mut garbage = vec![0xA5u8; INIT_LEN];
    garbage[..4].copy_from_slice(&[MSG_INIT, 0, 0, 0]);
    assert_eq!(
        resp.read_init(&garbage, NOW).unwrap_err(),
        HandshakeError::AuthFailed
    );
    // Extra bytes after a genuine message change the ciphertext: refused.
    let mut longer = m1.clone();
    longer.push(0);
    assert_eq!(
        resp.read_init(&longer, NOW).unwrap_err(),
        HandshakeError::AuthFailed
    );
    // The genuine one still works (nothing was cached by the failures).
    assert!(resp.read_init(&m1, NOW).is_ok());
    let s = resp.stats();
    assert_eq!((s.malformed, s.auth_failures, s.requests), (8, 2, 1));
}

#[test]
fn truncated_and_oversized_message_2() {
    let (mut ini, m1) = Initiator::new(&PSK, wishes(), 1, NOW).unwrap();
    let mut resp = Responder::new(&PSK, DEFAULT_MAX_AGE_MS);
    let (_, p) = resp.read_init(&m1, NOW).unwrap();
    let (m2, _) = p.accept(&config(), 3);
    assert_eq!(ini.read_response(&m2[..11]), Err(HandshakeError::Truncated));
    assert_eq!(ini.read_response(&m2[..40]), Err(HandshakeError::Truncated));
    assert_eq!(
        ini.read_response(&m2[..m2.len() - 1]),
        Err(HandshakeError::ResponseAuthFailed)
    );
    let mut big = m2.clone();
    big.resize(MAX_RESPONSE_LEN + 1, 0);
    assert_eq!(ini.read_response(&big), Err(HandshakeError::Oversized));
    assert!(ini.read_response(&m2).unwrap().is_some());
}

#[test]
fn invalid_local_payload_is_reported_before_sending() {
    let mut p = wishes();
    p.client_id = "no spaces".into();
    let e = Initiator::new(&PSK, p, 1, NOW).unwrap_err();
    assert!(matches!(e, HandshakeError::InvalidPayload(_)), "{e}");
}

#[test]
fn client_set_ipv6_request_round_trips() {
    let mut p = wishes();
    p.ip_mode = IP_MODE_CLIENT_SET;
    p.ip = Some("fd00::42".parse().unwrap());
    p.cipher = CipherKind::None;
    let (_, m1) = Initiator::new(&PSK, p.clone(), 1, NOW).unwrap();
    let (req, _) = Responder::new(&PSK, DEFAULT_MAX_AGE_MS)
        .read_init(&m1, NOW)
        .unwrap();
    assert_eq!(req.payload, p);
}

/// Known-answer test against an independent Argon2id implementation
/// (Python argon2-cffi: hash_secret_raw(b"correct horse", b"kcpvpn/psk/v1",
/// time_cost=3, memory_cost=65536, parallelism=1, hash_len=32, type=ID)).
/// Slow in debug builds (64 MiB, 3 passes), hence a single call.
#[test]
fn stretch_secret_known_answer() {
    let k = stretch_secret(b"correct horse");
    assert_eq!(hex(&k), STRETCH_KAT);
}

const STRETCH_KAT: &str = "87f253f2112868bebcdf198d5d7d8d08ab1104230f633ad20cfe775639a6b384";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
