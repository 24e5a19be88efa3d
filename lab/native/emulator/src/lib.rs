//! kcpvpn's lab link emulator.
//!
//! netem is missing from the lab's kernel, so this crate stands in for it:
//! [`link::Link`] is the sans-IO impairment state machine (delay, jitter,
//! random and Gilbert-Elliott burst loss, rate limit with a bounded queue,
//! reordering, duplication; seeded), and [`emulator::Emulator`] bridges two
//! interfaces at layer 2 with AF_PACKET sockets, one thread and one `Link`
//! per direction.
pub mod link;
mod rng;

#[cfg(target_os = "linux")]
pub mod emulator;
#[cfg(target_os = "linux")]
mod sys;

pub use link::{Link, LinkParams, LinkStats, ParamError, Verdict, NS_PER_MS, QUEUE_WAIT_BOUNDS_MS};
pub use rng::Rng;
