//! TUN offload (`offload`): what the kernel hands over (a virtio header and
//! a packet, mostly a plausible TSO/USO super-packet built from the input,
//! then optionally damaged, or raw bytes) is cut into packets; those, with
//! some dropped, spread over two interfaces, and raw bytes as a hostile
//! peer's packet, go through the coalescer. Invariants: no panic; a well-
//! formed super-packet cuts into valid segments carrying its payload; every
//! merged write cuts back (as the kernel would) into exactly the packets
//! that went in (but for IPv4 ids and checksums, recomputed), and every
//! packet comes out once, merged or as it was.
use arbitrary::{Arbitrary, Unstructured};
use kcpvpn_tunnel::checksum;
use kcpvpn_tunnel::offload::{self, Coalescer, VnetHdr, VNET_HDR_LEN};

#[derive(Arbitrary, Debug)]
struct Input {
    raw_hdr: [u8; VNET_HDR_LEN],
    /// Build a well-formed super-packet (else: `raw` behind `raw_hdr`).
    build: bool,
    v6: bool,
    udp: bool,
    tcp_flags: u8,
    seq: u32,
    ip_id: u16,
    mss: u16,
    /// TCP option words (0..=10).
    opt_words: u8,
    payload_len: u16,
    /// Bytes flipped after building: (position, xor).
    damage: Vec<(u16, u8)>,
    /// Per segment: bit 0 drops it, bit 1 sends it to the other interface.
    fate: Vec<u8>,
    raw: Vec<u8>,
}

fn put16(b: &mut [u8], i: usize, v: u16) {
    b[i..i + 2].copy_from_slice(&v.to_be_bytes());
}

/// A TSO/USO read as the kernel makes it: lengths right, the transport
/// checksum holding the pseudo-header's sum.
fn build(i: &Input) -> (VnetHdr, Vec<u8>) {
    let proto = if i.udp { 17u8 } else { 6 };
    let mut p = Vec::new();
    if i.v6 {
        p.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, proto, 64]);
        p.extend((0..32).map(|k| k as u8));
    } else {
        p.extend_from_slice(&[0x45, 0, 0, 0]);
        p.extend_from_slice(&i.ip_id.to_be_bytes());
        p.extend_from_slice(&[0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    }
    let l4 = p.len();
    if i.udp {
        p.extend_from_slice(&[0x30, 0x39, 0, 53, 0, 0, 0, 0]);
    } else {
        let words = (i.opt_words % 11) as usize;
        p.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51]);
        p.extend_from_slice(&i.seq.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 9, ((5 + words) as u8) << 4, i.tcp_flags | 0x10]);
        p.extend_from_slice(&[1, 0, 0, 0, 0, 0]);
        p.extend(std::iter::repeat_n(1u8, words * 4)); // NOPs
    }
    let hdrs = p.len();
    let payload = (i.payload_len as usize).min(65535 - hdrs);
    p.extend((0..payload).map(|k| (k as u8).wrapping_mul(7) ^ (i.seq as u8)));
    let len = p.len();
    if i.v6 {
        put16(&mut p, 4, (len - 40) as u16);
    } else {
        put16(&mut p, 2, len as u16);
    }
    if i.udp {
        put16(&mut p, l4 + 4, (len - l4) as u16);
    }
    if !i.v6 {
        let c = !checksum::fold(checksum::sum(&p[..20]));
        put16(&mut p, 10, c);
    }
    let addrs = if i.v6 { &p[8..40] } else { &p[12..20] };
    let pseudo = checksum::fold(proto as u64 + (len - l4) as u64 + checksum::sum(addrs));
    let at = l4 + if i.udp { 6 } else { 16 };
    put16(&mut p, at, pseudo);
    let gso_type = match (i.udp, i.v6) {
        (true, _) => offload::GSO_UDP_L4,
        (false, false) => offload::GSO_TCPV4,
        (false, true) => offload::GSO_TCPV6,
    };
    let hdr = VnetHdr {
        flags: offload::F_NEEDS_CSUM,
        gso_type,
        hdr_len: hdrs as u16,
        gso_size: 1 + i.mss % 1500,
        csum_start: l4 as u16,
        csum_offset: (at - l4) as u16,
    };
    (hdr, p)
}

