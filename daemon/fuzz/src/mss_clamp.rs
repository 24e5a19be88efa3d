//! `mss::clamp` on IPv4/IPv6 TCP segments, bare or in Ethernet frames
//! (with or without a VLAN tag), built from structured input so that most
//! are SYNs with a valid checksum and options the clamp has to walk, then
//! optionally damaged. Invariants: no panic; a packet is changed only in
//! its MSS value and TCP checksum; the MSS only goes down, to exactly what
//! the MTU allows; a checksum that was right stays right; clamping twice
//! changes nothing more.
use arbitrary::{Arbitrary, Unstructured};
use kcpvpn_tunnel::mss::clamp;

#[derive(Arbitrary, Debug)]
struct Input {
    mtu: u16,
    ethernet: bool,
    vlan: bool,
    v6: bool,
    /// IPv4 option words (0..=10).
    ip_options: u8,
    frag: u16,
    tcp_flags: u8,
    /// TCP options: a sequence of these, then padding to a word.
    options: Vec<Opt>,
    /// Overrides the TCP data offset (words) instead of the right one.
    data_off: Option<u8>,
    payload_len: u8,
    addrs: [u8; 32],
    /// Overrides the IP length field.
    ip_len: Option<u16>,
    /// Bytes flipped after the checksum was computed: (position, xor).
    damage: Vec<(u16, u8)>,
    /// Cut the packet to this many bytes.
    truncate: Option<u16>,
}

#[derive(Arbitrary, Debug)]
enum Opt {
    Nop,
    End,
    Mss(u16),
    /// Any kind, length byte as given, `len` bytes of body.
    Other {
        kind: u8,
        len: u8,
        body: u8,
    },
}

/// Ones' complement sum of 16-bit big-endian words (odd tail zero-padded).
fn sum(acc: u32, b: &[u8]) -> u32 {
    let mut acc = acc;
    for c in b.chunks(2) {
        acc += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
    }
    acc
}

/// Where the IP header starts, as the packet was built.
struct Layout {
    l3: usize,
    l4: usize,
    /// End of the TCP segment (by the IP length field, within the packet).
    end: usize,
}

fn layout(pkt: &[u8], inp: &Input) -> Option<Layout> {
    let l3 = if inp.ethernet {
        if inp.vlan {
            18
        } else {
            14
        }
    } else {
        0
    };
    let ip = pkt.get(l3..)?;
    if inp.v6 {
        if ip.len() < 40 {
            return None;
        }
        let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
        Some(Layout {
            l3,
            l4: l3 + 40,
            end: l3 + (40 + plen).min(ip.len()),
        })
    } else {
        if ip.len() < 20 {
            return None;
        }
        let ihl = (ip[0] & 0x0f) as usize * 4;
        let total = (u16::from_be_bytes([ip[2], ip[3]]) as usize).min(ip.len());
        if ihl < 20 || total < ihl {
            return None;
        }
        Some(Layout {
            l3,
            l4: l3 + ihl,
            end: l3 + total,
        })
    }
}

/// The ones' complement sum of the TCP pseudo-header and segment.
fn tcp_sum(pkt: &[u8], inp: &Input, l: &Layout) -> u32 {
    let tcp = &pkt[l.l4..l.end];
    let ip = &pkt[l.l3..];
    let acc = if inp.v6 {
        let a = sum(0, &ip[8..40]);
        let a = sum(a, &(tcp.len() as u32).to_be_bytes());
        sum(a, &[0, 0, 0, 6])
    } else {
        let a = sum(0, &ip[12..20]);
        sum(a, &[0, 6, (tcp.len() >> 8) as u8, tcp.len() as u8])
    };
    sum(acc, tcp)
}

/// Whether the TCP checksum of the segment is right.
fn checksum_ok(pkt: &[u8], inp: &Input, l: &Layout) -> bool {
    l.end >= l.l4 + 20 && tcp_sum(pkt, inp, l) == 0xffff
}

