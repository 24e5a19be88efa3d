//! The crate's public API exercised the way its users (the tunnel session,
//! the endpoint and the engine bindings) call it, end to end: handshake
//! through `Option<Responder>`, keys into sealers/openers, routing by
//! `peek_header`, error matching for counters. If a signature they rely on
//! changes, this stops compiling here first.
use kcpvpn_crypto::handshake::{self as hs, HandshakeOutcome, InitPayload, ServerConfigPayload};
use kcpvpn_crypto::packet::{self, CipherKind, CryptoError, Opener, Sealer, MSG_CLOSE, MSG_DATA};
use std::collections::HashMap;

fn unix_ms() -> u64 {
    1_760_000_000_000
}

struct Peer {
    sealer: Sealer,
    opener: Opener,
}

#[test]
fn handshake_then_data_both_ways() {
    let psk = [0x33u8; 32];
    let mut responder: Option<hs::Responder> = Some(hs::Responder::new(&psk, 60_000));

    let p = InitPayload {
        client_id: "c1".into(),
        mtu: 1400,
        ip_mode: 0,
        ip: None,
        fec: None,
        cipher: CipherKind::parse("chacha20").unwrap(),
        udp_mtu: 1350,
        keepalive_s: 10,
    };
    let (mut state, m1) = hs::Initiator::new(&psk, p, 4242, unix_ms()).unwrap();

    // Server: dispatch on the first byte, then read_init.
    assert!(matches!(m1.first().copied(), Some(hs::MSG_INIT)));
    let r = responder.as_mut().unwrap();
    let (request, accept) = r.read_init(&m1, unix_ms()).unwrap();
    assert_eq!(request.payload.cipher.name(), "chacha20");
    let client_id = accept.sender_id();
    let config = ServerConfigPayload {
        tap: false,
        mtu: 1400,
        full_frame_mtu: 1400,
        server_ip: Some("10.1.0.1".parse().unwrap()),
        client_ip: Some("10.1.0.2".parse().unwrap()),
        prefixlen: Some(24),
        fec: None,
        udp_mtu: 1350,
        keepalive_s: 10,
    };
    let session_id = 99u32;
    let (msg2, keys) = accept.accept(&config, session_id);
    let cipher = request.payload.cipher;
    let mut peers: HashMap<u32, Peer> = HashMap::new();
    peers.insert(
        session_id,
        Peer {
            sealer: Sealer::new(cipher, &keys.send, client_id),
            opener: Opener::new(cipher, &keys.recv),
        },
    );

    // Client: the answer.
    let Some(HandshakeOutcome::Accepted {
        keys: ck,
        server_session_id,
        config: got,
    }) = state.read_response(&msg2).unwrap()
    else {
        panic!("not accepted")
    };
    assert_eq!(got, config);
    let mut c_seal = Sealer::new(cipher, &ck.send, server_session_id);
    let mut c_open = Opener::new(cipher, &ck.recv);

    // Client → server, routed by receiver id before decrypting.
    let mut buf = Vec::new();
    assert!(c_seal.seal_into(MSG_DATA, b"ip packet", &mut buf).is_ok());
    let mut dgram = buf.clone();
    let hdr = packet::peek_header(&dgram).unwrap();
    let peer = peers.get_mut(&hdr.receiver_id).unwrap();
    let opened = peer.opener.open_in_place(&mut dgram).unwrap();
    assert_eq!(opened.msg_type, MSG_DATA);
    let payload: &[u8] = opened.payload;
    assert_eq!(payload, b"ip packet");

    // Replay of the same datagram: counted as a replay by the session.
    let mut again = buf.clone();
    let (mut replays, mut auth, mut malformed) = (0, 0, 0);
    match peer.opener.open_in_place(&mut again) {
        Ok(_) => panic!("replay accepted"),
        Err(e) => match e {
            CryptoError::Replayed | CryptoError::TooOld => replays += 1,
            CryptoError::AuthFailed => auth += 1,
            _ => malformed += 1,
        },
    }
    assert_eq!((replays, auth, malformed), (1, 0, 0));

    // Server → client: an authenticated close.
    peer.sealer.seal_into(MSG_CLOSE, &[], &mut buf).unwrap();
    assert_eq!(c_open.open_in_place(&mut buf).unwrap().msg_type, MSG_CLOSE);

    // Overhead the session budgets per datagram.
    assert_eq!(packet::HEADER_LEN + packet::TAG_LEN, 32);
}

#[test]
fn refusal_path() {
    let psk = hs::stretch_secret(b"a shared secret");
    let mut responder = hs::Responder::new(&psk, hs::DEFAULT_MAX_AGE_MS);
    let p = InitPayload {
        client_id: String::new(),
        mtu: 1300,
        ip_mode: 2,
        ip: None,
        fec: Some((10, 3)),
        cipher: CipherKind::Aes256Gcm,
        udp_mtu: 1350,
        keepalive_s: 10,
    };
    let (mut state, m1) = hs::Initiator::new(&psk, p, 1, unix_ms()).unwrap();
    let (_, accept) = responder.read_init(&m1, unix_ms()).unwrap();
    let reason = String::from("no free address in the pool");
    let msg2 = accept.refuse(&reason);
    assert_eq!(
        state.read_response(&msg2).unwrap(),
        Some(HandshakeOutcome::Refused { reason })
    );
}

#[test]
fn types_cross_threads() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<hs::Responder>();
    send::<hs::PendingAccept>();
    send::<hs::Initiator>();
    send::<HandshakeOutcome>();
    send::<Sealer>();
    send::<Opener>();
    sync::<Sealer>();
    sync::<Opener>();
}
