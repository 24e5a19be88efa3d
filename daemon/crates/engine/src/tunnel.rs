//! Bindings for the tunnel: the data-path `Endpoint` (one native thread per
//! endpoint; Python only sends commands and reads events and counters), the
//! stretched secret `Psk`, and the client-side handshake `Initiator`.
//! Session keys never cross into Python: they travel from the handshake
//! objects to the endpoint inside native memory.
use crate::crypto::{config_dict, init_dict, init_payload, kind, opt, req, server_config};
use kcpvpn_crypto::handshake as hs;
use kcpvpn_kcp::KcpConfig;
use kcpvpn_tunnel::endpoint::{Command, Endpoint as NativeEndpoint, EndpointConfig, Event};
use kcpvpn_tunnel::session::{Closed, SessionConfig};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Mutex;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Psk>()?;
    m.add_class::<Initiator>()?;
    m.add_class::<HandshakeOutcome>()?;
    m.add_class::<Endpoint>()?;
    Ok(())
}

/// The shared secret after Argon2id stretching. Opaque to Python.
#[pyclass(frozen)]
pub struct Psk(pub [u8; 32]);

#[pymethods]
impl Psk {
    #[new]
    fn new(py: Python<'_>, secret: &[u8]) -> PyResult<Self> {
        if secret.is_empty() {
            return Err(PyValueError::new_err(
                "the secret is empty: set --secret or KCPVPN_KEY",
            ));
        }
        let s = secret.to_vec();
        // Deliberately slow (memory-hard); let other Python threads run meanwhile.
        Ok(Psk(py.detach(move || hs::stretch_secret(&s))))
    }
}

fn session_config(d: &Bound<'_, PyDict>) -> PyResult<SessionConfig> {
    let kcp = KcpConfig {
        nodelay: req(d, "nodelay")?,
        interval: req(d, "interval")?,
        resend: req(d, "resend")?,
        nc: req(d, "nc")?,
        snd_wnd: req(d, "sndwnd")?,
        rcv_wnd: req(d, "rcvwnd")?,
        ack_nodelay: req(d, "ack_nodelay")?,
        bbr: opt(d, "bbr")?.unwrap_or(false),
        unordered: opt(d, "unordered")?.unwrap_or(false),
        ..KcpConfig::default()
    };
    let udp_mtu: usize = req(d, "udp_mtu")?;
    let fec_send: Option<(u8, u8)> = opt(d, "fec_send")?;
    if udp_mtu < 256 + kcpvpn_tunnel::session::overhead(fec_send.is_some()) {
        return Err(PyValueError::new_err(format!(
            "udp_mtu {udp_mtu} is too small"
        )));
    }
    Ok(SessionConfig {
        kcp,
        fec_send,
        fec_recv: opt(d, "fec_recv")?,
        rapid_fec: req(d, "rapid_fec")?,
        cipher: kind(&req::<String>(d, "cipher")?)?,
        keepalive_ms: req(d, "keepalive_ms")?,
        idle_timeout_ms: req(d, "idle_timeout_ms")?,
        udp_mtu,
        send_buffer_bytes: req(d, "send_buffer")?,
        max_packet: req(d, "max_packet")?,
        mss_clamp_mtu: opt(d, "mss_clamp_mtu")?,
        ethernet: opt(d, "ethernet")?.unwrap_or(false),
    })
}

/// What the control plane needs to decide on a client: its message-1 payload.
fn request_dict<'py>(py: Python<'py>, r: &hs::InitRequest) -> PyResult<Bound<'py, PyDict>> {
    init_dict(py, &r.payload)
}

/// Client side of the handshake: one initiation (message 1) and its answer.
#[pyclass(frozen)]
pub struct Initiator {
    state: Mutex<Option<hs::Initiator>>,
    message: Vec<u8>,
    session_id: u32,
}

#[pymethods]
impl Initiator {
    #[new]
    fn new(psk: &Psk, payload: &Bound<'_, PyDict>, session_id: u32) -> PyResult<Self> {
        let p = init_payload(payload)?;
        let (state, message) =
            hs::Initiator::new(&psk.0, p, session_id, kcpvpn_tunnel::sys::unix_ms())
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(Initiator {
            state: Mutex::new(Some(state)),
            message,
            session_id,
        })
    }

