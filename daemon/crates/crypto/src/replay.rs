//! Sliding replay window over 64-bit packet counters, in the style of
//! RFC 6479: a ring of `u64` words, so advancing the window clears whole
//! words instead of shifting a bitmap.
//!
//! The opener calls [`ReplayWindow::check`] before spending work on
//! decryption and [`ReplayWindow::mark`] only once the tag has verified, so
//! forged datagrams can never move the window.

use crate::CryptoError;

/// Words in the bitmap ring (8192 bits).
const WORDS: usize = 128;
const BITS: u64 = (WORDS as u64) * 64;
/// Counters this far behind the newest one are refused as too old. One word
/// less than the ring, because the word holding the newest counter is only
/// partly inside the window.
pub const WINDOW: u64 = BITS - 64;

#[derive(Clone)]
pub struct ReplayWindow {
    /// Highest counter marked so far; `None` until the first datagram.
    top: Option<u64>,
    ring: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("top", &self.top)
            .finish_non_exhaustive()
    }
}

#[inline]
fn slot(counter: u64) -> (usize, u64) {
    (
        ((counter / 64) % WORDS as u64) as usize,
        1u64 << (counter % 64),
    )
}

impl ReplayWindow {
    pub const fn new() -> Self {
        ReplayWindow {
            top: None,
            ring: [0; WORDS],
        }
    }

    /// Highest counter accepted so far.
    pub fn top(&self) -> Option<u64> {
        self.top
    }

    /// Would `counter` be accepted? Does not change the window.
    #[inline]
    pub fn check(&self, counter: u64) -> Result<(), CryptoError> {
        let Some(top) = self.top else { return Ok(()) };
        if counter > top {
            return Ok(());
        }
        if top - counter >= WINDOW {
            return Err(CryptoError::TooOld);
        }
        let (w, bit) = slot(counter);
        if self.ring[w] & bit != 0 {
            Err(CryptoError::Replayed)
        } else {
            Ok(())
        }
    }

    /// Records `counter` as received. Call only after `check` passed and the
    /// datagram authenticated.
    #[inline]
    pub fn mark(&mut self, counter: u64) {
        match self.top {
            None => {
                self.top = Some(counter);
            }
            Some(top) if counter > top => {
                // Clear the words the window slides over (at most the whole
                // ring), skipping the word that already holds `top`.
                let (old, new) = (top / 64, counter / 64);
                let n = (new - old).min(WORDS as u64);
                for i in 0..n {
                    self.ring[((new - i) % WORDS as u64) as usize] = 0;
                }
                self.top = Some(counter);
            }
            Some(top) if top - counter >= WINDOW => return,
            Some(_) => {}
        }
        let (w, bit) = slot(counter);
        self.ring[w] |= bit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(w: &mut ReplayWindow, c: u64) -> Result<(), CryptoError> {
        w.check(c)?;
        w.mark(c);
        Ok(())
    }

    #[test]
    fn in_order_then_replays() {
        let mut w = ReplayWindow::new();
        for c in 0..20_000u64 {
            accept(&mut w, c).unwrap();
        }
        assert_eq!(w.check(19_999), Err(CryptoError::Replayed));
        assert_eq!(w.check(19_999 - WINDOW + 1), Err(CryptoError::Replayed));
        assert_eq!(w.check(19_999 - WINDOW), Err(CryptoError::TooOld));
        assert_eq!(w.check(0), Err(CryptoError::TooOld));
        assert!(w.check(20_000).is_ok());
    }

    #[test]
    fn window_is_at_least_4096() {
        const { assert!(WINDOW >= 4096) };
        let mut w = ReplayWindow::new();
        accept(&mut w, 10_000).unwrap();
        // Everything within the window behind the top is still acceptable once.
        for c in (10_000 - WINDOW + 1)..10_000 {
            accept(&mut w, c).unwrap();
            assert_eq!(w.check(c), Err(CryptoError::Replayed));
        }
    }

    #[test]
    fn reordering_and_gaps() {
        let mut w = ReplayWindow::new();
        accept(&mut w, 5).unwrap();
        accept(&mut w, 3).unwrap();
        accept(&mut w, 4).unwrap();
        assert_eq!(w.check(3), Err(CryptoError::Replayed));
        assert!(w.check(0).is_ok());
        // Jump far ahead: stale bits from the old words must not leak into the
        // new positions they map to.
        let far = 5 + BITS;
        accept(&mut w, far).unwrap();
        assert!(
            w.check(far - 64).is_ok(),
            "word reused after jump must be clear"
        );
        assert_eq!(w.check(5), Err(CryptoError::TooOld));
        accept(&mut w, far - 1).unwrap();
        assert_eq!(w.check(far - 1), Err(CryptoError::Replayed));
    }

    #[test]
    fn huge_jump_and_extremes() {
        let mut w = ReplayWindow::new();
        accept(&mut w, 0).unwrap();
        accept(&mut w, u64::MAX - 1).unwrap();
        assert_eq!(w.check(0), Err(CryptoError::TooOld));
        assert!(w.check(u64::MAX).is_ok());
        assert!(w.check(u64::MAX - 2).is_ok());
        accept(&mut w, u64::MAX).unwrap();
        assert_eq!(w.check(u64::MAX), Err(CryptoError::Replayed));
    }

    #[test]
    fn check_does_not_mark() {
        let mut w = ReplayWindow::new();
        assert!(w.check(7).is_ok());
        assert!(w.check(7).is_ok());
        w.mark(7);
        assert_eq!(w.check(7), Err(CryptoError::Replayed));
    }

    /// Compare against a plain set-based model on random sequences.
    #[test]
    fn matches_model() {
        use std::collections::HashSet;
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20 {
            let mut w = ReplayWindow::new();
            let mut seen = HashSet::new();
            let mut top: Option<u64> = None;
            let mut base = 0u64;
            for _ in 0..5000 {
                let r = rnd();
                base += r % 40;
                let c = base.saturating_sub(rnd() % 9000);
                let expected = match top {
                    Some(t) if c <= t && t - c >= WINDOW => Err(CryptoError::TooOld),
                    _ if seen.contains(&c) => Err(CryptoError::Replayed),
                    _ => Ok(()),
                };
                assert_eq!(accept(&mut w, c), expected, "counter {c} top {top:?}");
                if expected.is_ok() {
                    seen.insert(c);
                    top = Some(top.map_or(c, |t| t.max(c)));
                }
            }
        }
    }
}
