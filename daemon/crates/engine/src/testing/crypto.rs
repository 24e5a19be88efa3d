//! Bindings for `kcpvpn-crypto`: packet protection (`Sealer`, `Opener`,
//! `peek_header`), secret stretching and the handshake state machines
//! (`HandshakeInitiator`, `HandshakeResponder`, `PendingAccept`).
//!
//! Part of `kcpvpn._engine.testing`: for tests, lab tools and protocol
//! experiments from Python. They hand raw keys to Python; the daemon never
//! uses them (its endpoint keeps session keys in native memory). Payloads
//! and configurations are dicts (documented in _engine/testing.pyi).
use crate::errors;
use kcpvpn_crypto::handshake as hs;
use kcpvpn_crypto::packet::{self, CipherKind};
use kcpvpn_tunnel::params::defaults;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::net::IpAddr;
use std::sync::Mutex;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Sealer>()?;
    m.add_class::<Opener>()?;
    m.add_class::<HandshakeInitiator>()?;
    m.add_class::<HandshakeResponder>()?;
    m.add_class::<PendingAccept>()?;
    m.add_function(wrap_pyfunction!(stretch_secret, m)?)?;
    m.add_function(wrap_pyfunction!(peek_header, m)?)?;
    m.add_function(wrap_pyfunction!(cipher_name, m)?)?;
    Ok(())
}

fn kind(name: &str) -> PyResult<CipherKind> {
    CipherKind::parse(name).map_err(errors::crypto)
}

fn key32(key: &[u8], what: &str) -> PyResult<[u8; 32]> {
    key.try_into()
        .map_err(|_| errors::invalid(format!("{what} must be 32 bytes, got {}", key.len())))
}

fn stats_dict<'py>(py: Python<'py>, s: &packet::PacketStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("sealed", s.sealed)?;
    d.set_item("opened", s.opened)?;
    d.set_item("auth_failures", s.auth_failures)?;
    d.set_item("replays", s.replays)?;
    d.set_item("too_old", s.too_old)?;
    d.set_item("truncated", s.truncated)?;
    d.set_item("bad_type", s.bad_type)?;
    Ok(d)
}

/// The canonical name of a cipher (ValueError naming the choices if it is
/// unknown or no longer supported).
#[pyfunction]
fn cipher_name(name: &str) -> PyResult<&'static str> {
    Ok(kind(name)?.name())
}

/// Argon2id(secret, salt of `network`) → the 32-byte handshake PSK. Slow on
/// purpose (~0.1–0.3 s, 64 MiB); other Python threads run meanwhile.
#[pyfunction]
#[pyo3(signature = (secret, network = hs::DEFAULT_NETWORK.to_string()))]
fn stretch_secret<'py>(
    py: Python<'py>,
    secret: &[u8],
    network: String,
) -> PyResult<Bound<'py, PyBytes>> {
    let s = secret.to_vec();
    let k = py
        .detach(move || hs::stretch_secret_for(&s, &network))
        .map_err(errors::handshake)?;
    Ok(PyBytes::new(py, &k))
}

/// (msg_type, receiver_id, counter) of a data/close datagram, or None.
#[pyfunction]
fn peek_header(datagram: &[u8]) -> Option<(u8, u32, u64)> {
    packet::peek_header(datagram).map(|h| (h.msg_type, h.receiver_id, h.counter))
}

/// Seals datagrams for one direction of a session.
#[pyclass(frozen, module = "kcpvpn._engine.testing")]
pub struct Sealer {
    inner: Mutex<(packet::Sealer, Vec<u8>)>,
}

#[pymethods]
impl Sealer {
    #[new]
    fn new(kind_name: &str, key: &[u8], receiver_id: u32) -> PyResult<Self> {
        let s = packet::Sealer::new(kind(kind_name)?, &key32(key, "key")?, receiver_id);
        Ok(Sealer {
            inner: Mutex::new((s, Vec::new())),
        })
    }

