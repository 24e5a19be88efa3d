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

/// Message 1s per second one source address may have read (each costs
/// the server a Diffie-Hellman): a client retries once a second, so this
/// leaves room for many clients behind one NAT address.
pub const HANDSHAKES_PER_SOURCE: u32 = 20;
/// Sources tracked at most; past that the ones with a full bucket (idle)
/// are forgotten first.
const MAX_SOURCES: usize = 16_384;

/// Per-source token buckets, bounded in memory.
pub struct SourceLimiter {
    rate: u32,
    burst: u32,
    buckets: std::collections::HashMap<std::net::IpAddr, TokenBucket>,
}

impl SourceLimiter {
    pub fn new(rate: u32, burst: u32) -> SourceLimiter {
        SourceLimiter {
            rate,
            burst,
            buckets: std::collections::HashMap::new(),
        }
    }

    /// Takes a token for `src`.
    pub fn take(&mut self, src: std::net::IpAddr, now_ms: u64) -> bool {
        if self.buckets.len() >= MAX_SOURCES && !self.buckets.contains_key(&src) {
            // Forget sources whose bucket refilled (they have been quiet);
            // if a flood of distinct sources keeps the table full, start over.
            self.buckets.retain(|_, b| {
                b.refill(now_ms);
                b.milli < b.burst_milli
            });
            if self.buckets.len() >= MAX_SOURCES {
                self.buckets.clear();
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        self.buckets
            .entry(src)
            .or_insert_with(|| {
                let mut b = TokenBucket::new(rate, burst);
                b.last_ms = now_ms;
                b
            })
            .take(now_ms)
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// Message 1s per second above which the server is under load: it then
/// reads a message 1 only if it carries the cookie of its source address,
/// and answers one without it with the cookie (cheap: a MAC, no
/// Diffie-Hellman). Spoofed sources never see their cookie, so a flood of
/// them costs a MAC each (docs/protocol.md, 6.10).
pub const LOAD_HANDSHAKES_PER_SEC: u64 = 200;
/// The cookie secret changes this often (ms); a cookie is good for one to
/// two periods.
pub const COOKIE_PERIOD_MS: u64 = 120_000;

/// The server's cookies: MACs of the source address under a secret that
/// changes every [`COOKIE_PERIOD_MS`].
pub struct Cookies {
    keys: [ring::hmac::Key; 2],
    /// When the current key was made.
    since_ms: u64,
    seed: u64,
    /// Message 1s read in the current second, and that second.
    window: (u64, u64),
    /// Message 1s read in the previous second.
    prev_second: u64,
}

fn cookie_key(seed: u64, epoch: u64) -> ring::hmac::Key {
    // Derived, not stored: the seed comes from the OS at start.
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&seed.to_le_bytes());
    k[8..16].copy_from_slice(&epoch.to_le_bytes());
    let d = ring::digest::digest(&ring::digest::SHA256, &k);
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, d.as_ref())
}

fn addr_bytes(a: &std::net::SocketAddr) -> [u8; 18] {
    let mut b = [0u8; 18];
    let ip = match a.ip() {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        std::net::IpAddr::V6(v6) => v6,
    };
    b[..16].copy_from_slice(&ip.octets());
    b[16..].copy_from_slice(&a.port().to_le_bytes());
    b
}

impl Cookies {
    pub fn new(seed: u64, now_ms: u64) -> Cookies {
        let epoch = now_ms / COOKIE_PERIOD_MS;
        Cookies {
            keys: [
                cookie_key(seed, epoch),
                cookie_key(seed, epoch.wrapping_sub(1)),
            ],
            since_ms: epoch * COOKIE_PERIOD_MS,
            seed,
            window: (0, now_ms / 1000),
            prev_second: 0,
        }
    }

    fn rotate(&mut self, now_ms: u64) {
        if now_ms >= self.since_ms + COOKIE_PERIOD_MS {
            let epoch = now_ms / COOKIE_PERIOD_MS;
            self.keys = [
                cookie_key(self.seed, epoch),
                cookie_key(self.seed, epoch - 1),
            ];
            self.since_ms = epoch * COOKIE_PERIOD_MS;
        }
    }

    /// The cookie of `src` now.
    pub fn cookie(&mut self, src: &std::net::SocketAddr, now_ms: u64) -> [u8; 16] {
        self.rotate(now_ms);
        let tag = ring::hmac::sign(&self.keys[0], &addr_bytes(src));
        tag.as_ref()[..16]
            .try_into()
            .expect("a SHA-256 MAC has 32 bytes")
    }

    /// Whether `cookie` is one we gave `src` (this period or the last).
    pub fn check(&mut self, src: &std::net::SocketAddr, cookie: &[u8; 16], now_ms: u64) -> bool {
        self.rotate(now_ms);
        let msg = addr_bytes(src);
        self.keys.iter().any(|k| {
            let tag = ring::hmac::sign(k, &msg);
            // Compared in constant time: a timing difference would let a
            // guesser learn a cookie byte by byte.
            tag.as_ref()[..16]
                .iter()
                .zip(cookie)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
        })
    }

    /// Counts a message 1 that reached the handshake; returns whether the
    /// server is under load (the rate of the last whole second, or of this
    /// one so far, is above the threshold).
    pub fn count_and_check_load(&mut self, now_ms: u64) -> bool {
        let sec = now_ms / 1000;
        if sec != self.window.1 {
            self.prev_second = if sec == self.window.1 + 1 {
                self.window.0
            } else {
                0
            };
            self.window = (0, sec);
        }
        self.window.0 += 1;
        self.under_load()
    }

    pub fn under_load(&self) -> bool {
        self.window.0.max(self.prev_second) > LOAD_HANDSHAKES_PER_SEC
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
    fn sources_are_limited_one_by_one() {
        let mut l = SourceLimiter::new(2, 2);
        let a = "10.0.0.1".parse().unwrap();
        let b = "10.0.0.2".parse().unwrap();
        assert!(l.take(a, 0) && l.take(a, 0));
        assert!(!l.take(a, 0), "a's burst is spent");
        assert!(l.take(b, 0), "b has its own");
        assert!(l.take(a, 600), "a refills at its rate");
    }

    #[test]
    fn cookies_are_bound_to_the_source_and_expire() {
        let mut c = Cookies::new(42, 1_000_000);
        let a: std::net::SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let b: std::net::SocketAddr = "10.0.0.1:5001".parse().unwrap();
        let k = c.cookie(&a, 1_000_000);
        assert!(c.check(&a, &k, 1_000_500));
        assert!(!c.check(&b, &k, 1_000_500), "another port");
        assert!(
            c.check(&a, &k, 1_000_000 + COOKIE_PERIOD_MS),
            "still good next period"
        );
        assert!(
            !c.check(&a, &k, 1_000_000 + 3 * COOKIE_PERIOD_MS),
            "expired"
        );
    }

    #[test]
    fn load_is_the_rate_of_message_1s() {
        let mut c = Cookies::new(1, 0);
        for _ in 0..LOAD_HANDSHAKES_PER_SEC {
            assert!(!c.count_and_check_load(500));
        }
        assert!(c.count_and_check_load(600));
        assert!(c.under_load());
        assert!(c.count_and_check_load(1500), "the last second counts");
        assert!(!c.count_and_check_load(5000), "quiet since");
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