    /// Message 1, to send to the server.
    fn message<'py>(&self, py: Python<'py>) -> Bound<'py, pyo3::types::PyBytes> {
        pyo3::types::PyBytes::new(py, &self.message)
    }

    /// Reads a datagram from the server. None when it isn't an answer to this
    /// initiation; otherwise an outcome (accepted, refused with a reason, or
    /// rejected because the server could not authenticate us).
    fn read_response(&self, data: &[u8]) -> PyResult<Option<HandshakeOutcome>> {
        if let Some(reason) = reject_hint(data, self.session_id) {
            let out = hs::HandshakeOutcome::Refused {
                reason: reason.into(),
            };
            return Ok(Some(HandshakeOutcome {
                outcome: Mutex::new(Some(out)),
            }));
        }
        let mut guard = self.state.lock().unwrap();
        let Some(state) = guard.as_mut() else {
            return Err(PyRuntimeError::new_err("this initiation already completed"));
        };
        match state.read_response(data) {
            Ok(None) => Ok(None),
            Ok(Some(out)) => {
                guard.take();
                Ok(Some(HandshakeOutcome {
                    outcome: Mutex::new(Some(out)),
                }))
            }
            Err(e) => Err(PyValueError::new_err(e.to_string())),
        }
    }
}

/// The server's unauthenticated hint that our initiation failed, if `data`
/// is one for our session id (see endpoint::MSG_REJECT).
fn reject_hint(data: &[u8], session_id: u32) -> Option<&'static str> {
    use kcpvpn_tunnel::endpoint as ep;
    if data.len() != ep::REJECT_LEN
        || data[0] != ep::MSG_REJECT
        || data[4..8] != session_id.to_le_bytes()
    {
        return None;
    }
    Some(match data[1] {
        ep::REJECT_AUTH_FAILED => {
            "authentication failed: the server does not share our secret (check --secret / KCPVPN_KEY on both sides)"
        }
        ep::REJECT_STALE => "the server refused our handshake as stale: the clocks of client and server differ by more than a minute (sync them, e.g. with NTP)",
        ep::REJECT_REPLAYED => "the server refused our handshake as a replay",
        _ => "the server refused our handshake",
    })
}

#[pyclass(frozen)]
pub struct HandshakeOutcome {
    outcome: Mutex<Option<hs::HandshakeOutcome>>,
}

#[pymethods]
impl HandshakeOutcome {
    #[getter]
    fn accepted(&self) -> bool {
        matches!(
            self.outcome.lock().unwrap().as_ref(),
            Some(hs::HandshakeOutcome::Accepted { .. })
        )
    }

    /// Why the server said no (empty when accepted).
    #[getter]
    fn reason(&self) -> String {
        match self.outcome.lock().unwrap().as_ref() {
            Some(hs::HandshakeOutcome::Refused { reason }) => reason.clone(),
            _ => String::new(),
        }
    }

    /// The server's configuration (accepted outcomes only).
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        match self.outcome.lock().unwrap().as_ref() {
            Some(hs::HandshakeOutcome::Accepted { config, .. }) => {
                Ok(Some(config_dict(py, config)?))
            }
            _ => Ok(None),
        }
    }
}

fn sockaddr(addr: (String, u16)) -> PyResult<SocketAddr> {
    let ip: IpAddr = addr
        .0
        .parse()
        .map_err(|_| PyValueError::new_err(format!("{:?} is not an IP address", addr.0)))?;
    Ok(SocketAddr::new(ip, addr.1))
}

fn addr_tuple(a: &SocketAddr) -> (String, u16) {
    let ip = match a.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    (ip.to_string(), a.port())
}

/// Turns a Python-side descriptor number into one the endpoint owns. The
/// caller passes a descriptor it has dup'ed for us.
fn take_fd(fd: i32) -> PyResult<OwnedFd> {
    if fd < 0 {
        return Err(PyValueError::new_err("invalid file descriptor"));
    }
    // SAFETY: Python handed over a dup'ed descriptor that only we will close.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn closed_reason(c: Closed) -> &'static str {
    match c {
        Closed::ByPeer => "closed by peer",
        Closed::IdleTimeout => "peer silent (keepalive timeout)",
        Closed::DeadLink => "link dead (retransmissions exhausted)",
    }
}

/// The native data path: a UDP socket, sessions and their interfaces.
#[pyclass(frozen)]
pub struct Endpoint {
    inner: NativeEndpoint,
}

