//! kcpvpn's tunnel: the sans-IO protocol (sessions, the endpoint that
//! demultiplexes and handshakes, their parameters) and the thin I/O driver
//! that runs it between a transport and TUN/TAP devices.
pub mod checksum;
pub mod driver;
pub mod endpoint;
pub mod faketcp;
pub mod keys;
pub mod mss;
pub mod offload;
pub mod order;
pub mod params;
pub mod pmtu;
pub mod scheduler;
pub mod session;
pub mod sys;
pub mod transport;
