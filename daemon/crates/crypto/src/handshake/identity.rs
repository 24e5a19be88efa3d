//! Identity mode's keys: X25519 static key pairs (generated, derived,
//! written as base64 like WireGuard's), the server's list of allowed client
//! keys, and the client's pinned server key.
use super::HandshakeError;
use snow::params::DHChoice;
use snow::resolvers::{CryptoResolver, DefaultResolver};
use std::collections::HashMap;
use std::net::IpAddr;

pub const KEY_LEN: usize = 32;

fn dh() -> Box<dyn snow::types::Dh> {
    DefaultResolver
        .resolve_dh(&DHChoice::Curve25519)
        .expect("snow's default resolver has X25519")
}

/// A new random private key (the OS random source, through snow).
pub fn generate_private_key() -> [u8; KEY_LEN] {
    let mut rng = DefaultResolver
        .resolve_rng()
        .expect("snow's default resolver has a random source");
    let mut d = dh();
    d.generate(rng.as_mut())
        .expect("the OS random source works");
    let mut k = [0u8; KEY_LEN];
    k.copy_from_slice(d.privkey());
    k
}

/// The public key of `private` (X25519 clamps any 32 bytes into a valid
/// scalar, so every private key has one).
pub fn public_key(private: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    let mut d = dh();
    d.set(private);
    let mut k = [0u8; KEY_LEN];
    k.copy_from_slice(d.pubkey());
    k
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (how keys are written and shown).
pub fn to_base64(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// What a client holds in identity mode.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub private_key: [u8; KEY_LEN],
    /// The server's public key, pinned: a server without the matching
    /// private key cannot even read message 1.
    pub server_public_key: [u8; KEY_LEN],
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("server_public_key", &to_base64(&self.server_public_key))
            .finish_non_exhaustive()
    }
}

/// One allowed client of an identity-mode server: its key names it, and
/// the server (not the client) decides its id and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub public_key: [u8; KEY_LEN],
    /// The client id it gets (hooks, logs, replacing its older session);
    /// empty: derived from the key (see [`key_client_id`]).
    pub client_id: String,
    /// Its fixed tunnel address; None: as for any client (the pool, or the
    /// address it asks for under the server's policy).
    pub ip: Option<IpAddr>,
}

/// The client id of a peer configured without one: `k-` and the first 14
/// characters of its key in URL-safe base64 (all within the id alphabet).
pub fn key_client_id(public_key: &[u8; KEY_LEN]) -> String {
    let b = to_base64(public_key).replace('+', "-").replace('/', "_");
    format!("k-{}", &b[..14])
}

/// The server's identity: its static private key and the allowed peers.
#[derive(Clone)]
pub struct ServerIdentity {
    pub(super) private_key: [u8; KEY_LEN],
    pub(super) peers: HashMap<[u8; KEY_LEN], Peer>,
    /// Fixed address -> its peer's key.
    fixed: HashMap<IpAddr, [u8; KEY_LEN]>,
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("public_key", &to_base64(&self.public_key()))
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl ServerIdentity {
    /// Checks the peers: distinct keys and ids, valid ids, none of them
    /// the server's own key.
    pub fn new(private_key: [u8; KEY_LEN], peers: Vec<Peer>) -> Result<Self, HandshakeError> {
        let own = public_key(&private_key);
        let mut by_key = HashMap::with_capacity(peers.len());
        let mut ids = std::collections::HashSet::new();
        let mut fixed = HashMap::new();
        for mut p in peers {
            let shown = to_base64(&p.public_key);
            if p.public_key == own {
                return Err(HandshakeError::InvalidPayload(format!(
                    "peer {shown} is the server's own public key"
                )));
            }
            if p.client_id.is_empty() {
                p.client_id = key_client_id(&p.public_key);
            }
            if !super::payload::valid_client_id(&p.client_id) || p.client_id.is_empty() {
                return Err(HandshakeError::InvalidPayload(format!(
                    "peer {shown}: client id {:?} is invalid (at most {} of A-Za-z0-9_-)",
                    p.client_id,
                    super::MAX_CLIENT_ID
                )));
            }
            if !ids.insert(p.client_id.clone()) {
                return Err(HandshakeError::InvalidPayload(format!(
                    "client id {:?} is given to two peers",
                    p.client_id
                )));
            }
            if let Some(ip) = p.ip {
                if fixed.insert(ip, p.public_key).is_some() {
                    return Err(HandshakeError::InvalidPayload(format!(
                        "address {ip} is given to two peers"
                    )));
                }
            }
            if by_key.insert(p.public_key, p).is_some() {
                return Err(HandshakeError::InvalidPayload(format!(
                    "peer {shown} is listed twice"
                )));
            }
        }
        Ok(ServerIdentity {
            private_key,
            peers: by_key,
            fixed,
        })
    }

    pub fn public_key(&self) -> [u8; KEY_LEN] {
        public_key(&self.private_key)
    }

    pub fn peer(&self, key: &[u8; KEY_LEN]) -> Option<&Peer> {
        self.peers.get(key)
    }

    /// The peer whose fixed address `ip` is.
    pub fn fixed_owner(&self, ip: IpAddr) -> Option<&Peer> {
        self.fixed.get(&ip).and_then(|k| self.peers.get(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(to_base64(b""), "");
        assert_eq!(to_base64(b"f"), "Zg==");
        assert_eq!(to_base64(b"fo"), "Zm8=");
        assert_eq!(to_base64(b"foo"), "Zm9v");
        assert_eq!(to_base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(to_base64(&[0xff; 32]).len(), 44);
    }

    /// RFC 7748, section 6.1: Alice's key pair.
    #[test]
    fn public_key_known_answer() {
        let hex = |s: &str| -> [u8; 32] {
            let mut k = [0u8; 32];
            for (i, b) in k.iter_mut().enumerate() {
                *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
            }
            k
        };
        let private = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let public = hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        assert_eq!(public_key(&private), public);
    }

    #[test]
    fn generated_keys_differ_and_peers_are_checked() {
        let a = generate_private_key();
        let b = generate_private_key();
        assert_ne!(a, b);
        let peer = |k: &[u8; 32], id: &str| Peer {
            public_key: public_key(k),
            client_id: id.into(),
            ip: None,
        };
        let s = ServerIdentity::new(a, vec![peer(&b, "")]).unwrap();
        let id = &s.peer(&public_key(&b)).unwrap().client_id;
        assert!(id.starts_with("k-") && id.len() == 16, "{id}");
        assert!(ServerIdentity::new(a, vec![peer(&a, "x")]).is_err());
        assert!(ServerIdentity::new(a, vec![peer(&b, "x"), peer(&b, "y")]).is_err());
        let c = generate_private_key();
        assert!(ServerIdentity::new(a, vec![peer(&b, "x"), peer(&c, "x")]).is_err());
        assert!(ServerIdentity::new(a, vec![peer(&b, "bad id")]).is_err());
    }
}