    #[pyo3(signature = (plaintext, msg_type = packet::MSG_DATA))]
    fn seal<'py>(
        &self,
        py: Python<'py>,
        plaintext: &[u8],
        msg_type: u8,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (s, buf) = &mut *g;
        s.seal_into(msg_type, plaintext, buf)
            .map_err(errors::crypto)?;
        Ok(PyBytes::new(py, buf))
    }

    /// The counter the next datagram will carry.
    #[getter]
    fn counter(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .counter()
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .stats();
        stats_dict(py, &s)
    }
}

/// Opens datagrams for one direction of a session (with its replay window).
#[pyclass(frozen, module = "kcpvpn._engine.testing")]
pub struct Opener {
    inner: Mutex<(packet::Opener, Vec<u8>)>,
}

impl Opener {
    fn open_raw<'py>(
        &self,
        py: Python<'py>,
        datagram: &[u8],
    ) -> PyResult<(u8, u64, Bound<'py, PyBytes>)> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (o, buf) = &mut *g;
        buf.clear();
        buf.extend_from_slice(datagram);
        let opened = o.open_in_place(buf).map_err(errors::crypto)?;
        Ok((
            opened.msg_type,
            opened.counter,
            PyBytes::new(py, opened.payload),
        ))
    }
}

#[pymethods]
impl Opener {
    #[new]
    fn new(kind_name: &str, key: &[u8]) -> PyResult<Self> {
        let o = packet::Opener::new(kind(kind_name)?, &key32(key, "key")?);
        Ok(Opener {
            inner: Mutex::new((o, Vec::new())),
        })
    }

    /// The plaintext; ValueError saying why otherwise (truncated, unexpected
    /// message type, replayed, too old, authentication failed).
    fn open<'py>(&self, py: Python<'py>, datagram: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        Ok(self.open_raw(py, datagram)?.2)
    }

    /// (msg_type, counter, plaintext).
    fn open_message<'py>(
        &self,
        py: Python<'py>,
        datagram: &[u8],
    ) -> PyResult<(u8, u64, Bound<'py, PyBytes>)> {
        self.open_raw(py, datagram)
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .stats();
        stats_dict(py, &s)
    }
}

// ------------------------------------------------------------ dict helpers
// (shared with the tunnel bindings)

