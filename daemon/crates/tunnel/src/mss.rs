//! TCP MSS clamping: SYN and SYN-ACK segments crossing the tunnel get their
//! MSS option lowered to fit the tunnel's MTU, so TCP inside never sends
//! segments the tunnel would have to drop (the original left this to the
//! user's iptables rules). Only SYNs are touched; the TCP checksum is fixed
//! up incrementally (RFC 1624).

const IPPROTO_TCP: u8 = 6;
const TCP_SYN: u8 = 0x02;
const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;

/// Clamps the MSS of `pkt` (an IPv4 or IPv6 packet, or with `ethernet` an
/// Ethernet frame carrying one) to what a `mtu`-byte tunnel can carry.
/// Returns true when the packet was changed.
pub fn clamp(pkt: &mut [u8], mtu: u16, ethernet: bool) -> bool {
    let ip = if ethernet {
        match l3_offset(pkt) {
            Some(off) => &mut pkt[off..],
            None => return false,
        }
    } else {
        pkt
    };
    let Some(&first) = ip.first() else {
        return false;
    };
    match first >> 4 {
        4 => clamp_v4(ip, mtu.saturating_sub(40)),
        6 => clamp_v6(ip, mtu.saturating_sub(60)),
        _ => false,
    }
}

/// Where the IP header starts in an Ethernet frame (one VLAN tag allowed).
fn l3_offset(frame: &[u8]) -> Option<usize> {
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        off += 4;
        ethertype = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    }
    matches!(ethertype, 0x0800 | 0x86dd).then_some(off + 2)
}

fn clamp_v4(ip: &mut [u8], max_mss: u16) -> bool {
    if ip.len() < 20 || ip[9] != IPPROTO_TCP {
        return false;
    }
    // Only the first fragment carries the TCP header.
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
        return false;
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let total = (u16::from_be_bytes([ip[2], ip[3]]) as usize).min(ip.len());
    if ihl < 20 || total < ihl {
        return false;
    }
    clamp_tcp(&mut ip[ihl..total], max_mss)
}

fn clamp_v6(ip: &mut [u8], max_mss: u16) -> bool {
    // Extension headers before TCP are rare on SYNs; those packets are left alone.
    if ip.len() < 40 || ip[6] != IPPROTO_TCP {
        return false;
    }
    let end = (40 + u16::from_be_bytes([ip[4], ip[5]]) as usize).min(ip.len());
    clamp_tcp(&mut ip[40..end], max_mss)
}

fn clamp_tcp(tcp: &mut [u8], max_mss: u16) -> bool {
    if tcp.len() < 20 || tcp[13] & TCP_SYN == 0 || max_mss == 0 {
        return false;
    }
    let data_off = ((tcp[12] >> 4) as usize) * 4;
    if data_off < 20 || data_off > tcp.len() {
        return false;
    }
    let mut i = 20;
    while i < data_off {
        match tcp[i] {
            OPT_END => return false,
            OPT_NOP => i += 1,
            kind => {
                let Some(&len) = tcp.get(i + 1) else {
                    return false;
                };
                let len = len as usize;
                if len < 2 || i + len > data_off {
                    return false;
                }
                if kind == OPT_MSS && len == 4 {
                    let mss = u16::from_be_bytes([tcp[i + 2], tcp[i + 3]]);
                    if mss <= max_mss {
                        return false;
                    }
                    tcp[i + 2..i + 4].copy_from_slice(&max_mss.to_be_bytes());
                    let sum = u16::from_be_bytes([tcp[16], tcp[17]]);
                    // At an odd offset the value straddles two checksum words:
                    // its contribution is the byte-swapped value.
                    let (old, new) = if (i + 2) % 2 == 1 {
                        (mss.swap_bytes(), max_mss.swap_bytes())
                    } else {
                        (mss, max_mss)
                    };
                    tcp[16..18].copy_from_slice(&checksum_adjust(sum, old, new).to_be_bytes());
                    return true;
                }
                i += len;
            }
        }
    }
    false
}