#[pymethods]
impl Endpoint {
    /// A server endpoint on `fd` (a bound UDP socket, dup'ed for us).
    #[staticmethod]
    #[pyo3(signature = (fd, psk, max_datagram=1500, handshake_max_age_ms=60_000))]
    fn server(
        fd: i32,
        psk: &Psk,
        max_datagram: usize,
        handshake_max_age_ms: u64,
    ) -> PyResult<Self> {
        let fd = take_fd(fd)?;
        let responder = hs::Responder::new(&psk.0, handshake_max_age_ms);
        let ep = NativeEndpoint::start(
            fd,
            EndpointConfig {
                responder: Some(responder),
                max_datagram,
            },
        )
        .map_err(|e| PyOSError::new_err(format!("cannot start the data path: {e}")))?;
        Ok(Endpoint { inner: ep })
    }

    /// A client endpoint on `fd` (its UDP socket, dup'ed for us).
    #[staticmethod]
    #[pyo3(signature = (fd, max_datagram=1500))]
    fn client(fd: i32, max_datagram: usize) -> PyResult<Self> {
        let fd = take_fd(fd)?;
        let ep = NativeEndpoint::start(
            fd,
            EndpointConfig {
                responder: None,
                max_datagram,
            },
        )
        .map_err(|e| PyOSError::new_err(format!("cannot start the data path: {e}")))?;
        Ok(Endpoint { inner: ep })
    }

    fn event_fd(&self) -> i32 {
        self.inner.event_fd()
    }

    fn is_running(&self) -> bool {
        self.inner.is_running()
    }