fn check_keys(d: &Bound<'_, PyDict>, allowed: &[&str], what: &str) -> PyResult<()> {
    for k in d.keys() {
        let k: String = k
            .extract()
            .map_err(|_| errors::invalid(format!("{what}: keys must be strings")))?;
        if !allowed.contains(&k.as_str()) {
            return Err(errors::invalid(format!(
                "{what}: unknown key {k:?} (expected {})",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

fn opt<'py, T: FromPyObjectOwned<'py>>(d: &Bound<'py, PyDict>, key: &str) -> PyResult<Option<T>> {
    match d.get_item(key)? {
        Some(v) if !v.is_none() => v
            .extract::<T>()
            .map(Some)
            .map_err(|e| errors::invalid(format!("key {key:?}: {}", e.into()))),
        _ => Ok(None),
    }
}

fn req<'py, T: FromPyObjectOwned<'py>>(d: &Bound<'py, PyDict>, key: &str) -> PyResult<T> {
    opt(d, key)?.ok_or_else(|| errors::invalid(format!("missing key {key:?}")))
}

fn ip(d: &Bound<'_, PyDict>, key: &str) -> PyResult<Option<IpAddr>> {
    match opt::<String>(d, key)? {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| errors::invalid(format!("key {key:?}: {s:?} is not an IP address"))),
    }
}

const INIT_KEYS: &[&str] = &[
    "client_id",
    "mtu",
    "ip_mode",
    "ip",
    "fec",
    "cipher",
    "udp_mtu",
    "keepalive",
];
const CONFIG_KEYS: &[&str] = &[
    "tap",
    "mtu",
    "full_frame_mtu",
    "server_ip",
    "client_ip",
    "prefixlen",
    "fec",
    "udp_mtu",
    "keepalive",
];

fn init_payload(d: &Bound<'_, PyDict>) -> PyResult<hs::InitPayload> {
    check_keys(d, INIT_KEYS, "handshake payload")?;
    Ok(hs::InitPayload {
        client_id: opt(d, "client_id")?.unwrap_or_default(),
        mtu: req(d, "mtu")?,
        ip_mode: opt(d, "ip_mode")?.unwrap_or(hs::IP_MODE_SERVER_ASSIGNS),
        ip: ip(d, "ip")?,
        fec: opt(d, "fec")?,
        cipher: kind(&opt::<String>(d, "cipher")?.unwrap_or_else(|| "aes".into()))?,
        udp_mtu: opt(d, "udp_mtu")?.unwrap_or(defaults::UDP_MTU),
        keepalive_s: opt(d, "keepalive")?.unwrap_or(defaults::KEEPALIVE_S),
    })
}

fn init_dict<'py>(py: Python<'py>, p: &hs::InitPayload) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("client_id", &p.client_id)?;
    d.set_item("mtu", p.mtu)?;
    d.set_item("ip_mode", p.ip_mode)?;
    d.set_item("ip", p.ip.map(|i| i.to_string()))?;
    d.set_item("fec", p.fec)?;
    d.set_item("cipher", p.cipher.name())?;
    d.set_item("udp_mtu", p.udp_mtu)?;
    d.set_item("keepalive", p.keepalive_s)?;
    Ok(d)
}

fn server_config(d: &Bound<'_, PyDict>) -> PyResult<hs::ServerConfigPayload> {
    check_keys(d, CONFIG_KEYS, "server configuration")?;
    let c = hs::ServerConfigPayload {
        tap: opt(d, "tap")?.unwrap_or(false),
        mtu: req(d, "mtu")?,
        full_frame_mtu: req(d, "full_frame_mtu")?,
        server_ip: ip(d, "server_ip")?,
        client_ip: ip(d, "client_ip")?,
        prefixlen: opt(d, "prefixlen")?,
        fec: opt(d, "fec")?,
        udp_mtu: opt(d, "udp_mtu")?.unwrap_or(defaults::UDP_MTU),
        keepalive_s: opt(d, "keepalive")?.unwrap_or(defaults::KEEPALIVE_S),
    };
    c.validate().map_err(errors::handshake)?;
    Ok(c)
}

fn config_dict<'py>(py: Python<'py>, c: &hs::ServerConfigPayload) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("tap", c.tap)?;
    d.set_item("mtu", c.mtu)?;
    d.set_item("full_frame_mtu", c.full_frame_mtu)?;
    d.set_item("server_ip", c.server_ip.map(|i| i.to_string()))?;
    d.set_item("client_ip", c.client_ip.map(|i| i.to_string()))?;
    d.set_item("prefixlen", c.prefixlen)?;
    d.set_item("fec", c.fec)?;
    d.set_item("udp_mtu", c.udp_mtu)?;
    d.set_item("keepalive", c.keepalive_s)?;
    Ok(d)
}

fn keys_dict<'py>(py: Python<'py>, k: &hs::SessionKeys) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("send_key", PyBytes::new(py, &k.send))?;
    d.set_item("recv_key", PyBytes::new(py, &k.recv))?;
    Ok(d)
}

// ------------------------------------------------------------ handshake

/// Client side of one handshake attempt.
#[pyclass(frozen, module = "kcpvpn._engine.testing")]
pub struct HandshakeInitiator {
    inner: Mutex<hs::Initiator>,
    message: Vec<u8>,
}

#[pymethods]
impl HandshakeInitiator {
    #[new]
    fn new(
        psk: &[u8],
        payload: &Bound<'_, PyDict>,
        session_id: u32,
        now_ms: u64,
    ) -> PyResult<Self> {
        let p = init_payload(payload)?;
        let (inner, message) = hs::Initiator::new(&key32(psk, "psk")?, p, session_id, now_ms)
            .map_err(errors::handshake)?;
        Ok(HandshakeInitiator {
            inner: Mutex::new(inner),
            message,
        })
    }

