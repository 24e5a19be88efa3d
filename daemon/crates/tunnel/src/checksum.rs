//! The Internet checksum (RFC 1071), shared by fake TCP's segments, the
//! TUN offload's segmentation and merging.

/// The ones'-complement sum of `data` as big-endian 16-bit words (an odd
/// last byte padded with zero), folded to at most 16 bits but not
/// inverted. Sums of several parts add as plain integers; [`fold`] them.
pub fn sum(data: &[u8]) -> u64 {
    // Native-endian words summed with end-around carry give the byte-swapped
    // big-endian sum (RFC 1071 §2(B)); swapped back once at the end.
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_ne_bytes(c.try_into().expect("8 bytes"));
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 8];
    tail[..rest.len()].copy_from_slice(rest);
    let w = u64::from_ne_bytes(tail);
    acc += (w >> 32) + (w & 0xffff_ffff);
    let folded = fold(acc);
    if cfg!(target_endian = "little") {
        folded.swap_bytes() as u64
    } else {
        folded as u64
    }
}

/// Folds a sum to 16 bits (end-around carry).
pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::SmallRng, Rng, SeedableRng};

    /// RFC 1071 the plain way, to check the fast sum against.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            acc += w as u32;
        }
        while acc >> 16 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn fast_sum_matches_rfc1071() {
        let mut rng = SmallRng::seed_from_u64(7);
        for len in 0..300 {
            let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            assert_eq!(fold(sum(&data)), reference_sum(&data), "len {len}");
        }
        for len in [1500, 65535] {
            let ones = vec![0xffu8; len];
            assert_eq!(fold(sum(&ones)), reference_sum(&ones));
        }
    }
}
