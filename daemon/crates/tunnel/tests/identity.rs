//! Identity mode through the sans-IO endpoint: a listed peer connects under
//! the id and address of its entry, an unknown key is told why and leaves
//! nothing behind, a client pinning the wrong server key cannot complete the
//! handshake and says so.
use kcpvpn_crypto::handshake::{
    generate_private_key, public_key, ClientIdentity, InitPayload, Peer, Responder,
    ServerConfigPayload, ServerIdentity, IP_MODE_CLIENT_SET, IP_MODE_SERVER_ASSIGNS,
};
use kcpvpn_crypto::packet::CipherKind;
use kcpvpn_tunnel::endpoint::{
    ConnectFailure, Endpoint, EndpointConfig, Event, Handle, Io, Now, Role,
};
use kcpvpn_tunnel::params::SessionParams;
use std::net::SocketAddr;

const PSK: [u8; 32] = [0x5a; 32];
const UNIX_START: u64 = 1_780_000_000_000;

#[derive(Default)]
struct Wire {
    cur: Vec<u8>,
    out: Vec<(SocketAddr, Vec<u8>)>,
}

impl Io for Wire {
    fn buf(&mut self) -> &mut Vec<u8> {
        self.cur.clear();
        &mut self.cur
    }
    fn send(&mut self, to: SocketAddr) {
        self.out.push((to, self.cur.clone()));
    }
    fn deliver(&mut self, _: Handle, _: &[u8]) -> bool {
        true
    }
}

fn params() -> SessionParams {
    SessionParams {
        cipher: CipherKind::Aes256Gcm,
        ..SessionParams::default()
    }
}

fn now(ms: u64) -> Now {
    Now {
        ms,
        unix_ms: UNIX_START + ms,
    }
}

struct Pair {
    server: Endpoint,
    client: Endpoint,
    s_addr: SocketAddr,
    c_addr: SocketAddr,
    t: u64,
}

impl Pair {
    fn new(server_key: [u8; 32], peers: Vec<Peer>, client: ClientIdentity) -> Pair {
        let responder = Responder::new(&PSK, 60_000)
            .with_identity(ServerIdentity::new(server_key, peers).unwrap());
        let server = Endpoint::new(EndpointConfig {
            role: Role::Server { responder },
            params: params(),
            seed: 1,
        });
        let client = Endpoint::new(EndpointConfig {
            role: Role::Client {
                psk: PSK,
                identity: Some(client),
            },
            params: params(),
            seed: 2,
        });
        Pair {
            server,
            client,
            s_addr: "10.0.0.1:4000".parse().unwrap(),
            c_addr: "10.0.1.1:5000".parse().unwrap(),
            t: 0,
        }
    }

    /// Moves datagrams both ways until none are left (no loss, no delay).
    fn run(&mut self, mut w: Wire, from_client: bool) {
        let mut queue: Vec<(bool, Vec<u8>)> =
            w.out.drain(..).map(|(_, d)| (from_client, d)).collect();
        while let Some((from_c, mut d)) = queue.pop() {
            self.t += 1;
            let mut io = Wire::default();
            if from_c {
                self.server
                    .handle(now(self.t), self.c_addr, &mut d, &mut io);
            } else {
                self.client
                    .handle(now(self.t), self.s_addr, &mut d, &mut io);
            }
            queue.extend(io.out.into_iter().map(|(_, d)| (!from_c, d)));
        }
    }

    fn connect(&mut self, client_id: &str, ip_mode: u8, ip: Option<&str>) {
        let mut io = Wire::default();
        let payload = InitPayload {
            client_id: client_id.into(),
            mtu: 1400,
            ip_mode,
            ip: ip.map(|i| i.parse().unwrap()),
            fec: None,
            cipher: CipherKind::Aes256Gcm,
            udp_mtu: 0,
            keepalive_s: 0,
        };
        let to = self.s_addr;
        self.client
            .connect(now(self.t), to, payload, Some(1), &mut io);
        self.run(io, true);
    }
}

