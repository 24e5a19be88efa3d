//! Bindings for `kcpvpn-kcp`: the `Kcp` class, one KCP conversation driven
//! from Python as bytes in, bytes out, with the time passed in (ms). For
//! tests, lab tools and interoperability experiments; the daemon's data path
//! uses the crate directly.
use crate::errors;
use kcpvpn_kcp::{Kcp as NativeKcp, KcpConfig, KcpStats};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::sync::Mutex;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Kcp>()?;
    Ok(())
}

/// Python's millisecond clocks exceed 32 bits; KCP time wraps like the reference's.
fn ms(now_ms: i64) -> u32 {
    now_ms as u64 as u32
}

fn ranged<T: TryFrom<i64>>(v: i64, name: &str, lo: i64, hi: i64) -> PyResult<T> {
    if v < lo || v > hi {
        return Err(errors::invalid(format!(
            "{name}={v} is out of range: use {lo}..={hi}"
        )));
    }
    T::try_from(v).map_err(|_| errors::invalid(format!("{name}={v} is out of range")))
}

struct Inner {
    kcp: NativeKcp,
    buf: Vec<u8>,
}

/// One KCP conversation (message mode), wire-compatible with the reference C KCP.
#[pyclass(frozen, module = "kcpvpn._engine.testing")]
pub struct Kcp {
    inner: Mutex<Inner>,
}

impl Kcp {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }
}

fn datagrams<'py>(
    py: Python<'py>,
    f: impl FnOnce(&mut dyn FnMut(&[u8])),
) -> Vec<Bound<'py, PyBytes>> {
    let mut v = Vec::new();
    f(&mut |d: &[u8]| v.push(PyBytes::new(py, d)));
    v
}

fn stats_dict<'py>(py: Python<'py>, s: &KcpStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    macro_rules! put {
        ($($f:ident),*) => { $( d.set_item(stringify!($f), s.$f)?; )* };
    }
    put!(
        messages_sent,
        messages_recv,
        datagrams_out,
        datagrams_in,
        segments_sent,
        segments_recv,
        retransmits,
        fast_retransmits,
        unneeded_retransmits,
        dup_segments,
        out_of_window,
        acks_sent,
        acks_recv,
        probes_sent,
        probes_recv,
        wins_sent,
        input_errors,
        srtt,
        rttvar,
        rto,
        cwnd,
        ssthresh,
        rmt_wnd,
        snd_queue,
        snd_inflight,
        rcv_queue,
        rcv_buf
    );
    Ok(d)
}

