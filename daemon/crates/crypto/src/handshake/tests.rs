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
            client_key: None,
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
    for i in 0..2 {
        let (_, m1) = Initiator::new(&PSK, wishes(), 1, NOW + i).unwrap();
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
    // No client id: only the ephemeral-key cache applies.
    let mut anonymous = wishes();
    anonymous.client_id.clear();
    let m = |t| Initiator::new(&PSK, anonymous.clone(), 1, t).unwrap().1;
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

/// Known-answer test against an independent Argon2id implementation (the
/// reference C library, libargon2: argon2id_hash_raw(t=3, m=65536, p=1,
/// b"correct horse", salt b"kcpvpn/psk/v2/example.net", 32 bytes); the same
/// call with the v1 salt b"kcpvpn/psk/v1" gives the v1 answer that
/// argon2-cffi gave). Slow in debug builds (64 MiB, 3 passes), hence one call.
#[test]
fn stretch_secret_known_answer() {
    let k = stretch_secret_for(b"correct horse", "example.net").unwrap();
    assert_eq!(hex(&k), STRETCH_KAT);
}

const STRETCH_KAT: &str = "986993484c769f771749eaa815db98e0e96f4d26a416a0af939039ab3caa766a";

#[test]
fn network_names_are_checked() {
    assert!(network_problem("").is_some());
    assert!(network_problem(&"n".repeat(MAX_NETWORK_LEN + 1)).is_some());
    assert!(network_problem("my net").is_none());
    assert!(network_problem(
        "a
b"
    )
    .is_some());
    assert!(network_problem("vpn.example.com").is_none());
    assert!(matches!(
        stretch_secret_for(b"x", ""),
        Err(HandshakeError::InvalidPayload(_))
    ));
}

// ------------------------------------------------------------ identity mode

struct Keys {
    server: [u8; 32],
    alice: [u8; 32],
    bob: [u8; 32],
    mallory: [u8; 32],
}

fn keys() -> Keys {
    Keys {
        server: generate_private_key(),
        alice: generate_private_key(),
        bob: generate_private_key(),
        mallory: generate_private_key(),
    }
}

/// A server that knows alice (fixed address) and bob (id only).
fn identity_server(k: &Keys) -> Responder {
    let peers = vec![
        Peer {
            public_key: public_key(&k.alice),
            client_id: "alice".into(),
            ip: Some("10.8.0.10".parse().unwrap()),
        },
        Peer {
            public_key: public_key(&k.bob),
            client_id: "bob".into(),
            ip: None,
        },
    ];
    Responder::new(&PSK, DEFAULT_MAX_AGE_MS)
        .with_identity(ServerIdentity::new(k.server, peers).unwrap())
}

fn as_client(k: &Keys, private: [u8; 32]) -> ClientIdentity {
    ClientIdentity {
        private_key: private,
        server_public_key: public_key(&k.server),
    }
}

#[test]
fn identity_happy_path_the_peer_entry_names_the_client() {
    let k = keys();
    let mut resp = identity_server(&k);
    // Bob claims alice's id and asks for an address of his choosing.
    let mut claim = wishes();
    claim.client_id = "alice".into();
    claim.ip_mode = IP_MODE_CLIENT_SET;
    claim.ip = Some("10.8.0.99".parse().unwrap());
    let (mut ini, m1) =
        Initiator::start(&PSK, Some(&as_client(&k, k.bob)), claim.clone(), 7, NOW).unwrap();
    assert_eq!(m1.len(), INIT_LEN_IDENTITY);
    let (req, p) = resp.read_init(&m1, NOW).unwrap();
    assert_eq!(req.client_key, Some(public_key(&k.bob)));
    assert_eq!(
        req.payload.client_id, "bob",
        "the key names it, not its wish"
    );
    assert_eq!(
        req.payload.ip_mode, IP_MODE_CLIENT_SET,
        "no fixed address: its wish stands"
    );
    let (m2, server_keys) = p.accept(&config(), 9);
    let Some(HandshakeOutcome::Accepted { keys, .. }) = ini.read_response(&m2).unwrap() else {
        panic!("refused")
    };
    assert_eq!(keys.send, server_keys.recv);

    // Alice gets her fixed address whatever she asks for.
    let (_, m1) = Initiator::start(&PSK, Some(&as_client(&k, k.alice)), wishes(), 8, NOW).unwrap();
    let (req, _) = resp.read_init(&m1, NOW).unwrap();
    assert_eq!(req.payload.client_id, "alice");
    assert_eq!(req.payload.ip_mode, IP_MODE_CLIENT_SET);
    assert_eq!(req.payload.ip, Some("10.8.0.10".parse().unwrap()));
    // ... unless she wants no address at all (bridged TAP).
    let mut none = wishes();
    none.ip_mode = IP_MODE_NONE;
    let (_, m1) = Initiator::start(&PSK, Some(&as_client(&k, k.alice)), none, 8, NOW + 1).unwrap();
    let (req, _) = resp.read_init(&m1, NOW + 1).unwrap();
    assert_eq!((req.payload.ip_mode, req.payload.ip), (IP_MODE_NONE, None));
}

#[test]
fn unknown_key_gets_an_authenticated_refusal_and_leaves_nothing() {
    let k = keys();
    let mut resp = identity_server(&k);
    let (mut ini, m1) =
        Initiator::start(&PSK, Some(&as_client(&k, k.mallory)), wishes(), 3, NOW).unwrap();
    let e = resp.read_init(&m1, NOW).unwrap_err();
    let HandshakeError::UnknownPeer { key, refusal } = e else {
        panic!("{e:?}")
    };
    assert_eq!(key, public_key(&k.mallory));
    assert!(refusal.len() <= MAX_RESPONSE_LEN && refusal.len() <= m1.len());
    let Some(HandshakeOutcome::Refused { reason }) = ini.read_response(&refusal).unwrap() else {
        panic!("not a refusal")
    };
    assert!(
        reason.contains(&to_base64(&public_key(&k.mallory))),
        "{reason}"
    );
    assert!(reason.contains("peers"), "{reason}");
    assert!(
        resp.seen.is_empty() && resp.last_ts.is_empty(),
        "state kept for a stranger"
    );
    assert_eq!(resp.stats().unknown_peers, 1);
    assert_eq!(resp.stats().requests, 0);
}

#[test]
fn pinning_the_wrong_server_key_cannot_even_start() {
    let k = keys();
    let mut resp = identity_server(&k);
    let wrong = ClientIdentity {
        private_key: k.alice,
        server_public_key: public_key(&k.mallory),
    };
    let (_, m1) = Initiator::start(&PSK, Some(&wrong), wishes(), 3, NOW).unwrap();
    assert_eq!(
        resp.read_init(&m1, NOW).unwrap_err(),
        HandshakeError::AuthFailed
    );
    // An impostor server (another key) cannot read a genuine message 1 either.
    let mut impostor = Responder::new(&PSK, DEFAULT_MAX_AGE_MS)
        .with_identity(ServerIdentity::new(k.mallory, vec![]).unwrap());
    let (_, m1) = Initiator::start(&PSK, Some(&as_client(&k, k.alice)), wishes(), 3, NOW).unwrap();
    assert_eq!(
        impostor.read_init(&m1, NOW).unwrap_err(),
        HandshakeError::AuthFailed
    );
    assert!(resp.seen.is_empty() && impostor.seen.is_empty());
}

#[test]
fn identity_mode_still_needs_the_secret_and_modes_do_not_mix() {
    let k = keys();
    let mut resp = identity_server(&k);
    let (_, m1) =
        Initiator::start(&[7u8; 32], Some(&as_client(&k, k.alice)), wishes(), 3, NOW).unwrap();
    assert_eq!(
        resp.read_init(&m1, NOW).unwrap_err(),
        HandshakeError::AuthFailed
    );
    // Both modes' message 1 are 263 bytes, and neither authenticates on a
    // server of the other mode.
    let (_, simple) = Initiator::new(&PSK, wishes(), 3, NOW).unwrap();
    assert_eq!(simple.len(), INIT_LEN_IDENTITY);
    assert_eq!(
        resp.read_init(&simple, NOW).unwrap_err(),
        HandshakeError::AuthFailed
    );
    let (_, ident) =
        Initiator::start(&PSK, Some(&as_client(&k, k.alice)), wishes(), 3, NOW).unwrap();
    let mut plain = Responder::new(&PSK, DEFAULT_MAX_AGE_MS);
    assert_eq!(
        plain.read_init(&ident, NOW).unwrap_err(),
        HandshakeError::AuthFailed
    );
    assert_eq!(resp.stats().requests + plain.stats().requests, 0);
}

#[test]
fn timestamps_strictly_increase_per_key() {
    let k = keys();
    let mut resp = identity_server(&k);
    let m = |who: [u8; 32], t: u64| {
        Initiator::start(&PSK, Some(&as_client(&k, who)), wishes(), 1, t)
            .unwrap()
            .1
    };
    resp.read_init(&m(k.alice, NOW), NOW).unwrap();
    // A new message 1 (fresh ephemeral) with the same or an older timestamp.
    for t in [NOW, NOW - 1] {
        assert_eq!(
            resp.read_init(&m(k.alice, t), NOW).unwrap_err(),
            HandshakeError::Replayed
        );
    }
    // Another key is not affected; a later timestamp is fine.
    resp.read_init(&m(k.bob, NOW), NOW).unwrap();
    resp.read_init(&m(k.alice, NOW + 1), NOW).unwrap();
    assert_eq!(resp.stats().replayed, 2);
    // Bob claiming alice's id does not touch alice's entry (keyed by key).
    assert_eq!(resp.last_ts.len(), 2);
}

#[test]
fn timestamps_strictly_increase_per_client_id_in_simple_mode() {
    let mut resp = Responder::new(&PSK, DEFAULT_MAX_AGE_MS);
    let m = |id: &str, t: u64| {
        let mut w = wishes();
        w.client_id = id.into();
        Initiator::new(&PSK, w, 1, t).unwrap().1
    };
    resp.read_init(&m("alice", NOW), NOW).unwrap();
    assert_eq!(
        resp.read_init(&m("alice", NOW), NOW).unwrap_err(),
        HandshakeError::Replayed
    );
    resp.read_init(&m("bob", NOW), NOW).unwrap();
    // Without an id there is nothing to key on: only the ephemeral cache.
    resp.read_init(&m("", NOW), NOW).unwrap();
    resp.read_init(&m("", NOW), NOW).unwrap();
    assert_eq!(resp.last_ts.len(), 2);
}

#[test]
fn timestamp_map_is_bounded_and_only_authenticated_requests_enter() {
    let mut resp = Responder::with_capacity(&PSK, 1000, 2);
    let m = |id: &str, t: u64| {
        let mut w = wishes();
        w.client_id = id.into();
        Initiator::new(&PSK, w, 1, t).unwrap().1
    };
    // Another secret: refused before the map.
    let mut w = wishes();
    w.client_id = "x".into();
    let (_, forged) = Initiator::new(&[3u8; 32], w, 1, NOW).unwrap();
    assert!(resp.read_init(&forged, NOW).is_err());
    assert!(resp.last_ts.is_empty());
    resp.read_init(&m("a", NOW), NOW).unwrap();
    resp.read_init(&m("b", NOW), NOW).unwrap();
    assert_eq!(
        resp.read_init(&m("c", NOW), NOW).unwrap_err(),
        HandshakeError::Busy
    );
    // Entries older than the freshness window make room.
    resp.read_init(&m("c", NOW + 1500), NOW + 1500).unwrap();
    assert!(resp.last_ts.len() <= 2);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn a_peer_cannot_take_another_peers_fixed_address() {
    let k = keys();
    let mut resp = identity_server(&k);
    // Bob has no fixed address and asks for alice's.
    let mut w = wishes();
    w.ip_mode = IP_MODE_CLIENT_SET;
    w.ip = Some("10.8.0.10".parse().unwrap());
    let (mut ini, m1) = Initiator::start(&PSK, Some(&as_client(&k, k.bob)), w, 4, NOW).unwrap();
    let e = resp.read_init(&m1, NOW).unwrap_err();
    let HandshakeError::PeerRefused { reason, refusal } = e else {
        panic!("{e:?}")
    };
    assert!(
        reason.contains("peer bob") && reason.contains("alice"),
        "{reason}"
    );
    let Some(HandshakeOutcome::Refused { reason }) = ini.read_response(&refusal).unwrap() else {
        panic!("not a refusal")
    };
    assert!(reason.contains("fixed address of peer alice"), "{reason}");
    assert_eq!(resp.stats().peer_refusals, 1);
    // Another address is his to ask for.
    let mut w = wishes();
    w.ip_mode = IP_MODE_CLIENT_SET;
    w.ip = Some("10.8.0.11".parse().unwrap());
    let (_, m1) = Initiator::start(&PSK, Some(&as_client(&k, k.bob)), w, 4, NOW + 1).unwrap();
    let (req, _) = resp.read_init(&m1, NOW + 1).unwrap();
    assert_eq!(req.payload.ip, Some("10.8.0.11".parse().unwrap()));
}

#[test]
fn new_peers_take_effect_at_once() {
    let k = keys();
    let mut resp = identity_server(&k);
    let m = |who: [u8; 32], t: u64| {
        Initiator::start(&PSK, Some(&as_client(&k, who)), wishes(), 1, t)
            .unwrap()
            .1
    };
    resp.read_init(&m(k.bob, NOW), NOW).unwrap();
    // Bob is removed: his next message 1 is refused, his timestamp entry goes.
    let only_alice = vec![Peer {
        public_key: public_key(&k.alice),
        client_id: "alice".into(),
        ip: None,
    }];
    resp.set_identity(ServerIdentity::new(k.server, only_alice).unwrap());
    assert!(resp.last_ts.is_empty());
    assert!(matches!(
        resp.read_init(&m(k.bob, NOW + 1), NOW + 1),
        Err(HandshakeError::UnknownPeer { .. })
    ));
    let (req, _) = resp.read_init(&m(k.alice, NOW + 1), NOW + 1).unwrap();
    assert_eq!(
        req.payload.ip, None,
        "alice's entry no longer fixes an address"
    );
}
