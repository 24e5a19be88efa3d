//! kcpvpn's tunnel: the session pipeline (sans-IO) and the I/O drivers that
//! run it between a UDP socket and TUN/TAP devices.
pub mod endpoint;
pub mod mss;
pub mod session;
pub mod sys;