#[pymethods]
impl Kcp {
    /// `mode`: normal, fast (default), fast2, fast3 or manual. With manual,
    /// nodelay, interval, resend and nc are all required; with a profile they
    /// override the profile's values when given.
    #[new]
    #[pyo3(signature = (conv, mode = "fast", *, nodelay = None, interval = None, resend = None, nc = None,
                        sndwnd = 1024, rcvwnd = 1024, mtu = 1400, ack_nodelay = false, dead_link = 20))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        conv: i64,
        mode: &str,
        nodelay: Option<bool>,
        interval: Option<i64>,
        resend: Option<i64>,
        nc: Option<bool>,
        sndwnd: i64,
        rcvwnd: i64,
        mtu: i64,
        ack_nodelay: bool,
        dead_link: i64,
    ) -> PyResult<Self> {
        let conv: u32 = ranged(conv, "conv", 0, u32::MAX as i64)?;
        let mut cfg = if mode == "manual" {
            match (nodelay, interval, resend, nc) {
                (Some(_), Some(_), Some(_), Some(_)) => KcpConfig::default(),
                _ => {
                    return Err(errors::invalid(
                        "mode 'manual' needs nodelay, interval, resend and nc (all four)",
                    ))
                }
            }
        } else {
            KcpConfig::profile(mode).ok_or_else(|| {
                errors::invalid(format!(
                    "unknown KCP mode {mode:?}: use normal, fast, fast2, fast3 or manual"
                ))
            })?
        };
        if let Some(v) = nodelay {
            cfg.nodelay = v;
        }
        if let Some(v) = interval {
            cfg.interval = ranged(v, "interval", 1, 5000)?;
        }
        if let Some(v) = resend {
            cfg.resend = ranged(v, "resend", 0, u32::MAX as i64)?;
        }
        if let Some(v) = nc {
            cfg.nc = v;
        }
        cfg.snd_wnd = ranged(sndwnd, "sndwnd", 1, u16::MAX as i64)?;
        cfg.rcv_wnd = ranged(rcvwnd, "rcvwnd", 1, u16::MAX as i64)?;
        cfg.mtu = ranged(
            mtu,
            "mtu",
            kcpvpn_kcp::MIN_MTU as i64,
            kcpvpn_kcp::MAX_MTU as i64,
        )?;
        cfg.dead_link = ranged(dead_link, "dead_link", 1, u32::MAX as i64)?;
        cfg.ack_nodelay = ack_nodelay;
        let kcp = NativeKcp::try_new(conv, cfg).map_err(errors::kcp)?;
        Ok(Kcp {
            inner: Mutex::new(Inner {
                kcp,
                buf: Vec::new(),
            }),
        })
    }

    /// Queues one message; ValueError if it needs too many fragments.
    fn send(&self, msg: &[u8]) -> PyResult<()> {
        self.with(|i| i.kcp.send(msg)).map_err(errors::kcp)
    }

    /// Takes one datagram from the peer; ValueError if it is not a valid KCP
    /// datagram of this conversation (segments before the bad one still count).
    fn input(&self, datagram: &[u8], now_ms: i64) -> PyResult<()> {
        self.with(|i| i.kcp.input(datagram, ms(now_ms)))
            .map_err(errors::kcp)
    }

    /// Datagrams to send now if the interval tick (or a retransmission) is due.
    fn update<'py>(&self, py: Python<'py>, now_ms: i64) -> Vec<Bound<'py, PyBytes>> {
        self.with(|i| datagrams(py, |out| i.kcp.update(ms(now_ms), out)))
    }

    /// Everything due at once: ACKs, probes, retransmissions, new data.
    fn flush<'py>(&self, py: Python<'py>, now_ms: i64) -> Vec<Bound<'py, PyBytes>> {
        self.with(|i| datagrams(py, |out| i.kcp.flush(ms(now_ms), out)))
    }

    /// When update must be called next (KCP time: milliseconds modulo 2**32).
    fn check(&self, now_ms: i64) -> u32 {
        self.with(|i| i.kcp.check(ms(now_ms)))
    }

    /// The next whole message, or None.
    fn recv<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.with(|i| {
            let n = i.kcp.peek_size()?;
            if i.buf.len() < n {
                i.buf.resize(n, 0);
            }
            let n = i.kcp.recv(&mut i.buf).ok()?;
            Some(PyBytes::new(py, &i.buf[..n]))
        })
    }

    /// Size of the next whole message, or None.
    fn peek_size(&self) -> Option<usize> {
        self.with(|i| i.kcp.peek_size())
    }

    /// Segments queued or in flight.
    fn wait_snd(&self) -> usize {
        self.with(|i| i.kcp.wait_snd())
    }

    /// True once a segment was sent dead_link times without acknowledgement.
    fn is_dead(&self) -> bool {
        self.with(|i| i.kcp.is_dead())
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.with(|i| i.kcp.stats());
        stats_dict(py, &s)
    }

    #[getter]
    fn conv(&self) -> u32 {
        self.with(|i| i.kcp.conv())
    }

    /// Payload bytes per segment (mtu - 24).
    #[getter]
    fn mss(&self) -> usize {
        self.with(|i| i.kcp.mss())
    }

    /// The largest message send accepts.
    #[getter]
    fn max_message(&self) -> usize {
        self.with(|i| i.kcp.max_message())
    }

    /// The conversation id of a datagram, or None if shorter than a header.
    #[staticmethod]
    fn conv_of(datagram: &[u8]) -> Option<u32> {
        NativeKcp::conv_of(datagram)
    }
}
