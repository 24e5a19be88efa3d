//! The one packet the load sends through each tunnel: an IPv4 ICMP echo
//! request, built by hand (no interface, so no kernel to build it), and
//! the check of the echo reply the server's kernel sends back.
use std::net::Ipv4Addr;

/// Bytes after the ICMP header: enough to look like `ping`'s, no more.
const PAYLOAD: usize = 32;

/// The ICMP identifier of client `i` (replies are matched by it).
pub fn ident(i: usize) -> u16 {
    (i as u16) ^ 0x4b00
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in b.chunks(2) {
        let word = if pair.len() == 2 {
            u16::from_be_bytes([pair[0], pair[1]])
        } else {
            u16::from_be_bytes([pair[0], 0])
        };
        sum += word as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet: ICMP echo request `ident`/`seq` from `src` to `dst`.
pub fn echo_request(src: Ipv4Addr, dst: Ipv4Addr, ident: u16, seq: u16) -> Vec<u8> {
    let total = 20 + 8 + PAYLOAD;
    let mut p = vec![0u8; total];
    p[0] = 0x45; // version 4, 5 words of header
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&seq.to_be_bytes()); // IP id
    p[6] = 0x40; // don't fragment
    p[8] = 64; // TTL
    p[9] = 1; // ICMP
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let icmp = &mut p[20..];
    icmp[0] = 8; // echo request
    icmp[4..6].copy_from_slice(&ident.to_be_bytes());
    icmp[6..8].copy_from_slice(&seq.to_be_bytes());
    for (k, b) in icmp[8..].iter_mut().enumerate() {
        *b = k as u8;
    }
    let c = checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// (ident, seq) of an IPv4 ICMP echo reply; None for any other packet.
pub fn echo_reply(p: &[u8]) -> Option<(u16, u16)> {
    if p.len() < 20 || p[0] >> 4 != 4 || p[9] != 1 {
        return None;
    }
    let ihl = (p[0] & 0x0f) as usize * 4;
    let icmp = p.get(ihl..)?;
    if icmp.len() < 8 || icmp[0] != 0 || checksum(icmp) != 0 {
        return None;
    }
    Some((
        u16::from_be_bytes([icmp[4], icmp[5]]),
        u16::from_be_bytes([icmp[6], icmp[7]]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_has_valid_checksums() {
        let p = echo_request(Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1), 7, 9);
        assert_eq!(checksum(&p[..20]), 0);
        assert_eq!(checksum(&p[20..]), 0);
        assert_eq!(echo_reply(&p), None, "a request is not a reply");
    }

    #[test]
    fn a_reply_is_recognised_by_ident_and_seq() {
        let mut p = echo_request(Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1), 7, 9);
        // What the server's kernel does: type 0, checksum adjusted.
        p[20] = 0;
        p[22..24].copy_from_slice(&[0, 0]);
        let c = checksum(&p[20..]);
        p[22..24].copy_from_slice(&c.to_be_bytes());
        assert_eq!(echo_reply(&p), Some((7, 9)));
        p[30] ^= 1;
        assert_eq!(echo_reply(&p), None, "a corrupted reply");
    }
}