    /// Message 1, to send to the server.
    #[getter]
    fn message<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.message)
    }

    /// None: not an answer to this attempt. Otherwise a dict (see the .pyi).
    /// ValueError when it claims to be the answer but fails (e.g.
    /// "authentication failed: the server does not share our secret ...").
    fn read_response<'py>(
        &self,
        py: Python<'py>,
        datagram: &[u8],
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let out = self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read_response(datagram)
            .map_err(errors::handshake)?;
        let Some(out) = out else { return Ok(None) };
        let d = PyDict::new(py);
        match out {
            hs::HandshakeOutcome::Accepted {
                config,
                keys,
                server_session_id,
            } => {
                d.set_item("accepted", true)?;
                d.set_item("reason", "")?;
                d.set_item("config", config_dict(py, &config)?)?;
                d.set_item("server_session_id", server_session_id)?;
                d.update(keys_dict(py, &keys)?.as_mapping())?;
            }
            hs::HandshakeOutcome::Refused { reason } => {
                d.set_item("accepted", false)?;
                d.set_item("reason", reason)?;
                d.set_item("config", py.None())?;
                d.set_item("server_session_id", py.None())?;
                d.set_item("send_key", py.None())?;
                d.set_item("recv_key", py.None())?;
            }
        }
        Ok(Some(d))
    }
}

/// Server side: verifies message 1 and remembers recent ones (replays).
#[pyclass(frozen, module = "kcpvpn._engine.testing")]
pub struct HandshakeResponder {
    inner: Mutex<hs::Responder>,
}

#[pymethods]
impl HandshakeResponder {
    #[new]
    #[pyo3(signature = (psk, max_age_ms = hs::DEFAULT_MAX_AGE_MS, replay_capacity = hs::DEFAULT_REPLAY_CAPACITY))]
    fn new(psk: &[u8], max_age_ms: u64, replay_capacity: usize) -> PyResult<Self> {
        let r = hs::Responder::with_capacity(&key32(psk, "psk")?, max_age_ms, replay_capacity);
        Ok(HandshakeResponder {
            inner: Mutex::new(r),
        })
    }

    /// (request dict, PendingAccept); ValueError saying why otherwise.
    fn read_init<'py>(
        &self,
        py: Python<'py>,
        datagram: &[u8],
        now_ms: u64,
    ) -> PyResult<(Bound<'py, PyDict>, PendingAccept)> {
        let (req, pending) = self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read_init(datagram, now_ms)
            .map_err(errors::handshake)?;
        let d = init_dict(py, &req.payload)?;
        d.set_item("sender_id", req.sender_id)?;
        d.set_item("timestamp_ms", req.timestamp_ms)?;
        Ok((
            d,
            PendingAccept {
                inner: Mutex::new(Some(pending)),
                sender_id: req.sender_id,
            },
        ))
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.lock().unwrap_or_else(|e| e.into_inner()).stats();
        let d = PyDict::new(py);
        d.set_item("requests", s.requests)?;
        d.set_item("auth_failures", s.auth_failures)?;
        d.set_item("malformed", s.malformed)?;
        d.set_item("stale", s.stale)?;
        d.set_item("replayed", s.replayed)?;
        d.set_item("busy", s.busy)?;
        Ok(d)
    }
}

/// A verified message 1 awaiting a decision; answer once.
#[pyclass(frozen, module = "kcpvpn._engine.testing")]
pub struct PendingAccept {
    inner: Mutex<Option<hs::PendingAccept>>,
    sender_id: u32,
}

impl PendingAccept {
    fn take(&self) -> PyResult<hs::PendingAccept> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| errors::AlreadyUsed::new_err("this handshake was already answered"))
    }
}

#[pymethods]
impl PendingAccept {
    /// The client's receive session id.
    #[getter]
    fn sender_id(&self) -> u32 {
        self.sender_id
    }

    /// (message 2, {"send_key", "recv_key"}) for the server.
    fn accept<'py>(
        &self,
        py: Python<'py>,
        config: &Bound<'py, PyDict>,
        session_id: u32,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyDict>)> {
        let c = server_config(config)?;
        let (msg, keys) = self.take()?.accept(&c, session_id);
        Ok((PyBytes::new(py, &msg), keys_dict(py, &keys)?))
    }

    /// Message 2 carrying the refusal reason (clipped to 200 bytes).
    fn refuse<'py>(&self, py: Python<'py>, reason: &str) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &self.take()?.refuse(reason)))
    }
}
