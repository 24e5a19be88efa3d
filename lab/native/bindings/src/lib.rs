//! `kcpvpn_lab._emulator`: the lab's link emulator for Python.
//! `LinkEmulator` bridges two interfaces of the current network namespace
//! with impairments per direction. Its threads are native and never touch
//! Python. The product (`kcpvpn._engine`) does not contain it.
//! `LoadDriver` runs many client sessions of the product's endpoint in one
//! process (`kcpvpn lab load`).
use kcpvpn_emulator::emulator::{DirStats, Direction, Emulator};
use kcpvpn_emulator::{LinkParams, QUEUE_WAIT_BOUNDS_MS};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Mutex;

#[pymodule]
fn _emulator(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<LinkEmulator>()?;
    m.add_class::<LoadDriver>()?;
    m.add("EMULATOR_PARAMS", LinkParams::FIELDS.to_vec())?;
    Ok(())
}

/// dict of impairments (keys of `EMULATOR_PARAMS`; missing ones are off) → LinkParams.
fn params(d: Option<&Bound<'_, PyDict>>) -> PyResult<LinkParams> {
    let mut p = LinkParams::default();
    if let Some(d) = d {
        for (k, v) in d.iter() {
            let key: String = k
                .extract()
                .map_err(|_| PyValueError::new_err("impairment names must be strings"))?;
            if v.is_none() {
                continue;
            }
            let value: f64 = v.extract().map_err(|_| {
                PyValueError::new_err(format!("impairment {key:?} must be a number, got {v}"))
            })?;
            p.set_field(&key, value)
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
        }
    }
    p.validate()
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(p)
}

fn direction(s: &str) -> PyResult<Direction> {
    Direction::parse(s).ok_or_else(|| {
        PyValueError::new_err(format!(
            "direction {s:?} is not one of \"a_to_b\", \"b_to_a\""
        ))
    })
}

fn stats_dict<'py>(py: Python<'py>, s: &DirStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let l = &s.link;
    for (k, v) in [
        ("rx_frames", l.rx_frames),
        ("rx_bytes", l.rx_bytes),
        ("tx_frames", l.tx_frames),
        ("tx_bytes", l.tx_bytes),
        ("dropped_loss", l.dropped_loss),
        ("dropped_burst", l.dropped_burst),
        ("dropped_queue", l.dropped_queue),
        ("dropped_limit", l.dropped_limit),
        ("delayed", l.delayed),
        ("reordered", l.reordered),
        ("duplicated", l.duplicated),
        ("queued", l.queued),
        ("rx_oversize", s.rx_oversize),
        ("tx_errors", s.tx_errors),
    ] {
        d.set_item(k, v)?;
    }
    d.set_item("queue_wait", l.queue_wait.to_vec())?;
    d.set_item("queue_wait_bounds_ms", QUEUE_WAIT_BOUNDS_MS.to_vec())?;
    Ok(d)
}

/// Layer-2 link emulator between interfaces `if_a` and `if_b` (both in the
/// current network namespace). `a_to_b` / `b_to_a` are dicts of impairments.
#[pyclass(frozen)]
pub struct LinkEmulator {
    if_a: String,
    if_b: String,
    a_to_b: Mutex<LinkParams>,
    b_to_a: Mutex<LinkParams>,
    seed: u64,
    running: Mutex<Option<Emulator>>,
}

#[pymethods]
impl LinkEmulator {
    #[new]
    #[pyo3(signature = (if_a, if_b, a_to_b=None, b_to_a=None, seed=0))]
    fn new(
        if_a: String,
        if_b: String,
        a_to_b: Option<&Bound<'_, PyDict>>,
        b_to_a: Option<&Bound<'_, PyDict>>,
        seed: u64,
    ) -> PyResult<Self> {
        Ok(LinkEmulator {
            if_a,
            if_b,
            a_to_b: Mutex::new(params(a_to_b)?),
            b_to_a: Mutex::new(params(b_to_a)?),
            seed,
            running: Mutex::new(None),
        })
    }

    /// Open both interfaces and start forwarding (returns at once).
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        let mut running = self.running.lock().unwrap();
        if running.is_some() {
            return Err(PyRuntimeError::new_err("the emulator is already running"));
        }
        let ab = self.a_to_b.lock().unwrap().clone();
        let ba = self.b_to_a.lock().unwrap().clone();
        let (a, b, seed) = (self.if_a.as_str(), self.if_b.as_str(), self.seed);
        let emu = py
            .detach(|| Emulator::start(a, b, ab, ba, seed))
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        *running = Some(emu);
        Ok(())
    }

    /// Stop forwarding and join the threads; frames still held are discarded.
    fn stop(&self, py: Python<'_>) {
        let emu = self.running.lock().unwrap().take();
        if let Some(mut emu) = emu {
            py.detach(move || emu.stop());
        }
    }

    /// Replace the impairments of "a_to_b" or "b_to_a" (a full set: missing keys are off).
    fn set(&self, direction: &str, params: &Bound<'_, PyDict>) -> PyResult<()> {
        let dir = self::direction(direction)?;
        let p = self::params(Some(params))?;
        let slot = match dir {
            Direction::AToB => &self.a_to_b,
            Direction::BToA => &self.b_to_a,
        };
        *slot.lock().unwrap() = p.clone();
        if let Some(emu) = self.running.lock().unwrap().as_ref() {
            emu.set(dir, p)
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
        }
        Ok(())
    }

    /// {"a_to_b": {...counters}, "b_to_a": {...}, "running": bool, "error": str | None}
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let running = self.running.lock().unwrap();
        let (ab, ba, alive, err) = match running.as_ref() {
            Some(e) => (
                e.stats(Direction::AToB),
                e.stats(Direction::BToA),
                e.is_running(),
                e.error(),
            ),
            None => (DirStats::default(), DirStats::default(), false, None),
        };
        d.set_item("a_to_b", stats_dict(py, &ab)?)?;
        d.set_item("b_to_a", stats_dict(py, &ba)?)?;
        d.set_item("running", alive)?;
        d.set_item("error", err)?;
        Ok(d)
    }

    /// True while both directions forward (False before start, after stop or after an I/O error).
    #[getter]
    fn running(&self) -> bool {
        self.running
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|e| e.is_running())
    }

    /// Why forwarding stopped on its own (e.g. an interface disappeared), if it did.
    #[getter]
    fn error(&self) -> Option<String> {
        self.running
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|e| e.error())
    }

    fn __repr__(&self) -> String {
        format!(
            "LinkEmulator({:?}, {:?}, running={})",
            self.if_a,
            self.if_b,
            self.running()
        )
    }
}