fn build(inp: &Input) -> Vec<u8> {
    let mut tcp = vec![0u8; 20];
    tcp[0..4].copy_from_slice(&[0x9c, 0x40, 0x00, 0x50]);
    tcp[13] = inp.tcp_flags;
    for o in inp.options.iter().take(20) {
        match *o {
            Opt::Nop => tcp.push(1),
            Opt::End => tcp.push(0),
            Opt::Mss(v) => {
                tcp.extend_from_slice(&[2, 4]);
                tcp.extend_from_slice(&v.to_be_bytes());
            }
            Opt::Other { kind, len, body } => {
                tcp.extend_from_slice(&[kind, len]);
                tcp.extend(std::iter::repeat_n(body, (len as usize).min(12)));
            }
        }
    }
    tcp.truncate(60);
    while !tcp.len().is_multiple_of(4) {
        tcp.push(0);
    }
    let off = inp.data_off.map_or(tcp.len() / 4, |w| (w & 0x0f) as usize);
    tcp[12] = (off as u8) << 4;
    tcp.extend((0..inp.payload_len).map(|i| i.wrapping_mul(7)));

    let mut ip = if inp.v6 {
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        h[4..6].copy_from_slice(&(tcp.len() as u16).to_be_bytes());
        h[6] = 6;
        h[7] = 64;
        h[8..40].copy_from_slice(&inp.addrs);
        h
    } else {
        let words = 5 + (inp.ip_options % 11) as usize;
        let mut h = vec![1u8; words * 4]; // options: NOPs
        h[0] = 0x40 | words as u8;
        h[1] = 0;
        h[2..4].copy_from_slice(&((words * 4 + tcp.len()) as u16).to_be_bytes());
        h[6..8].copy_from_slice(&inp.frag.to_be_bytes());
        h[8] = 64;
        h[9] = 6;
        h[12..20].copy_from_slice(&inp.addrs[..8]);
        h
    };
    let ihl = ip.len();
    ip.extend_from_slice(&tcp);
    let mut pkt = Vec::new();
    if inp.ethernet {
        pkt.extend_from_slice(&[0x02; 12]);
        if inp.vlan {
            pkt.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
        }
        pkt.extend_from_slice(if inp.v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
    }
    let l3 = pkt.len();
    pkt.extend_from_slice(&ip);
    // A right checksum, then the length field as asked (often wrong).
    if let Some(l) = layout(&pkt, inp) {
        if l.end >= l.l4 + 20 {
            let c = l3 + ihl + 16;
            pkt[c..c + 2].fill(0);
            let ck = !(tcp_sum(&pkt, inp, &l) as u16);
            pkt[c..c + 2].copy_from_slice(&ck.to_be_bytes());
        }
    }
    if let Some(n) = inp.ip_len {
        if inp.v6 {
            pkt[l3 + 4..l3 + 6].copy_from_slice(&n.to_be_bytes());
        } else {
            pkt[l3 + 2..l3 + 4].copy_from_slice(&n.to_be_bytes());
        }
    }
    // Damage past the IP version and the link header only: the checks
    // below take the packet's layout from how it was built.
    for &(at, x) in inp.damage.iter().take(4) {
        if pkt.len() > l3 + 1 {
            let i = l3 + 1 + at as usize % (pkt.len() - l3 - 1);
            pkt[i] ^= x;
        }
    }
    if let Some(n) = inp.truncate {
        pkt.truncate(n as usize);
    }
    pkt
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(inp) = Input::arbitrary(&mut u) else {
        return;
    };
    let orig = build(&inp);
    // Also the raw input as a packet: the parser's view of garbage.
    let mut raw = data.to_vec();
    let _ = clamp(&mut raw, inp.mtu, inp.ethernet);

    let mut pkt = orig.clone();
    let changed = clamp(&mut pkt, inp.mtu, inp.ethernet);
    if !changed {
        assert_eq!(pkt, orig, "clamp said unchanged but changed the packet");
        return;
    }
    let l = layout(&orig, &inp).expect("a clamped packet has a TCP segment");
    let diff: Vec<usize> = (0..pkt.len()).filter(|&i| pkt[i] != orig[i]).collect();
    let csum = l.l4 + 16;
    let rest: Vec<usize> = diff
        .iter()
        .copied()
        .filter(|&i| i != csum && i != csum + 1)
        .collect();
    assert!(!rest.is_empty(), "clamped, yet the MSS kept its value");
    let first = rest[0];
    // The MSS value is at `m..m + 2` (one byte may be unchanged).
    let m = if rest.len() == 1 && first > l.l4 + 20 && pkt[first - 2] != 2 {
        first - 1
    } else {
        first
    };
    assert!(
        rest.iter().all(|&i| i == m || i == m + 1),
        "clamp changed bytes besides the MSS and checksum: {diff:?}"
    );
    assert!(
        m >= l.l4 + 22 && m + 2 <= l.end,
        "MSS outside the TCP header"
    );
    assert_eq!(pkt[m - 2..m], [2, 4], "changed bytes are not an MSS option");
    let old = u16::from_be_bytes([orig[m], orig[m + 1]]);
    let new = u16::from_be_bytes([pkt[m], pkt[m + 1]]);
    let max = inp.mtu.saturating_sub(if inp.v6 { 60 } else { 40 });
    assert!(new < old, "MSS raised or kept: {old} -> {new}");
    assert_eq!(new, max, "MSS clamped to {new}, not to the MTU's {max}");
    assert_eq!(
        orig[l.l4 + 13] & 0x02,
        0x02,
        "a segment without SYN was clamped"
    );
    if checksum_ok(&orig, &inp, &l) {
        assert!(
            checksum_ok(&pkt, &inp, &l),
            "clamping broke a valid checksum"
        );
    }
    let again = pkt.clone();
    assert!(
        !clamp(&mut pkt, inp.mtu, inp.ethernet),
        "clamp not idempotent"
    );
    assert_eq!(pkt, again);
}
