use super::cvt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    pub fn new(capacity: usize) -> io::Result<Self> {
        // SAFETY: plain syscall returning an owned descriptor.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)],
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: ev is a valid epoll_event for the duration of the call.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) })?;
        Ok(())
    }

    pub fn add(&self, fd: RawFd, readable: bool, token: u64) -> io::Result<()> {
        self.ctl(
            libc::EPOLL_CTL_ADD,
            fd,
            if readable { libc::EPOLLIN as u32 } else { 0 },
            token,
        )
    }

    /// Turns read interest on or off: how the data path stops reading a TUN
    /// device whose session already holds as much as it may buffer.
    pub fn set_readable(&self, fd: RawFd, readable: bool, token: u64) -> io::Result<()> {
        self.ctl(
            libc::EPOLL_CTL_MOD,
            fd,
            if readable { libc::EPOLLIN as u32 } else { 0 },
            token,
        )
    }

    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits up to `timeout_ms` and returns the tokens of ready descriptors
    /// with their readiness: `(token, hung_up)`, where `hung_up` means the
    /// descriptor reported an error or hang-up (reported even without read
    /// interest, so a dead descriptor must be removed, or the wait spins).
    pub fn wait(&mut self, timeout_ms: i32, ready: &mut Vec<(u64, bool)>) -> io::Result<()> {
        ready.clear();
        // SAFETY: events is a valid buffer of events.len() entries.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                timeout_ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(e);
        }
        let bad = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
        ready.extend(
            self.events[..n as usize]
                .iter()
                .map(|e| (e.u64, e.events & bad != 0)),
        );
        Ok(())
    }
}
