//! The data plane's settings as Python sees them: `SessionParams` (one
//! side's transport settings, validated here) and the module constants that
//! make the engine the one owner of every bound and default (the CLI's flag
//! table, its validation and the docs read them).
use crate::errors;
use kcpvpn_crypto::handshake as hs;
use kcpvpn_crypto::packet::CipherKind;
use kcpvpn_tunnel::params::{self as p, defaults, KcpMode};
use pyo3::prelude::*;
use pyo3::types::PyDict;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<SessionParams>()?;
    m.add("UDP_MTU_RANGE", p::UDP_MTU_RANGE)?;
    m.add(
        "TCP_EXTRA_OVER_UDP",
        kcpvpn_tunnel::faketcp::EXTRA_OVER_UDP as u16,
    )?;
    m.add("VNI_MTU_RANGE", p::VNI_MTU_RANGE)?;
    m.add("IPV6_MIN_MTU", p::IPV6_MIN_MTU)?;
    m.add("FRAME_MTU_MAX", p::FRAME_MTU_MAX)?;
    m.add("FRAME_HEADROOM", p::FRAME_HEADROOM)?;
    m.add("WINDOW_RANGE", p::WINDOW_RANGE)?;
    m.add("FEC_MAX_SHARDS", p::FEC_MAX_SHARDS)?;
    m.add("KEEPALIVE_RANGE", p::KEEPALIVE_RANGE)?;
    m.add("REKEY_INTERVAL_RANGE", p::REKEY_INTERVAL_RANGE)?;
    m.add("IDLE_KEEPALIVES", p::IDLE_KEEPALIVES)?;
    m.add("INTERVAL_RANGE", p::INTERVAL_RANGE)?;
    m.add("RESEND_MAX", p::RESEND_MAX)?;
    m.add("BUFFER_RANGE", p::BUFFER_RANGE)?;
    m.add("DSCP_MAX", p::DSCP_MAX)?;
    m.add("CLIENT_ID_MAX", hs::MAX_CLIENT_ID)?;
    m.add("IP_UDP_HEADER", p::IP_UDP_HEADER)?;
    m.add("DATAGRAM_OVERHEAD", kcpvpn_tunnel::session::overhead(false))?;
    m.add("FEC_OVERHEAD", kcpvpn_fec::OVERHEAD)?;
    m.add("KCP_OVERHEAD", kcpvpn_kcp::wire::OVERHEAD)?;
    m.add("DEFAULT_VNI_MTU", defaults::VNI_MTU)?;
    m.add("DEFAULT_SOCKBUF", defaults::SOCKBUF)?;
    m.add("KCP_MODES", p::KCP_MODES.to_vec())?;
    m.add("CODEL_TARGET_MS", kcpvpn_tunnel::scheduler::TARGET_MS)?;
    m.add("CODEL_INTERVAL_MS", kcpvpn_tunnel::scheduler::INTERVAL_MS)?;
    m.add("CONGESTION", p::CONGESTION.to_vec())?;
    m.add(
        "FEC_FULL_GROUP_FAILURE",
        kcpvpn_tunnel::session::FULL_GROUP_FAILURE,
    )?;
    m.add(
        "FEC_PARTIAL_GROUP_FAILURE",
        kcpvpn_fec::PARTIAL_GROUP_FAILURE,
    )?;
    m.add(
        "RAPID_SPARSE_DELAY_MS",
        kcpvpn_tunnel::session::RAPID_SPARSE_DELAY_MS,
    )?;
    let profiles = PyDict::new(py);
    for (name, nodelay, interval, resend, nc) in p::KCP_PROFILES {
        profiles.set_item(name, (nodelay as u8, interval, resend, nc as u8))?;
    }
    m.add("KCP_PROFILES", profiles)?;
    let ciphers = PyDict::new(py);
    for k in CipherKind::ALL {
        ciphers.set_item(k.name(), k.description())?;
    }
    m.add("CIPHERS", ciphers)?;
    m.add(
        "LEGACY_CIPHERS",
        kcpvpn_crypto::packet::REFUSED_CIPHERS.to_vec(),
    )?;
    let modes = PyDict::new(py);
    modes.set_item("server", hs::IP_MODE_SERVER_ASSIGNS)?;
    modes.set_item("client", hs::IP_MODE_CLIENT_SET)?;
    modes.set_item("none", hs::IP_MODE_NONE)?;
    m.add("IP_MODES", modes)?;
    Ok(())
}

