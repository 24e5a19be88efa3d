//! `kcpvpn._engine`: the Python face of the data plane.
//!
//! The module itself is the production surface the daemons use: the data
//! path (`Endpoint`), its settings and bounds, events and counters.
//! `kcpvpn._engine.testing` holds the pieces one at a time for tests and
//! the lab. Errors are the classes of `kcpvpn.errors`.
use pyo3::prelude::*;

mod endpoint;
mod errors;
mod params;
mod testing;

#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    params::register(m)?;
    endpoint::register(m)?;
    testing::register(m)?;
    Ok(())
}
