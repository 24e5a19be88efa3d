//! Arbitrary bytes into every handshake decoder: the server's message-1
//! reader, the client's message-2 reader and both payload decoders. None may
//! panic, and garbage must never authenticate.
use kcpvpn_crypto::handshake::payload::{decode_init, decode_response};
use kcpvpn_crypto::handshake::{InitPayload, Initiator, Responder, IP_MODE_NONE};
use kcpvpn_crypto::packet::CipherKind;

const PSK: [u8; 32] = [0x22; 32];

pub fn run(data: &[u8]) {
    let _ = decode_init(data);
    let _ = decode_response(data);

    let mut resp = Responder::new(&PSK, 60_000);
    assert!(
        resp.read_init(data, 0).is_err(),
        "random bytes authenticated as message 1"
    );

    let wishes = InitPayload {
        client_id: String::new(),
        mtu: 1400,
        ip_mode: IP_MODE_NONE,
        ip: None,
        fec: None,
        cipher: CipherKind::Aes256Gcm,
        udp_mtu: 1350,
        keepalive_s: 10,
    };
    let (mut ini, _m1) = Initiator::new(&PSK, wishes, 0x0102_0304, 0).unwrap();
    // Aim at the receiver id so the input reaches the Noise layer.
    let mut d = data.to_vec();
    if d.len() >= 12 {
        d[0] = 2;
        d[1..4].fill(0);
        d[8..12].copy_from_slice(&0x0102_0304u32.to_le_bytes());
    }
    assert!(
        !matches!(ini.read_response(&d), Ok(Some(_))),
        "random bytes authenticated as message 2"
    );
    let _ = ini.read_response(data);
}
