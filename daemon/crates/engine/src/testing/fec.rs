//! Bindings for `kcpvpn-fec`: `FecEncoder` and `FecDecoder`, for tests, lab
//! tools and experiments from Python (the daemon's data path uses the Rust
//! types directly).
use crate::errors;
use kcpvpn_fec as fec;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use std::sync::Mutex;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<FecEncoder>()?;
    m.add_class::<FecDecoder>()?;
    m.add("FEC_HEADER_LEN", fec::HEADER_LEN)?;
    m.add("FEC_OVERHEAD", fec::OVERHEAD)?;
    Ok(())
}

/// Collects what a call emits into a Python list of bytes.
fn collect<'py>(
    py: Python<'py>,
    f: impl FnOnce(&mut dyn FnMut(&[u8])),
) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    let mut err = None;
    f(&mut |s: &[u8]| {
        if err.is_none() {
            if let Err(e) = list.append(PyBytes::new(py, s)) {
                err = Some(e);
            }
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(list),
    }
}

/// Reed-Solomon FEC encoder: datagrams in, shards out.
#[pyclass(frozen, module = "kcpvpn._engine.testing")]
pub struct FecEncoder {
    inner: Mutex<fec::FecEncoder>,
}

#[pymethods]
impl FecEncoder {
    #[new]
    #[pyo3(signature = (data_shards, parity_shards, max_datagram=1500))]
    fn new(data_shards: usize, parity_shards: usize, max_datagram: usize) -> PyResult<Self> {
        let e = fec::FecEncoder::try_new(data_shards, parity_shards, max_datagram)
            .map_err(errors::fec)?;
        Ok(FecEncoder {
            inner: Mutex::new(e),
        })
    }

    /// The data shard for `datagram`, followed by the group's parity shards
    /// when this datagram completed the group.
    fn encode<'py>(&self, py: Python<'py>, datagram: &[u8]) -> PyResult<Bound<'py, PyList>> {
        let mut e = self.inner.lock().unwrap();
        if datagram.len() > e.max_datagram() {
            return Err(errors::invalid(format!(
                "datagram of {} bytes exceeds this encoder's max_datagram of {}; \
                 create the encoder with a larger max_datagram",
                datagram.len(),
                e.max_datagram()
            )));
        }
        collect(py, |out| e.encode(datagram, out))
    }

    /// Rapid FEC: parity for the partial group (empty list if none).
    fn flush_partial<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut e = self.inner.lock().unwrap();
        collect(py, |out| e.flush_partial(out))
    }

    fn has_partial(&self) -> bool {
        self.inner.lock().unwrap().has_partial()
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.lock().unwrap().stats();
        let d = PyDict::new(py);
        d.set_item("data_shards", s.data_shards)?;
        d.set_item("parity_shards", s.parity_shards)?;
        d.set_item("partial_groups", s.partial_groups)?;
        d.set_item("oversize", s.oversize)?;
        Ok(d)
    }
}

/// Reed-Solomon FEC decoder: shards in, each original datagram out once.
#[pyclass(frozen, module = "kcpvpn._engine.testing")]
pub struct FecDecoder {
    inner: Mutex<fec::FecDecoder>,
}

#[pymethods]
impl FecDecoder {
    #[new]
    #[pyo3(signature = (data_shards, parity_shards, max_open_groups=fec::DEFAULT_MAX_OPEN_GROUPS))]
    fn new(data_shards: usize, parity_shards: usize, max_open_groups: usize) -> PyResult<Self> {
        let d = fec::FecDecoder::try_new(data_shards, parity_shards, max_open_groups)
            .map_err(errors::fec)?;
        Ok(FecDecoder {
            inner: Mutex::new(d),
        })
    }

    /// The datagrams this shard makes deliverable (possibly none); ValueError
    /// for a malformed shard (counted in stats()["malformed"]).
    fn input<'py>(&self, py: Python<'py>, shard: &[u8]) -> PyResult<Bound<'py, PyList>> {
        let mut d = self.inner.lock().unwrap();
        let mut res = Ok(());
        let list = collect(py, |out| res = d.input(shard, out))?;
        res.map_err(errors::fec)?;
        Ok(list)
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.lock().unwrap().stats();
        let d = PyDict::new(py);
        d.set_item("data_received", s.data_received)?;
        d.set_item("parity_received", s.parity_received)?;
        d.set_item("delivered", s.delivered)?;
        d.set_item("recovered", s.recovered)?;
        d.set_item("duplicates", s.duplicates)?;
        d.set_item("stale", s.stale)?;
        d.set_item("malformed", s.malformed)?;
        d.set_item("evicted_incomplete", s.evicted_incomplete)?;
        Ok(d)
    }
}
