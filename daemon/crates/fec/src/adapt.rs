//! How much parity a group needs for a measured loss rate.
//!
//! Adaptive FEC (docs/protocol.md, section 6.7): the receiver reports the
//! share of datagrams it lost; the sender keeps a smoothed estimate `p` and
//! gives each full group the fewest parity shards that make the group
//! unrecoverable (more shards lost than parity) at most [`GROUP_FAILURE`] of
//! the time, treating losses as independent with probability `p`.

/// Acceptable probability that a group loses more shards than it has parity:
/// KCP retransmits what FEC could not rebuild, so this is a latency cost paid
/// on one group in a hundred, not a loss.
pub const GROUP_FAILURE: f64 = 0.01;

/// Loss rates at or above this get all the parity there is: the binomial
/// sums below stay far from underflow, and no sane group size copes anyway.
const HOPELESS: f64 = 0.5;

/// `P[X > n]` for `X ~ Binomial(total, p)`, `0 <= p < 1`.
fn tail_above(total: usize, n: usize, p: f64) -> f64 {
    if n >= total {
        return 0.0;
    }
    // pmf(i+1) = pmf(i) * (total - i) / (i + 1) * p / (1 - p); summing the
    // head (at most n + 1 terms) is exact enough for a 1% threshold.
    let q = 1.0 - p;
    let ratio = p / q;
    let mut pmf = q.powi(total as i32);
    let mut head = 0.0;
    for i in 0..=n {
        head += pmf;
        pmf *= (total - i) as f64 / (i + 1) as f64 * ratio;
    }
    (1.0 - head).max(0.0)
}

/// The fewest parity shards `n` in `0..=max_parity` such that a group of
/// `data` data shards plus `n` parity loses more than `n` of them with
/// probability at most `target`, when each shard is lost independently with
/// probability `loss`. `max_parity` when even that is not enough. A loss of
/// 0 (or less, or NaN) needs no parity.
pub fn parity_for_loss(data: usize, max_parity: usize, loss: f64, target: f64) -> usize {
    if loss.is_nan() || loss <= 0.0 {
        return 0;
    }
    if loss >= HOPELESS {
        return max_parity;
    }
    (0..=max_parity)
        .find(|&n| tail_above(data + n, n, loss) <= target)
        .unwrap_or(max_parity)
}

