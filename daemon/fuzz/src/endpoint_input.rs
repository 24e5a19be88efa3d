//! Arbitrary datagrams from arbitrary sources into a server endpoint and a
//! connecting client endpoint, with time passing between them. Nothing
//! unauthenticated may create state: no request reaches the control plane,
//! no session starts, and nothing panics.
use kcpvpn_crypto::handshake::{InitPayload, Responder, IP_MODE_SERVER_ASSIGNS};
use kcpvpn_crypto::packet::CipherKind;
use kcpvpn_tunnel::endpoint::{Endpoint, EndpointConfig, Event, Handle, Io, Now, Role};
use kcpvpn_tunnel::params::SessionParams;
use std::net::SocketAddr;

#[derive(Default)]
struct Sink(Vec<u8>);

impl Io for Sink {
    fn buf(&mut self) -> &mut Vec<u8> {
        self.0.clear();
        &mut self.0
    }
    fn send(&mut self, _to: SocketAddr) {}
    fn deliver(&mut self, _h: Handle, _p: &[u8]) -> bool {
        panic!("an unauthenticated datagram was delivered")
    }
}

pub fn run(data: &[u8]) {
    let params = SessionParams::default();
    let mut server = Endpoint::new(EndpointConfig {
        role: Role::Server {
            responder: Responder::new(&[1; 32], 60_000),
        },
        params: params.clone(),
        seed: 1,
    });
    let mut client = Endpoint::new(EndpointConfig {
        role: Role::Client {
            psk: [1; 32],
            identity: None,
        },
        params,
        seed: 2,
    });
    let server_addr: SocketAddr = "10.0.0.1:4000".parse().unwrap();
    let sources: [SocketAddr; 4] = [
        server_addr,
        "10.0.0.2:5000".parse().unwrap(),
        "255.255.255.255:1".parse().unwrap(),
        "[2001:db8::1]:0".parse().unwrap(),
    ];
    let mut io = Sink::default();
    let mut now = Now {
        ms: 1000,
        unix_ms: 1_780_000_000_000,
    };
    let payload = InitPayload {
        client_id: String::new(),
        mtu: 1400,
        ip_mode: IP_MODE_SERVER_ASSIGNS,
        ip: None,
        fec: None,
        cipher: CipherKind::Aes256Gcm,
        udp_mtu: 0,
        keepalive_s: 0,
    };
    client.connect(now, server_addr, payload, None, &mut io);
    for chunk in data.split(|&b| b == 0xFF) {
        let Some((&sel, rest)) = chunk.split_first() else {
            continue;
        };
        let from = sources[sel as usize % sources.len()];
        let mut d = rest.to_vec();
        server.handle(now, from, &mut d, &mut io);
        let mut d = rest.to_vec();
        client.handle(now, from, &mut d, &mut io);
        now.ms += (sel as u64) * 7;
        now.unix_ms += (sel as u64) * 7;
        for ep in [&mut server, &mut client] {
            ep.flush(now, &mut io);
            if ep.poll_timeout().is_some_and(|t| t <= now.ms) {
                ep.handle_timeout(now, &mut io);
            }
            while let Some(ev) = ep.poll_event() {
                assert!(
                    !matches!(
                        ev,
                        Event::HandshakeRequested(_)
                            | Event::Connected { .. }
                            | Event::SessionUp { .. }
                    ),
                    "state from forged input: {ev:?}"
                );
            }
        }
    }
    assert_eq!(server.sessions().count(), 0);
    assert_eq!(client.sessions().count(), 0);
}