/// Many real client sessions in one process (`kcpvpn lab load`): the
/// product's client endpoint per client, each with its own UDP socket bound
/// to one of `sources` in turn. Nothing is sent before `connect()`.
#[pyclass(frozen)]
pub struct LoadDriver {
    inner: Mutex<Option<kcpvpn_load::LoadDriver>>,
}

#[pymethods]
impl LoadDriver {
    #[new]
    #[pyo3(signature = (server, sources, clients, secret, id_prefix="load".to_string(), seed=0))]
    fn new(
        py: Python<'_>,
        server: &str,
        sources: Vec<String>,
        clients: usize,
        secret: &[u8],
        id_prefix: String,
        seed: u64,
    ) -> PyResult<Self> {
        let server: std::net::SocketAddr = server.parse().map_err(|_| {
            PyValueError::new_err(format!(
                "server {server:?} is not an address with a port (e.g. 10.77.0.1:4000)"
            ))
        })?;
        let sources = sources
            .iter()
            .map(|s| {
                s.parse().map_err(|_| {
                    PyValueError::new_err(format!("source {s:?} is not an IP address"))
                })
            })
            .collect::<PyResult<Vec<std::net::IpAddr>>>()?;
        if secret.is_empty() {
            return Err(PyValueError::new_err("the secret is empty"));
        }
        let secret = secret.to_vec();
        let driver = py
            .detach(move || {
                let psk = kcpvpn_crypto::handshake::stretch_secret(&secret);
                kcpvpn_load::LoadDriver::start(kcpvpn_load::LoadConfig {
                    server,
                    sources,
                    clients,
                    psk,
                    params: kcpvpn_tunnel::params::SessionParams::default(),
                    id_prefix,
                    seed,
                })
            })
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(LoadDriver {
            inner: Mutex::new(Some(driver)),
        })
    }

    /// Every client without a session connects; `connect_ms` counts from now.
    fn connect(&self, py: Python<'_>) -> PyResult<()> {
        self.with(|d| py.detach(|| d.connect()))
    }

    /// One ICMP echo request from every connected client to the server's tunnel address.
    fn ping(&self, py: Python<'_>) -> PyResult<()> {
        self.with(|d| py.detach(|| d.ping()))
    }

    /// Every client says goodbye and stops connecting.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.with(|d| py.detach(|| d.close()))
    }

    /// The counters (see kcpvpn_lab/_emulator.pyi).
    fn report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let r = self.with(|d| d.report())?;
        let d = PyDict::new(py);
        d.set_item("clients", r.clients)?;
        d.set_item("connected", r.connected)?;
        d.set_item("connects", r.connects)?;
        d.set_item("first_connect_ms", r.first_connect_ms)?;
        d.set_item("last_connect_ms", r.last_connect_ms)?;
        d.set_item("connect_ms", r.connect_ms)?;
        d.set_item("handshake_attempts", r.handshake_attempts)?;
        d.set_item("cookies_in", r.cookies_in)?;
        d.set_item("failures", r.failures.into_iter().collect::<Vec<_>>())?;
        d.set_item("pings_sent", r.pings_sent)?;
        d.set_item("pings_answered", r.pings_answered)?;
        d.set_item("ping_ms", r.ping_ms)?;
        d.set_item("closed", r.closed.into_iter().collect::<Vec<_>>())?;
        d.set_item("datagrams_in", r.datagrams_in)?;
        d.set_item("datagrams_out", r.datagrams_out)?;
        d.set_item("send_errors", r.send_errors)?;
        d.set_item("other_packets", r.other_packets)?;
        d.set_item("error", r.error)?;
        Ok(d)
    }

    /// True while the driver's thread runs.
    #[getter]
    fn running(&self) -> bool {
        self.inner
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|d| d.is_running())
    }

    /// Stops the thread (no goodbyes: `close()` first for those). Idempotent.
    fn stop(&self, py: Python<'_>) {
        let d = self.inner.lock().unwrap().take();
        if let Some(mut d) = d {
            py.detach(move || d.stop());
        }
    }
}

impl LoadDriver {
    fn with<R>(&self, f: impl FnOnce(&kcpvpn_load::LoadDriver) -> R) -> PyResult<R> {
        match self.inner.lock().unwrap().as_ref() {
            Some(d) => Ok(f(d)),
            None => Err(PyRuntimeError::new_err("the load driver was stopped")),
        }
    }
}