fn bool_flag(v: i64, name: &str) -> PyResult<bool> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(errors::invalid(format!(
            "--{name} {v} is out of range: use 0..1"
        ))),
    }
}

/// One side's transport settings, with the engine's defaults. Every value
/// is checked here; an out-of-range one raises InvalidParameter naming the
/// flag.
#[pyclass(frozen, module = "kcpvpn._engine")]
#[derive(Clone)]
pub struct SessionParams {
    pub inner: p::SessionParams,
    sockbuf: u32,
}

#[pymethods]
impl SessionParams {
    #[new]
    #[pyo3(signature = (
        *,
        kcp_mode = defaults::KCP_MODE.to_string(),
        sndwnd = defaults::SND_WND as i64,
        rcvwnd = defaults::RCV_WND as i64,
        datashard = defaults::DATA_SHARDS as i64,
        parityshard = defaults::PARITY_SHARDS as i64,
        rapid_fec = defaults::RAPID_FEC,
        congestion = defaults::CONGESTION.to_string(),
        unordered = false,
        crypt = defaults::CIPHER.to_string(),
        keepalive = defaults::KEEPALIVE_S as i64,
        udp_mtu = defaults::UDP_MTU as i64,
        smuxbuf = defaults::SMUXBUF as i64,
        sockbuf = defaults::SOCKBUF as i64,
        mss_clamp = true,
        flow_queueing = true,
        rekey_interval = defaults::REKEY_INTERVAL_S as i64,
        acknodelay = false,
        nodelay = defaults::MANUAL.0 as i64,
        interval = defaults::MANUAL.1 as i64,
        resend = defaults::MANUAL.2 as i64,
        nc = defaults::MANUAL.3 as i64,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        kcp_mode: String,
        sndwnd: i64,
        rcvwnd: i64,
        datashard: i64,
        parityshard: i64,
        rapid_fec: bool,
        congestion: String,
        unordered: bool,
        crypt: String,
        keepalive: i64,
        udp_mtu: i64,
        smuxbuf: i64,
        sockbuf: i64,
        mss_clamp: bool,
        flow_queueing: bool,
        rekey_interval: i64,
        acknodelay: bool,
        nodelay: i64,
        interval: i64,
        resend: i64,
        nc: i64,
    ) -> PyResult<Self> {
        let mut mode = KcpMode::parse(&kcp_mode).map_err(errors::invalid)?;
        if let KcpMode::Manual { .. } = mode {
            mode = KcpMode::Manual {
                nodelay: bool_flag(nodelay, "nodelay")?,
                interval: u32_in(interval, "interval", p::INTERVAL_RANGE)?,
                resend: u32_in(resend, "resend", (0, p::RESEND_MAX))?,
                nc: bool_flag(nc, "nc")?,
            };
        }
        if !p::CONGESTION.contains(&congestion.as_str()) {
            return Err(errors::invalid(format!(
                "--congestion {congestion:?} is unknown: use {}",
                p::CONGESTION.join(" or ")
            )));
        }
        let shards = |v: i64, name: &str| -> PyResult<u8> {
            u8::try_from(v)
                .ok()
                .filter(|&s| s as u16 <= p::FEC_MAX_SHARDS)
                .ok_or_else(|| {
                    errors::invalid(format!(
                        "--{name} {v} is out of range: use 0..{}",
                        p::FEC_MAX_SHARDS
                    ))
                })
        };
        let (ds, ps) = (
            shards(datashard, "datashard")?,
            shards(parityshard, "parityshard")?,
        );
        let inner = p::SessionParams {
            kcp_mode: mode,
            snd_wnd: u16_in(sndwnd, "sndwnd", p::WINDOW_RANGE)?,
            rcv_wnd: u16_in(rcvwnd, "rcvwnd", p::WINDOW_RANGE)?,
            ack_nodelay: acknodelay,
            bbr: congestion == "bbr",
            unordered,
            // FEC is off when either count is 0.
            fec: (ds > 0 && ps > 0).then_some((ds, ps)),
            rapid_fec,
            cipher: CipherKind::parse(&crypt).map_err(errors::crypto)?,
            keepalive_s: u16_in(keepalive, "keepalive", p::KEEPALIVE_RANGE)?,
            udp_mtu: u16_in(udp_mtu, "udp-mtu", p::UDP_MTU_RANGE)?,
            send_buffer: u32_in(smuxbuf, "smuxbuf", p::BUFFER_RANGE)?,
            mss_clamp,
            flow_queueing,
            rekey_interval_s: u32_in(rekey_interval, "rekey-interval", p::REKEY_INTERVAL_RANGE)?,
        };
        inner.validate().map_err(errors::invalid)?;
        Ok(SessionParams {
            inner,
            sockbuf: u32_in(sockbuf, "sockbuf", p::BUFFER_RANGE)?,
        })
    }

    #[getter]
    fn kcp_mode(&self) -> &'static str {
        self.inner.kcp_mode.name()
    }
    /// (nodelay, interval ms, resend, nc) of the KCP mode.
    #[getter]
    fn kcp_profile(&self) -> (u8, u32, u32, u8) {
        let (a, b, c, d) = self.inner.kcp_mode.values();
        (a as u8, b, c, d as u8)
    }
    #[getter]
    fn sndwnd(&self) -> u16 {
        self.inner.snd_wnd
    }
    #[getter]
    fn rcvwnd(&self) -> u16 {
        self.inner.rcv_wnd
    }
    /// (data, parity) shards, or None when FEC is off.
    #[getter]
    fn fec(&self) -> Option<(u8, u8)> {
        self.inner.fec
    }
    #[getter]
    fn rapid_fec(&self) -> bool {
        self.inner.rapid_fec
    }
    #[getter]
    fn congestion(&self) -> &'static str {
        if self.inner.bbr {
            "bbr"
        } else {
            "off"
        }
    }
    #[getter]
    fn unordered(&self) -> bool {
        self.inner.unordered
    }
    #[getter]
    fn crypt(&self) -> &'static str {
        self.inner.cipher.name()
    }
    #[getter]
    fn keepalive(&self) -> u16 {
        self.inner.keepalive_s
    }
    /// Seconds between key updates.
    #[getter]
    fn rekey_interval(&self) -> u32 {
        self.inner.rekey_interval_s
    }
    #[getter]
    fn udp_mtu(&self) -> u16 {
        self.inner.udp_mtu
    }
    #[getter]
    fn smuxbuf(&self) -> u32 {
        self.inner.send_buffer
    }
    #[getter]
    fn sockbuf(&self) -> u32 {
        self.sockbuf
    }
    #[getter]
    fn mss_clamp(&self) -> bool {
        self.inner.mss_clamp
    }
    #[getter]
    fn flow_queueing(&self) -> bool {
        self.inner.flow_queueing
    }
    #[getter]
    fn acknodelay(&self) -> bool {
        self.inner.ack_nodelay
    }
    /// A peer silent this long (s) is gone: 3 keepalive periods plus one second.
    #[getter]
    fn idle_timeout(&self) -> f64 {
        (p::IDLE_KEEPALIVES * self.inner.keepalive_s as u32) as f64 + 1.0
    }

    fn __repr__(&self) -> String {
        let i = &self.inner;
        let py_bool = |b: bool| if b { "True" } else { "False" };
        let fec = i
            .fec
            .map_or("None".to_string(), |(d, p)| format!("({d}, {p})"));
        format!(
            "SessionParams(kcp_mode={:?}, sndwnd={}, rcvwnd={}, fec={fec}, rapid_fec={}, congestion={:?}, unordered={}, crypt={:?}, keepalive={}, udp_mtu={}, smuxbuf={}, mss_clamp={})",
            i.kcp_mode.name(),
            i.snd_wnd,
            i.rcv_wnd,
            py_bool(i.rapid_fec),
            self.congestion(),
            py_bool(i.unordered),
            i.cipher.name(),
            i.keepalive_s,
            i.udp_mtu,
            i.send_buffer,
            py_bool(i.mss_clamp)
        )
    }
}

fn in_range(v: i64, name: &str, lo: i64, hi: i64) -> PyResult<i64> {
    if v < lo || v > hi {
        return Err(errors::invalid(format!(
            "--{name} {v} is out of range: use {lo}..{hi}"
        )));
    }
    Ok(v)
}

fn u16_in(v: i64, name: &str, (lo, hi): (u16, u16)) -> PyResult<u16> {
    Ok(in_range(v, name, lo as i64, hi as i64)? as u16)
}

fn u32_in(v: i64, name: &str, (lo, hi): (u32, u32)) -> PyResult<u32> {
    Ok(in_range(v, name, lo as i64, hi as i64)? as u32)
}
