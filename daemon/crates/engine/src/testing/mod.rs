//! `kcpvpn._engine.testing`: the protocol machinery one piece at a time
//! (KCP, FEC, packet protection, the raw handshake), for tests, lab tools
//! and experiments. These hand raw keys and wire bytes to Python; the
//! daemon never imports them.
use pyo3::prelude::*;

mod crypto;
mod fec;
mod kcp;

pub fn register(parent: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = parent.py();
    let m = PyModule::new(py, "testing")?;
    kcp::register(&m)?;
    fec::register(&m)?;
    crypto::register(&m)?;
    parent.add_submodule(&m)?;
    // So that `import kcpvpn._engine.testing` finds it like a package module.
    py.import("sys")?
        .getattr("modules")?
        .set_item("kcpvpn._engine.testing", &m)?;
    Ok(())
}