    /// Events since the last call, as dicts with an "event" key:
    /// handshake, up, closed, moved, error.
    fn events<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let evs = self.inner.take_events();
        let out = PyList::empty(py);
        for e in evs {
            let d = PyDict::new(py);
            match e {
                Event::HandshakeRequest {
                    pending_id,
                    request,
                    from,
                } => {
                    d.set_item("event", "handshake")?;
                    d.set_item("pending_id", pending_id)?;
                    d.set_item("request", request_dict(py, &request)?)?;
                    d.set_item("from", addr_tuple(&from))?;
                }
                Event::SessionUp { session_id } => {
                    d.set_item("event", "up")?;
                    d.set_item("session_id", session_id)?;
                }
                Event::SessionClosed { session_id, reason } => {
                    d.set_item("event", "closed")?;
                    d.set_item("session_id", session_id)?;
                    d.set_item("reason", closed_reason(reason))?;
                }
                Event::PeerMoved { session_id, to } => {
                    d.set_item("event", "moved")?;
                    d.set_item("session_id", session_id)?;
                    d.set_item("to", addr_tuple(&to))?;
                }
                Event::Error { message } => {
                    d.set_item("event", "error")?;
                    d.set_item("message", message)?;
                }
            }
            out.append(d)?;
        }
        Ok(out)
    }

    /// Server: answer handshake `pending_id` and start its session.
    fn accept(
        &self,
        pending_id: u64,
        session_id: u32,
        config: &Bound<'_, PyDict>,
        tun_fd: i32,
        params: &Bound<'_, PyDict>,
    ) -> PyResult<()> {
        let config = server_config(config)?;
        let cfg = session_config(params)?;
        let tun = take_fd(tun_fd)?;
        self.inner.command(Command::Accept {
            pending_id,
            session_id,
            config,
            tun,
            cfg,
        });
        Ok(())
    }

    fn refuse(&self, pending_id: u64, reason: String) {
        self.inner.command(Command::Refuse { pending_id, reason });
    }

    /// Client: start the session a completed handshake agreed on.
    fn add_session(
        &self,
        outcome: &HandshakeOutcome,
        session_id: u32,
        peer: (String, u16),
        tun_fd: i32,
        params: &Bound<'_, PyDict>,
    ) -> PyResult<()> {
        let cfg = session_config(params)?;
        let peer = sockaddr(peer)?;
        let taken = outcome.outcome.lock().unwrap().take();
        let Some(hs::HandshakeOutcome::Accepted {
            keys,
            server_session_id,
            ..
        }) = taken
        else {
            return Err(PyValueError::new_err(
                "this handshake outcome is not an accepted one (or was used already)",
            ));
        };
        let tun = take_fd(tun_fd)?;
        self.inner.command(Command::AddSession {
            session_id,
            peer_id: server_session_id,
            conv: session_id,
            send_key: keys.send,
            recv_key: keys.recv,
            peer,
            tun,
            cfg,
        });
        Ok(())
    }

    fn close(&self, session_id: u32) {
        self.inner.command(Command::Close { session_id });
    }

    /// Counters: the endpoint's and each session's (refreshed every 250 ms).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        self.inner.with_snapshot(|s| -> PyResult<()> {
            let e = &s.endpoint;
            let ed = PyDict::new(py);
            ed.set_item("datagrams_in", e.datagrams_in)?;
            ed.set_item("datagrams_out", e.datagrams_out)?;
            ed.set_item("unknown_session", e.unknown_session)?;
            ed.set_item("malformed", e.malformed)?;
            ed.set_item("handshake_failures", e.handshake_failures)?;
            ed.set_item("handshake_requests", e.handshake_requests)?;
            ed.set_item("send_errors", e.send_errors)?;
            ed.set_item("gso_messages", e.gso_messages)?;
            ed.set_item("tun_write_drops", e.tun_write_drops)?;
            d.set_item("endpoint", ed)?;
            let list = PyList::empty(py);
            for ss in &s.sessions {
                let sd = PyDict::new(py);
                let st = &ss.stats;
                sd.set_item("session_id", ss.session_id)?;
                sd.set_item("peer", addr_tuple(&ss.peer))?;
                sd.set_item("packets_in", st.packets_in)?;
                sd.set_item("packets_out", st.packets_out)?;
                sd.set_item("bytes_in", st.bytes_in)?;
                sd.set_item("bytes_out", st.bytes_out)?;
                sd.set_item("datagrams_in", st.datagrams_in)?;
                sd.set_item("datagrams_out", st.datagrams_out)?;
                sd.set_item("wire_bytes_in", st.wire_bytes_in)?;
                sd.set_item("wire_bytes_out", st.wire_bytes_out)?;
                sd.set_item("auth_failures", st.auth_failures)?;
                sd.set_item("replays", st.replays)?;
                sd.set_item("malformed", st.malformed)?;
                sd.set_item("keepalives_in", st.keepalives_in)?;
                sd.set_item("keepalives_out", st.keepalives_out)?;
                sd.set_item("rapid_fec_flushes", st.rapid_fec_flushes)?;
                sd.set_item("fec_parity", (st.fec_parity * 100.0).round() / 100.0)?;
                sd.set_item("fec_loss_ppm", st.fec_loss_ppm)?;
                sd.set_item("feedback_in", st.feedback_in)?;
                sd.set_item("feedback_out", st.feedback_out)?;
                sd.set_item("fec_recovered", ss.fec_recovered)?;
                let k = &ss.kcp;
                let kd = PyDict::new(py);
                for (name, v) in [
                    ("segments_sent", k.segments_sent),
                    ("segments_recv", k.segments_recv),
                    ("retransmits", k.retransmits),
                    ("fast_retransmits", k.fast_retransmits),
                    ("dup_segments", k.dup_segments),
                    ("out_of_window", k.out_of_window),
                    ("input_errors", k.input_errors),
                ] {
                    kd.set_item(name, v)?;
                }
                for (name, v) in [
                    ("srtt_ms", k.srtt),
                    ("rttvar_ms", k.rttvar),
                    ("rto_ms", k.rto),
                    ("cwnd", k.cwnd),
                    ("rmt_wnd", k.rmt_wnd),
                    ("snd_queue", k.snd_queue),
                    ("snd_inflight", k.snd_inflight),
                    ("rcv_queue", k.rcv_queue),
                    ("rcv_buf", k.rcv_buf),
                    ("min_rtt_ms", k.min_rtt),
                ] {
                    kd.set_item(name, v)?;
                }
                kd.set_item("bandwidth_kbit", k.bandwidth_kbit)?;
                kd.set_item("cc_restarts", k.cc_restarts)?;
                kd.set_item("early_deliveries", k.early_deliveries)?;
                kd.set_item("cc_queue_corrections", k.cc_queue_corrections)?;
                sd.set_item("kcp", kd)?;
                sd.set_item("fec_errors", st.fec_errors)?;
                sd.set_item("kcp_errors", st.kcp_errors)?;
                sd.set_item("oversize_packets", st.oversize_packets)?;
                list.append(sd)?;
            }
            d.set_item("sessions", list)?;
            Ok(())
        })?;
        Ok(d)
    }

    /// Stops the data path; each session sends an authenticated close first.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.stop())
            .map_err(|e| PyOSError::new_err(format!("data path failed: {e}")))
    }
}