/// A packet with the fields a merge may change zeroed: IPv4 id and header
/// checksum, the TCP checksum (when it is IPv4/IPv6 TCP as far as its
/// header says).
fn normal(p: &[u8]) -> Vec<u8> {
    let mut q = p.to_vec();
    let l4 = match q.first().map(|b| b >> 4) {
        Some(4) if q.len() >= 20 && q[9] == 6 => {
            q[4..6].fill(0);
            q[10..12].fill(0);
            ((q[0] & 15) as usize) * 4
        }
        Some(6) if q.len() >= 40 && q[6] == 6 => 40,
        _ => return q,
    };
    if q.len() >= l4 + 18 {
        q[l4 + 16..l4 + 18].fill(0);
    }
    q
}

fn valid_l4(p: &[u8], udp: bool) -> bool {
    let v6 = p[0] >> 4 == 6;
    let l4 = if v6 { 40 } else { ((p[0] & 15) as usize) * 4 };
    let addrs = if v6 { &p[8..40] } else { &p[12..20] };
    let proto = if udp { 17 } else { 6 };
    let ip_ok = v6 || checksum::fold(checksum::sum(&p[..l4])) == 0xffff;
    ip_ok
        && checksum::fold(
            proto + (p.len() - l4) as u64 + checksum::sum(addrs) + checksum::sum(&p[l4..]),
        ) == 0xffff
}

pub fn run(data: &[u8]) {
    let Ok(i) = Input::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let (hdr, mut pkt) = if i.build {
        build(&i)
    } else {
        (VnetHdr::parse(&i.raw_hdr).unwrap(), i.raw.clone())
    };
    let damaged = !i.damage.is_empty() || !i.build;
    for &(at, x) in &i.damage {
        if let Some(b) = pkt.len().checked_sub(1).map(|n| at as usize % (n + 1)) {
            pkt[b] ^= x;
        }
    }
    let payload_in = pkt.len().saturating_sub(hdr.hdr_len as usize);
    let mut segs: Vec<Vec<u8>> = Vec::new();
    let mut scratch = Vec::new();
    let r = offload::segment(&hdr, &mut pkt, &mut scratch, &mut |s: &mut [u8]| {
        segs.push(s.to_vec())
    });
    if !damaged {
        let n = r.expect("a well-formed super-packet cuts");
        assert_eq!(n, segs.len());
        let mss = hdr.gso_size as usize;
        let mut payload = 0;
        for s in &segs {
            assert!(valid_l4(s, i.udp), "segment checksums");
            let p = s.len() - hdr.hdr_len as usize;
            assert!(p <= mss || segs.len() == 1);
            payload += p;
        }
        assert_eq!(payload, payload_in);
    }

    let mut pushed: Vec<(usize, Vec<u8>)> = Vec::new();
    for (k, s) in segs.into_iter().enumerate() {
        let fate = i.fate.get(k).copied().unwrap_or(0);
        if fate & 1 == 0 {
            pushed.push((1 + (fate as usize >> 1 & 1), s));
        }
    }
    pushed.insert(pushed.len() / 2, (1, i.raw.clone()));
    let mut out: Vec<(usize, VnetHdr, Vec<u8>)> = Vec::new();
    let mut c = Coalescer::new();
    {
        let mut w = |tag: usize, h: &[u8; VNET_HDR_LEN], p: &[u8]| {
            out.push((tag, VnetHdr::parse(h).unwrap(), p.to_vec()))
        };
        for (tag, p) in &pushed {
            c.push(*tag, p, &mut w);
        }
        c.flush(&mut w);
    }
    let mut got: Vec<(usize, Vec<u8>)> = Vec::new();
    for (tag, h, mut p) in out {
        if h.gso_type == offload::GSO_NONE {
            assert_eq!(h, VnetHdr::default());
            got.push((tag, normal(&p)));
            continue;
        }
        assert!(p.len() <= 65535);
        let mut again = Vec::new();
        offload::segment(&h, &mut p, &mut scratch, &mut |s: &mut [u8]| {
            again.push(s.to_vec())
        })
        .expect("a merged write cuts back");
        assert!(again.len() >= 2);
        got.extend(again.into_iter().map(|s| (tag, normal(&s))));
    }
    let mut want: Vec<(usize, Vec<u8>)> = pushed.iter().map(|(t, p)| (*t, normal(p))).collect();
    want.sort();
    got.sort();
    assert!(want == got, "packets lost, added or changed by merging");
}
