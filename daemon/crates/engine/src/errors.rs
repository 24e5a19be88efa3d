//! The exceptions the engine raises are defined once, in Python
//! (`kcpvpn.errors`), and raised from here by name, as pyca/cryptography
//! does: Python code catches types, never matches message text.
use kcpvpn_crypto::handshake::HandshakeError;
use kcpvpn_crypto::CryptoError;
use kcpvpn_fec::FecError;
use kcpvpn_kcp::KcpError;
use pyo3::PyErr;

pyo3::import_exception!(kcpvpn.errors, KcpvpnError);
pyo3::import_exception!(kcpvpn.errors, InvalidParameter);
pyo3::import_exception!(kcpvpn.errors, UnsupportedCipher);
pyo3::import_exception!(kcpvpn.errors, Truncated);
pyo3::import_exception!(kcpvpn.errors, Malformed);
pyo3::import_exception!(kcpvpn.errors, Replayed);
pyo3::import_exception!(kcpvpn.errors, TooOld);
pyo3::import_exception!(kcpvpn.errors, AuthenticationFailed);
pyo3::import_exception!(kcpvpn.errors, CounterExhausted);
pyo3::import_exception!(kcpvpn.errors, StaleHandshake);
pyo3::import_exception!(kcpvpn.errors, ReplayedHandshake);
pyo3::import_exception!(kcpvpn.errors, Busy);
pyo3::import_exception!(kcpvpn.errors, Refused);
pyo3::import_exception!(kcpvpn.errors, NoAnswer);
pyo3::import_exception!(kcpvpn.errors, NotPending);
pyo3::import_exception!(kcpvpn.errors, AlreadyUsed);
pyo3::import_exception!(kcpvpn.errors, EngineError);

pub fn invalid(msg: impl std::fmt::Display) -> PyErr {
    InvalidParameter::new_err(msg.to_string())
}

pub fn engine(msg: impl std::fmt::Display) -> PyErr {
    EngineError::new_err(msg.to_string())
}

pub fn crypto(e: CryptoError) -> PyErr {
    let msg = e.to_string();
    match e {
        CryptoError::Truncated => Truncated::new_err(msg),
        CryptoError::BadType => Malformed::new_err(msg),
        CryptoError::Replayed => Replayed::new_err(msg),
        CryptoError::TooOld => TooOld::new_err(msg),
        CryptoError::AuthFailed => AuthenticationFailed::new_err(msg),
        CryptoError::CounterExhausted => CounterExhausted::new_err(msg),
        CryptoError::UnsupportedCipher(_) => UnsupportedCipher::new_err(msg),
        CryptoError::BadPublicKey => Malformed::new_err(msg),
        CryptoError::NoRandomness => EngineError::new_err(msg),
    }
}

pub fn handshake(e: HandshakeError) -> PyErr {
    let msg = e.to_string();
    match e {
        HandshakeError::Truncated => Truncated::new_err(msg),
        HandshakeError::Oversized | HandshakeError::BadType | HandshakeError::Malformed(_) => {
            Malformed::new_err(msg)
        }
        HandshakeError::AuthFailed
        | HandshakeError::ResponseAuthFailed
        | HandshakeError::UnknownPeer { .. }
        | HandshakeError::PeerRefused { .. } => AuthenticationFailed::new_err(msg),
        HandshakeError::Stale { .. } => StaleHandshake::new_err(msg),
        HandshakeError::Replayed => ReplayedHandshake::new_err(msg),
        HandshakeError::Busy => Busy::new_err(msg),
        HandshakeError::InvalidPayload(_) => InvalidParameter::new_err(msg),
        HandshakeError::AlreadyComplete => AlreadyUsed::new_err(msg),
        HandshakeError::Noise(_) => EngineError::new_err(msg),
    }
}

pub fn kcp(e: KcpError) -> PyErr {
    let msg = e.to_string();
    match e {
        KcpError::Truncated { .. } => Truncated::new_err(msg),
        KcpError::ConvMismatch { .. }
        | KcpError::BadCommand { .. }
        | KcpError::BadFragment { .. } => Malformed::new_err(msg),
        KcpError::MessageTooLarge { .. }
        | KcpError::NoMessage
        | KcpError::BufferTooSmall { .. }
        | KcpError::Config(_) => InvalidParameter::new_err(msg),
    }
}

pub fn fec(e: FecError) -> PyErr {
    let msg = e.to_string();
    match e {
        FecError::InvalidShardCounts { .. }
        | FecError::InvalidMaxOpenGroups(_)
        | FecError::InvalidMaxDatagram(_) => InvalidParameter::new_err(msg),
        FecError::Truncated(_) => Truncated::new_err(msg),
        _ => Malformed::new_err(msg),
    }
}
