//! The UDP transport: batched receive (recvmmsg) and send (sendmmsg with
//! UDP GSO runs) on one socket.
use super::{Inbound, InboundStats, Outbound, OutboundStats, Transport};
use crate::sys::udp::{RecvBatch, SendQueue};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

pub struct Udp {
    fd: Arc<OwnedFd>,
    max_datagram: usize,
    gro: bool,
}

impl Udp {
    /// A bound UDP socket; datagrams above `max_datagram` bytes are dropped
    /// and counted as oversize.
    pub fn new(fd: OwnedFd, max_datagram: usize) -> io::Result<Udp> {
        crate::sys::set_nonblocking(fd.as_raw_fd())?;
        let gro = crate::sys::udp::enable_gro(fd.as_raw_fd());
        Ok(Udp {
            fd: Arc::new(fd),
            max_datagram,
            gro,
        })
    }
}

impl Transport for Udp {
    type In = UdpIn;
    type Out = UdpOut;
    fn split(self) -> (UdpIn, UdpOut) {
        (
            UdpIn {
                fd: self.fd.clone(),
                rx: RecvBatch::new(self.max_datagram, self.gro),
                received: 0,
            },
            UdpOut {
                fd: self.fd,
                tx: SendQueue::new(self.max_datagram),
            },
        )
    }
}

pub struct UdpIn {
    fd: Arc<OwnedFd>,
    rx: RecvBatch,
    received: u64,
}

impl Inbound for UdpIn {
    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
    fn recv(&mut self) -> io::Result<usize> {
        let n = self.rx.recv(self.fd.as_raw_fd())?;
        self.received += self.rx.datagrams() as u64;
        Ok(n)
    }
    fn get(&mut self, i: usize) -> Option<(&mut [u8], SocketAddr)> {
        self.rx.get_mut(i)
    }
    fn batch(&self) -> usize {
        self.rx.capacity()
    }
    fn stats(&self) -> InboundStats {
        InboundStats {
            datagrams: self.received,
            oversize: self.rx.oversize,
            errors: self.rx.errors,
        }
    }
}

pub struct UdpOut {
    fd: Arc<OwnedFd>,
    tx: SendQueue,
}

impl Outbound for UdpOut {
    fn buf(&mut self) -> &mut Vec<u8> {
        if self.tx.is_full() {
            // Only a dead socket errs here; the next flush reports it.
            let _ = self.tx.flush(self.fd.as_raw_fd());
        }
        self.tx.next_buf()
    }
    fn commit(&mut self, to: SocketAddr) {
        self.tx.commit(&to);
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tx.flush(self.fd.as_raw_fd())
    }
    fn stats(&self) -> OutboundStats {
        OutboundStats {
            datagrams: self.tx.sent,
            gso_messages: self.tx.gso_messages,
            errors: self.tx.errors,
            tcp: None,
        }
    }
}