/// RFC 1624: HC' = ~(~HC + ~m + m'), in ones' complement arithmetic.
fn checksum_adjust(sum: u16, old: u16, new: u16) -> u16 {
    let mut acc = (!sum as u32) + (!old as u32) + new as u32;
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ones' complement sum of 16-bit words, as the TCP checksum computes it.
    fn csum(words: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for c in words.chunks(2) {
            acc += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    fn tcp_checksum_v4(ip: &[u8]) -> u16 {
        let ihl = ((ip[0] & 0x0f) as usize) * 4;
        let tcp = &ip[ihl..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&ip[12..20]);
        pseudo.extend_from_slice(&[0, IPPROTO_TCP]);
        pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        let mut t = tcp.to_vec();
        t[16] = 0;
        t[17] = 0;
        pseudo.extend_from_slice(&t);
        csum(&pseudo)
    }

    fn syn_v4(mss: u16, flags: u8) -> Vec<u8> {
        syn_v4_at(mss, flags, 2)
    }

    /// A SYN whose MSS option follows `nops` NOPs (odd counts misalign it).
    fn syn_v4_at(mss: u16, flags: u8, nops: usize) -> Vec<u8> {
        let mut p = vec![0u8; 20 + 28];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(48u16).to_be_bytes());
        p[8] = 64;
        p[9] = IPPROTO_TCP;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let t = &mut p[20..];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&80u16.to_be_bytes());
        t[12] = 7 << 4; // 28-byte header: options follow
        t[13] = flags;
        for k in 0..nops {
            t[20 + k] = OPT_NOP;
        }
        let o = 20 + nops;
        t[o] = OPT_MSS;
        t[o + 1] = 4;
        t[o + 2..o + 4].copy_from_slice(&mss.to_be_bytes());
        t[o + 4] = OPT_END;
        let c = tcp_checksum_v4(&p);
        p[20 + 16..20 + 18].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn mss_of(p: &[u8], off: usize) -> u16 {
        u16::from_be_bytes([p[off + 24], p[off + 25]])
    }

    #[test]
    fn syn_mss_lowered_and_checksum_still_valid() {
        for flags in [TCP_SYN, TCP_SYN | 0x10] {
            let mut p = syn_v4(1460, flags);
            assert!(clamp(&mut p, 1400, false));
            assert_eq!(mss_of(&p, 20), 1360);
            let stored = u16::from_be_bytes([p[36], p[37]]);
            assert_eq!(stored, tcp_checksum_v4(&p), "checksum broken by clamping");
        }
    }

    #[test]
    fn misaligned_mss_option_keeps_checksum_valid() {
        for nops in 0..=3 {
            let mut p = syn_v4_at(1460, TCP_SYN, nops);
            assert!(clamp(&mut p, 1400, false));
            let o = 20 + 20 + nops + 2;
            assert_eq!(u16::from_be_bytes([p[o], p[o + 1]]), 1360);
            let stored = u16::from_be_bytes([p[36], p[37]]);
            assert_eq!(
                stored,
                tcp_checksum_v4(&p),
                "checksum broken with {nops} NOPs"
            );
        }
    }

    #[test]
    fn small_mss_non_syn_and_garbage_untouched() {
        let mut p = syn_v4(1200, TCP_SYN);
        let orig = p.clone();
        assert!(!clamp(&mut p, 1400, false));
        assert_eq!(p, orig);
        let mut ack = syn_v4(1460, 0x10);
        assert!(!clamp(&mut ack, 1400, false));
        for n in 0..p.len() {
            let mut t = syn_v4(1460, TCP_SYN)[..n].to_vec();
            let _ = clamp(&mut t, 1400, false); // no panic on any truncation
        }
        let mut junk = vec![0x45u8; 64];
        let _ = clamp(&mut junk, 1400, false);
    }

    #[test]
    fn ethernet_and_vlan_frames() {
        let ip = syn_v4(1460, TCP_SYN);
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&ip);
        assert!(clamp(&mut f, 1400, true));
        assert_eq!(mss_of(&f, 14 + 20), 1360);
        let mut v = vec![0u8; 12];
        v.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x08, 0x00]);
        v.extend_from_slice(&ip);
        assert!(clamp(&mut v, 1400, true));
        assert_eq!(mss_of(&v, 18 + 20), 1360);
    }

    #[test]
    fn ipv6_syn() {
        let v4 = syn_v4(1440, TCP_SYN);
        let tcp = &v4[20..];
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(tcp.len() as u16).to_be_bytes());
        p[6] = IPPROTO_TCP;
        p.extend_from_slice(tcp);
        let before = u16::from_be_bytes([p[56], p[57]]);
        assert!(clamp(&mut p, 1400, false));
        assert_eq!(mss_of(&p, 40), 1340);
        // Incremental update equals recomputation relative to the old sum.
        assert_eq!(
            u16::from_be_bytes([p[56], p[57]]),
            checksum_adjust(before, 1440, 1340)
        );
    }

    #[test]
    fn checksum_adjust_matches_recompute() {
        let data = [0x12u8, 0x34, 0x05, 0xb4, 0xab, 0xcd];
        let sum = csum(&data);
        let mut changed = data;
        changed[2..4].copy_from_slice(&1360u16.to_be_bytes());
        assert_eq!(checksum_adjust(sum, 0x05b4, 1360), csum(&changed));
    }
}
