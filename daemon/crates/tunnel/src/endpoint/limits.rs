//! Rate limits of the endpoint: token buckets with time passed in.

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
/// Counts in thousandths of a token so low rates stay exact.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_s: u64,
    burst_milli: u64,
    milli: u64,
    last_ms: u64,
}

impl TokenBucket {
    /// Starts full.
    pub fn new(rate_per_s: u32, burst: u32) -> TokenBucket {
        let burst_milli = burst.max(1) as u64 * 1000;
        TokenBucket {
            rate_per_s: rate_per_s as u64,
            burst_milli,
            milli: burst_milli,
            last_ms: 0,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let dt = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        // tokens/s × ms = thousandths of a token
        self.milli = (self.milli + dt.saturating_mul(self.rate_per_s)).min(self.burst_milli);
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now_ms: u64) -> bool {
        self.refill(now_ms);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// Reports of a recurring event, at most `rate` per second; the ones
/// held back are counted and handed to the next report that goes out.
#[derive(Debug, Clone)]
pub struct Reporter {
    bucket: TokenBucket,
    suppressed: u64,
}

impl Reporter {
    pub fn new(rate_per_s: u32, burst: u32) -> Reporter {
        Reporter {
            bucket: TokenBucket::new(rate_per_s, burst),
            suppressed: 0,
        }
    }

    /// `Some(n)`: report now, mentioning `n` held back since the last one.
    pub fn report(&mut self, now_ms: u64) -> Option<u64> {
        if self.bucket.take(now_ms) {
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let mut b = TokenBucket::new(20, 5);
        let burst = (0..100).filter(|_| b.take(1000)).count();
        assert_eq!(burst, 5);
        // One second later: 20 more, capped by the burst of 5.
        let next = (0..100).filter(|_| b.take(2000)).count();
        assert_eq!(next, 5);
        // 50 ms at 20/s is one token.
        assert!(b.take(2050));
        assert!(!b.take(2050));
    }

    #[test]
    fn time_going_backwards_grants_nothing() {
        let mut b = TokenBucket::new(10, 1);
        assert!(b.take(5000));
        assert!(!b.take(1000));
    }

    #[test]
    fn a_reporter_counts_what_it_held_back() {
        let mut r = Reporter::new(1, 1);
        assert_eq!(r.report(0), Some(0));
        assert_eq!(r.report(10), None);
        assert_eq!(r.report(20), None);
        assert_eq!(r.report(1100), Some(2));
    }
}
