//! Identity mode's handshake (Noise IKpsk1): arbitrary bytes into the
//! server's message-1 reader and the client's message-2 reader, and genuine
//! messages with bytes the input chooses flipped. Nothing may panic, garbage
//! must never authenticate, and whatever does authenticate carries the
//! identity the server's peer entry gives it (never the client's wish).
use kcpvpn_crypto::handshake::{
    public_key, ClientIdentity, HandshakeError, HandshakeOutcome, InitPayload, Initiator, Peer,
    Responder, ServerConfigPayload, ServerIdentity, INIT_LEN_IDENTITY, IP_MODE_CLIENT_SET,
};
use kcpvpn_crypto::packet::CipherKind;
use std::net::IpAddr;

const PSK: [u8; 32] = [0x22; 32];
const SERVER: [u8; 32] = [0x11; 32];
const ALICE: [u8; 32] = [0x33; 32];
const MALLORY: [u8; 32] = [0x44; 32];
const NOW: u64 = 1_750_000_000_000;
const SENDER: u32 = 0x0102_0304;

fn alice_ip() -> IpAddr {
    "10.8.0.10".parse().expect("an address")
}

fn responder() -> Responder {
    let peers = vec![Peer {
        public_key: public_key(&ALICE),
        client_id: "alice".into(),
        ip: Some(alice_ip()),
    }];
    Responder::new(&PSK, 60_000)
        .with_identity(ServerIdentity::new(SERVER, peers).expect("valid peers"))
}

fn client(private: [u8; 32]) -> ClientIdentity {
    ClientIdentity {
        private_key: private,
        server_public_key: public_key(&SERVER),
    }
}

/// The client's wishes, from the input (what the server must override).
fn wishes(data: &[u8]) -> InitPayload {
    let b = |i: usize| data.get(i).copied().unwrap_or(0);
    InitPayload {
        client_id: ["", "alice", "bob", "root"][b(1) as usize % 4].into(),
        mtu: u16::from_le_bytes([b(2), b(3)]),
        ip_mode: b(4) % 2 * IP_MODE_CLIENT_SET,
        ip: (b(4) % 2 == 1).then(|| IpAddr::from([10, 8, 0, b(5)])),
        fec: None,
        cipher: CipherKind::Aes256Gcm,
        udp_mtu: 1350,
        keepalive_s: 10,
    }
}

/// Flips the bytes the input names (triples of position and mask, from
/// its 7th byte on) in `msg`; returns the positions that end up changed.
fn flip(msg: &mut [u8], data: &[u8]) -> Vec<usize> {
    let before = msg.to_vec();
    for t in data.chunks_exact(3).skip(2) {
        let at = u16::from_le_bytes([t[0], t[1]]) as usize % msg.len();
        msg[at] ^= t[2];
    }
    (0..msg.len()).filter(|&i| msg[i] != before[i]).collect()
}

pub fn run(data: &[u8]) {
    let mut resp = responder();
    assert!(
        resp.read_init(data, NOW).is_err(),
        "random bytes authenticated as an identity-mode message 1"
    );

    // A genuine message 1 of alice (or of a stranger), bytes flipped.
    let stranger = data.first().is_some_and(|b| b & 1 == 1);
    let who = if stranger { MALLORY } else { ALICE };
    let (mut ini, m1) = Initiator::start(&PSK, Some(&client(who)), wishes(data), SENDER, NOW)
        .expect("a valid message 1");
    assert_eq!(m1.len(), INIT_LEN_IDENTITY);
    let mut m = m1.clone();
    let changed = flip(&mut m, data);
    let only_header = changed.iter().all(|&i| (4..8).contains(&i));
    let mut resp = responder();
    match resp.read_init(&m, NOW) {
        Ok((req, pending)) => {
            assert!(!stranger, "a stranger's key got in");
            assert!(
                only_header,
                "a changed message 1 authenticated: {changed:?}"
            );
            assert_eq!(req.client_key, Some(public_key(&ALICE)));
            assert_eq!(req.payload.client_id, "alice", "the peer entry names it");
            assert_eq!(req.payload.ip, Some(alice_ip()), "the peer entry's address");
            // Message 2 with bytes flipped: only the genuine one is taken.
            let (m2, keys) = pending.accept(
                &ServerConfigPayload {
                    udp_mtu: 1350,
                    keepalive_s: 10,
                    ..Default::default()
                },
                7,
            );
            let mut f = m2.clone();
            let changed2 = flip(&mut f, &data[data.len().min(9)..]);
            let r = ini.read_response(&f);
            if changed2.iter().any(|&i| !(4..8).contains(&i)) {
                assert!(
                    !matches!(r, Ok(Some(_))),
                    "a changed message 2 authenticated: {changed2:?}"
                );
            } else if m[4..8] == m1[4..8] && changed2.is_empty() {
                let Ok(Some(HandshakeOutcome::Accepted { keys: got, .. })) = r else {
                    panic!("the genuine message 2 was refused: {r:?}")
                };
                assert_eq!(got.send, keys.recv);
            }
        }
        Err(HandshakeError::UnknownPeer { key, refusal }) => {
            assert!(stranger && only_header, "{changed:?}");
            assert_eq!(key, public_key(&MALLORY));
            if m[4..8] == m1[4..8] {
                assert!(matches!(
                    ini.read_response(&refusal),
                    Ok(Some(HandshakeOutcome::Refused { .. }))
                ));
            }
        }
        Err(e) => assert!(!only_header, "the genuine message 1 failed: {e:?}"),
    }

    // Arbitrary bytes aimed at a live attempt's receiver id.
    let (mut ini, _) = Initiator::start(&PSK, Some(&client(ALICE)), wishes(&[]), SENDER, NOW)
        .expect("a valid message 1");
    let mut d = data.to_vec();
    if d.len() >= 12 {
        d[0] = 2;
        d[1..4].fill(0);
        d[8..12].copy_from_slice(&SENDER.to_le_bytes());
    }
    assert!(
        !matches!(ini.read_response(&d), Ok(Some(_))),
        "random bytes authenticated as message 2"
    );
}