fn events(ep: &mut Endpoint) -> Vec<Event> {
    std::iter::from_fn(|| ep.poll_event()).collect()
}

fn peer(private: &[u8; 32], id: &str, ip: Option<&str>) -> Peer {
    Peer {
        public_key: public_key(private),
        client_id: id.into(),
        ip: ip.map(|i| i.parse().unwrap()),
    }
}

#[test]
fn a_peer_connects_as_its_entry_says() {
    let (server, alice) = (generate_private_key(), generate_private_key());
    let mut p = Pair::new(
        server,
        vec![peer(&alice, "alice", Some("192.168.88.10"))],
        ClientIdentity {
            private_key: alice,
            server_public_key: public_key(&server),
        },
    );
    // It claims another id and address.
    p.connect("bob", IP_MODE_CLIENT_SET, Some("192.168.88.99"));
    let ev = events(&mut p.server);
    let Some(Event::HandshakeRequested(req)) = ev.first() else {
        panic!("{ev:?}")
    };
    assert_eq!(req.client_key, Some(public_key(&alice)));
    assert_eq!(req.payload.client_id, "alice");
    assert_eq!(req.payload.ip, Some("192.168.88.10".parse().unwrap()));
    let offer = ServerConfigPayload {
        mtu: 1400,
        full_frame_mtu: 1422,
        client_ip: req.payload.ip,
        ..Default::default()
    };
    let mut io = Wire::default();
    let t = now(p.t);
    p.server.accept(t, req.pending_id, offer, &mut io).unwrap();
    p.run(io, false);
    let ev = events(&mut p.client);
    assert!(
        ev.iter().any(|e| matches!(e, Event::Connected { .. })),
        "{ev:?}"
    );
}

#[test]
fn an_unknown_key_is_told_why_and_leaves_nothing() {
    let (server, alice, mallory) = (
        generate_private_key(),
        generate_private_key(),
        generate_private_key(),
    );
    let mut p = Pair::new(
        server,
        vec![peer(&alice, "alice", None)],
        ClientIdentity {
            private_key: mallory,
            server_public_key: public_key(&server),
        },
    );
    p.connect("alice", IP_MODE_SERVER_ASSIGNS, None);
    let ev = events(&mut p.client);
    let Some(Event::ConnectFailed(ConnectFailure::Refused(why))) = ev.first() else {
        panic!("{ev:?}")
    };
    assert!(why.contains("does not know this client's key"), "{why}");
    let s = p.server.stats();
    assert_eq!((s.handshake_requests, s.handshake_auth_failures), (0, 1));
    assert!(events(&mut p.server)
        .iter()
        .all(|e| matches!(e, Event::HandshakeRejected { .. })));
    assert_eq!(p.server.sessions().count(), 0);
}

#[test]
fn pinning_the_wrong_server_key_fails_with_its_own_error() {
    let (server, alice, other) = (
        generate_private_key(),
        generate_private_key(),
        generate_private_key(),
    );
    let mut p = Pair::new(
        server,
        vec![peer(&alice, "alice", None)],
        ClientIdentity {
            private_key: alice,
            server_public_key: public_key(&other),
        },
    );
    p.connect("", IP_MODE_SERVER_ASSIGNS, None);
    // The hint may end the attempt at once or be kept for when the attempt
    // runs out (an unauthenticated hint alone need not end it).
    p.t += 5_000;
    let mut io = Wire::default();
    p.client.handle_timeout(now(p.t), &mut io);
    let ev = events(&mut p.client);
    assert!(
        matches!(
            ev.first(),
            Some(Event::ConnectFailed(ConnectFailure::ServerKeyMismatch))
        ),
        "{ev:?}"
    );
    let why = ConnectFailure::ServerKeyMismatch.to_string();
    assert!(why.contains("cannot complete") && why.contains("--server-public-key"));
    assert_eq!(p.server.stats().handshake_requests, 0);
}