/// Parity as a mix of two counts, so the average cost follows the loss
/// smoothly instead of in whole shards: `(n, share)` where a `share` of full
/// groups gets `n + 1` parity shards and the rest `n`, chosen so that the
/// average share of groups that fail is `target`. At 5% loss with 10 data
/// shards and a 5% target that is 1.63 shards instead of 2: 16% of the
/// data in parity instead of 20%. `share` is 0 when one count fits exactly:
/// no loss, or even `max_parity` is not enough.
pub fn parity_mix_for_loss(data: usize, max_parity: usize, loss: f64, target: f64) -> (usize, f64) {
    let hi = parity_for_loss(data, max_parity, loss, target);
    if hi == 0 || loss >= HOPELESS {
        return (hi, 0.0);
    }
    let t_hi = tail_above(data + hi, hi, loss);
    if t_hi > target {
        return (hi, 0.0); // max_parity and still short: all of it
    }
    let t_lo = tail_above(data + hi - 1, hi - 1, loss);
    // t_lo > target >= t_hi, so the share is in (0, 1].
    let share = ((t_lo - target) / (t_lo - t_hi)).clamp(0.0, 1.0);
    (hi - 1, share)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact binomial tail by direct summation of C(n, i) p^i q^(n-i).
    fn reference_tail(total: usize, n: usize, p: f64) -> f64 {
        let mut s = 0.0;
        for i in (n + 1)..=total {
            let mut c = 1.0;
            for j in 0..i {
                c = c * (total - j) as f64 / (j + 1) as f64;
            }
            s += c * p.powi(i as i32) * (1.0 - p).powi((total - i) as i32);
        }
        s
    }

    #[test]
    fn tail_matches_direct_summation() {
        for total in [1, 5, 13, 40] {
            for n in 0..4 {
                for p in [0.001, 0.05, 0.2, 0.45] {
                    let a = tail_above(total, n, p);
                    let b = reference_tail(total, n, p);
                    assert!((a - b).abs() < 1e-9, "{total} {n} {p}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn clean_link_needs_no_parity() {
        assert_eq!(parity_for_loss(10, 3, 0.0, GROUP_FAILURE), 0);
        assert_eq!(parity_for_loss(10, 3, -0.1, GROUP_FAILURE), 0);
        assert_eq!(parity_for_loss(10, 3, f64::NAN, GROUP_FAILURE), 0);
        // 1 - 0.999^10 = 0.995% <= 1%: one loss per thousand still fits.
        assert_eq!(parity_for_loss(10, 3, 0.001, GROUP_FAILURE), 0);
    }

    #[test]
    fn known_values_for_ten_data_shards() {
        // Worked by hand from the binomial distribution:
        // p = 0.5%: P[>0 of 10] = 4.9% > 1%, P[>1 of 11] = 0.13%  -> 1
        assert_eq!(parity_for_loss(10, 3, 0.005, GROUP_FAILURE), 1);
        // p = 3%: P[>1 of 11] = 4.1%, P[>2 of 12] = 0.49%          -> 2
        assert_eq!(parity_for_loss(10, 3, 0.03, GROUP_FAILURE), 2);
        // p = 5%: P[>2 of 12] = 1.96%, P[>3 of 13] = 0.31%         -> 3
        assert_eq!(parity_for_loss(10, 3, 0.05, GROUP_FAILURE), 3);
        // p = 10% would need 4 (P[>3 of 13] = 3.4%, P[>4 of 14] = 0.92%).
        assert_eq!(parity_for_loss(10, 8, 0.10, GROUP_FAILURE), 4);
        assert_eq!(parity_for_loss(10, 3, 0.10, GROUP_FAILURE), 3);
    }

    #[test]
    fn monotone_in_loss_and_capped() {
        for (ds, ps) in [(1, 1), (4, 2), (10, 3), (20, 10), (128, 128)] {
            let mut last = 0;
            for i in 0..=100 {
                let p = i as f64 / 100.0;
                let n = parity_for_loss(ds, ps, p, GROUP_FAILURE);
                assert!(n <= ps);
                assert!(
                    n >= last,
                    "{ds}+{ps}: parity fell from {last} to {n} at p={p}"
                );
                last = n;
            }
            assert_eq!(last, ps);
        }
    }

    #[test]
    fn chosen_count_meets_the_target_and_one_less_does_not() {
        for p in [0.002, 0.01, 0.02, 0.04, 0.07] {
            let n = parity_for_loss(10, 10, p, GROUP_FAILURE);
            assert!(reference_tail(10 + n, n, p) <= GROUP_FAILURE);
            if n > 0 {
                assert!(reference_tail(10 + n - 1, n - 1, p) > GROUP_FAILURE);
            }
        }
    }

    #[test]
    fn mix_meets_the_target_on_average() {
        for p in [0.01, 0.05, 0.1, 0.2] {
            let (n, share) = parity_mix_for_loss(10, 8, p, 0.05);
            let avg_fail = (1.0 - share) * reference_tail(10 + n, n, p)
                + share * reference_tail(10 + n + 1, n + 1, p);
            assert!(
                (avg_fail - 0.05).abs() < 1e-9,
                "p={p}: {n} + {share} fails {avg_fail}"
            );
            // Never more than the whole-shard choice, never less than one fewer.
            let whole = parity_for_loss(10, 8, p, 0.05);
            assert_eq!(n + 1, whole, "p={p}");
        }
        // 5%: 1.63 shards (10.2% fail with 1, 1.96% with 2).
        let (n, share) = parity_mix_for_loss(10, 8, 0.05, 0.05);
        assert_eq!(n, 1);
        assert!((share - 0.63).abs() < 0.01, "{share}");
    }

    #[test]
    fn mix_is_whole_when_nothing_is_left_to_mix() {
        assert_eq!(parity_mix_for_loss(10, 8, 0.0, 0.05), (0, 0.0));
        // 0.3%: no parity already fails only 3% of groups.
        assert_eq!(parity_mix_for_loss(10, 8, 0.003, 0.05), (0, 0.0));
        assert_eq!(parity_mix_for_loss(10, 2, 0.4, 0.05), (2, 0.0));
        assert_eq!(parity_mix_for_loss(10, 8, 0.6, 0.05), (8, 0.0));
    }
}
