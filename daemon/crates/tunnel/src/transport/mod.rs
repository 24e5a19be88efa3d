//! What carries datagrams between the endpoint and the network: UDP today,
//! fake TCP next. The endpoint never knows which: it sees `(source,
//! datagram)` in and `(destination, datagram)` out, and the driver moves
//! them through an [`Inbound`] and an [`Outbound`] half.
pub mod tcp;
pub mod udp;

pub use crate::sys::udp::IoErrors;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// The receiving half: batches of datagrams with their sources.
pub trait Inbound {
    /// Becomes readable when datagrams wait.
    fn fd(&self) -> RawFd;
    /// Reads the next batch; returns how many it holds (0: none waiting).
    /// Errors about one datagram are counted, not returned: an `Err` means
    /// the transport itself is unusable.
    fn recv(&mut self) -> io::Result<usize>;
    /// Datagram `i` of the batch (None: cut, or no usable source).
    fn get(&mut self, i: usize) -> Option<(&mut [u8], SocketAddr)>;
    /// The most datagrams one `recv` returns.
    fn batch(&self) -> usize;
    fn stats(&self) -> InboundStats;
}

/// The sending half: datagrams are written into its buffers, then leave
/// together.
pub trait Outbound {
    /// An empty buffer for the next datagram (flushes first when full).
    fn buf(&mut self) -> &mut Vec<u8>;
    /// Queues what was written into `buf` for `to`.
    fn commit(&mut self, to: SocketAddr);
    /// Sends everything queued. Refusals about one destination are counted
    /// by reason; an `Err` means the transport itself is unusable.
    fn flush(&mut self) -> io::Result<()>;
    fn stats(&self) -> OutboundStats;
}

/// A transport, split for the driver (the halves are used side by side:
/// a datagram being read while answers are written).
pub trait Transport: Send + 'static {
    type In: Inbound + Send;
    type Out: Outbound + Send;
    fn split(self) -> (Self::In, Self::Out);
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboundStats {
    pub datagrams: u64,
    /// Larger than the agreed MTU (cut by the kernel, dropped).
    pub oversize: u64,
    pub errors: IoErrors,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboundStats {
    pub datagrams: u64,
    /// Messages that carried a run of datagrams at once (UDP GSO).
    pub gso_messages: u64,
    pub errors: IoErrors,
    /// The fake-TCP layer's counters (None on UDP).
    pub tcp: Option<crate::faketcp::TcpStats>,
}
