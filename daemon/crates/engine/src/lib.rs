//! `kcpvpn._engine`: the Python face of the data plane.
//!
//! Each concern registers its own classes from its own file, so that the
//! bindings for KCP, FEC, packet protection and the tunnel can change
//! independently.
use pyo3::prelude::*;

mod crypto;
mod fec;
mod kcp;
#[cfg(feature = "tunnel")]
mod tunnel;

#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    kcp::register(m)?;
    fec::register(m)?;
    crypto::register(m)?;
    #[cfg(feature = "tunnel")]
    tunnel::register(m)?;
    Ok(())
}
