use super::*;
use rand::{rngs::SmallRng, Rng, SeedableRng};

fn ip_header_ok(p: &[u8]) -> bool {
    p[0] >> 4 == 6 || fold(sum(&p[..((p[0] & 15) as usize) * 4])) == 0xffff
}

fn l4_of(p: &[u8]) -> usize {
    if p[0] >> 4 == 4 {
        ((p[0] & 15) as usize) * 4
    } else {
        40
    }
}

fn l4_checksum_ok(p: &[u8], proto: u8) -> bool {
    let l4 = l4_of(p);
    fold(pseudo_sum(p, proto, p.len() - l4) + sum(&p[l4..])) == 0xffff
}

/// An IPv4 or IPv6 TCP segment with correct lengths and checksums.
fn tcp_packet(v6: bool, seq: u32, flags: u8, opts: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    if v6 {
        p.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, PROTO_TCP, 64]);
        p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    } else {
        p.extend_from_slice(&[0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, PROTO_TCP, 0, 0]);
        p.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    }
    let l4 = p.len();
    p.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51]); // ports 40000 -> 5201
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&7u32.to_be_bytes()); // ack
    p.push((((20 + opts.len()) / 4) as u8) << 4);
    p.push(flags);
    p.extend_from_slice(&[0x01, 0xf5, 0, 0, 0, 0]); // window, checksum, urgent
    p.extend_from_slice(opts);
    p.extend_from_slice(payload);
    let len = p.len();
    if v6 {
        put16(&mut p, 4, (len - 40) as u16);
    } else {
        put16(&mut p, 2, len as u16);
        ipv4_header_checksum(&mut p, 20);
    }
    transport_checksum(&mut p, l4, PROTO_TCP);
    p
}

fn udp_packet(v6: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = tcp_packet(v6, 0, 0, &[], &[]);
    let l4 = l4_of(&p);
    p.truncate(l4);
    if v6 {
        p[6] = PROTO_UDP;
    } else {
        p[9] = PROTO_UDP;
    }
    p.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0, 0, 0, 0]);
    p.extend_from_slice(payload);
    let len = p.len();
    put16(&mut p, l4 + 4, (len - l4) as u16);
    if v6 {
        put16(&mut p, 4, (len - 40) as u16);
    } else {
        put16(&mut p, 2, len as u16);
        ipv4_header_checksum(&mut p, 20);
    }
    transport_checksum(&mut p, l4, PROTO_UDP);
    p
}

/// What the kernel hands over for TSO: one packet, checksum partial.
fn as_super(mut p: Vec<u8>, proto: u8, gso_size: u16) -> (VnetHdr, Vec<u8>) {
    let l4 = l4_of(&p);
    let at = l4 + if proto == PROTO_TCP { 16 } else { 6 };
    let partial = fold(pseudo_sum(&p, proto, p.len() - l4));
    put16(&mut p, at, partial);
    let v6 = p[0] >> 4 == 6;
    let gso_type = match (proto, v6) {
        (PROTO_TCP, false) => GSO_TCPV4,
        (PROTO_TCP, true) => GSO_TCPV6,
        _ => GSO_UDP_L4,
    };
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type,
        hdr_len: 0,
        gso_size,
        csum_start: l4 as u16,
        csum_offset: (at - l4) as u16,
    };
    (hdr, p)
}

fn run_segment(hdr: &VnetHdr, pkt: &mut [u8]) -> Result<Vec<Vec<u8>>, Malformed> {
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    let n = segment(hdr, pkt, &mut scratch, &mut |s: &mut [u8]| {
        out.push(s.to_vec())
    })?;
    assert_eq!(n, out.len());
    Ok(out)
}

fn payload_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random()).collect()
}

#[test]
fn vnet_header_round_trips() {
    let h = VnetHdr {
        flags: 1,
        gso_type: GSO_TCPV6,
        hdr_len: 74,
        gso_size: 1380,
        csum_start: 40,
        csum_offset: 16,
    };
    assert_eq!(VnetHdr::parse(&h.encode()), Some(h));
    assert_eq!(VnetHdr::parse(&[0; 9]), None);
}

#[test]
fn tso_v4_and_v6_are_cut_into_valid_segments() {
    for v6 in [false, true] {
        let data = payload_bytes(10_000, 2);
        let opts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]; // NOP NOP timestamps
        let first = 1_000_000u32;
        let sup = tcp_packet(
            v6,
            first,
            TCP_ACK | TCP_PSH | TCP_FIN | TCP_CWR,
            &opts,
            &data,
        );
        let (hdr, mut pkt) = as_super(sup, PROTO_TCP, 1388);
        let segs = run_segment(&hdr, &mut pkt).unwrap();
        assert_eq!(segs.len(), 10_000usize.div_ceil(1388));
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let t = parse_tcp(s).expect("a plain TCP segment");
            assert!(ip_header_ok(s), "v6 {v6} seg {i}: IP header checksum");
            assert!(
                l4_checksum_ok(s, PROTO_TCP),
                "v6 {v6} seg {i}: TCP checksum"
            );
            assert_eq!(t.seq, first + (i * 1388) as u32);
            let last = i + 1 == segs.len();
            assert_eq!(
                t.flags & (TCP_FIN | TCP_PSH) != 0,
                last,
                "FIN/PSH on the last only"
            );
            assert_eq!(t.flags & TCP_CWR != 0, i == 0, "CWR on the first only");
            assert!(t.flags & TCP_ACK != 0);
            if !v6 {
                assert_eq!(
                    be16(s, 4),
                    0x1234u16.wrapping_add(i as u16),
                    "IP ids count up"
                );
            }
            assert!(s.len() <= t.hdrs + 1388);
            joined.extend_from_slice(&s[t.hdrs..]);
        }
        assert_eq!(joined, data);
    }
}

#[test]
fn uso_is_cut_into_datagrams() {
    for v6 in [false, true] {
        let data = payload_bytes(5000, 3);
        let (hdr, mut pkt) = as_super(udp_packet(v6, &data), PROTO_UDP, 1200);
        let segs = run_segment(&hdr, &mut pkt).unwrap();
        assert_eq!(segs.len(), 5);
        let mut joined = Vec::new();
        for s in &segs {
            let l4 = l4_of(s);
            assert!(ip_header_ok(s));
            assert!(l4_checksum_ok(s, PROTO_UDP));
            assert_eq!(be16(s, l4 + 4) as usize, s.len() - l4);
            joined.extend_from_slice(&s[l4 + 8..]);
        }
        assert_eq!(joined, data);
    }
}

#[test]
fn partial_checksums_are_completed() {
    for v6 in [false, true] {
        let (mut hdr, mut pkt) = as_super(tcp_packet(v6, 5, TCP_ACK, &[], b"hello"), PROTO_TCP, 0);
        hdr.gso_type = GSO_NONE;
        assert!(!l4_checksum_ok(&pkt, PROTO_TCP));
        let segs = run_segment(&hdr, &mut pkt).unwrap();
        assert_eq!(segs.len(), 1);
        assert!(l4_checksum_ok(&segs[0], PROTO_TCP));
        assert_eq!(segs[0], tcp_packet(v6, 5, TCP_ACK, &[], b"hello"));
        // A super-packet no larger than one segment is passed on whole.
        let (hdr, mut pkt) = as_super(tcp_packet(v6, 5, TCP_ACK, &[], b"hello"), PROTO_TCP, 1400);
        let segs = run_segment(&hdr, &mut pkt).unwrap();
        assert_eq!(segs, vec![tcp_packet(v6, 5, TCP_ACK, &[], b"hello")]);
    }
}

#[test]
fn malformed_reads_are_errors_not_panics() {
    let good = tcp_packet(false, 1, TCP_ACK, &[], &[7; 3000]);
    let (hdr, pkt) = as_super(good, PROTO_TCP, 1000);
    let bad = [
        VnetHdr { gso_size: 0, ..hdr },
        VnetHdr { gso_type: 9, ..hdr },
        VnetHdr {
            gso_type: GSO_TCPV6,
            ..hdr
        },
        VnetHdr {
            csum_start: 24,
            ..hdr
        },
        VnetHdr {
            gso_type: GSO_NONE,
            csum_start: 2999,
            csum_offset: 100,
            ..hdr
        },
    ];
    for h in bad {
        assert!(run_segment(&h, &mut pkt.clone()).is_err(), "{h:?}");
    }
    for cut in [0, 1, 19, 20, 33] {
        assert!(
            run_segment(&hdr, &mut pkt[..cut].to_vec()).is_err(),
            "cut at {cut}"
        );
    }
    // Random headers over random and real packets: any outcome but a panic.
    let mut rng = SmallRng::seed_from_u64(4);
    for i in 0..20_000 {
        let mut raw = [0u8; VNET_HDR_LEN];
        rng.fill(&mut raw[..]);
        let mut h = VnetHdr::parse(&raw).unwrap();
        if i % 2 == 0 {
            h.gso_size %= 2000;
            h.csum_start %= 80;
            h.gso_type = [GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4][rng.random_range(0..4)];
        }
        let len = rng.random_range(0..pkt.len());
        let mut p = if i % 3 == 0 {
            pkt[..len].to_vec()
        } else {
            (0..len).map(|_| rng.random()).collect()
        };
        let _ = run_segment(&h, &mut p);
    }
}

type Out = Vec<(usize, VnetHdr, Vec<u8>)>;

fn push_all(c: &mut Coalescer, pkts: &[(usize, Vec<u8>)]) -> Out {
    let mut out: Out = Vec::new();
    let mut w = |tag: usize, h: &[u8; VNET_HDR_LEN], p: &[u8]| {
        out.push((tag, VnetHdr::parse(h).unwrap(), p.to_vec()))
    };
    for (tag, p) in pkts {
        c.push(*tag, p, &mut w);
    }
    c.flush(&mut w);
    assert!(c.is_empty());
    out
}

fn segments_of(v6: bool, first: u32, n: usize, mss: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let data = payload_bytes(n, first as u64);
    let opts = [1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3];
    let (hdr, mut pkt) = as_super(
        tcp_packet(v6, first, TCP_ACK | TCP_PSH, &opts, &data),
        PROTO_TCP,
        mss as u16,
    );
    (data, run_segment(&hdr, &mut pkt).unwrap())
}

#[test]
fn consecutive_segments_merge_and_cut_back_into_the_same_segments() {
    for v6 in [false, true] {
        let (_, segs) = segments_of(v6, 77, 20_000, 1388);
        let mut c = Coalescer::new();
        let out = push_all(
            &mut c,
            &segs.iter().map(|s| (3, s.clone())).collect::<Vec<_>>(),
        );
        assert_eq!(out.len(), 1, "one super-packet");
        let (tag, hdr, mut merged) = out.into_iter().next().unwrap();
        assert_eq!(tag, 3);
        assert_eq!(hdr.gso_type, if v6 { GSO_TCPV6 } else { GSO_TCPV4 });
        assert_eq!(hdr.gso_size, 1388);
        assert_eq!(hdr.flags, F_NEEDS_CSUM);
        assert!(ip_header_ok(&merged));
        assert_eq!(c.stats.merged_segments, segs.len() as u64);
        // What the kernel would do with it: the very segments we merged.
        let again = run_segment(&hdr, &mut merged).unwrap();
        assert_eq!(again, segs);
    }
}

#[test]
fn flows_gaps_and_bad_checksums_keep_their_order_and_bytes() {
    let (_, a) = segments_of(false, 1000, 8000, 1000);
    let (_, b) = segments_of(true, 5000, 8000, 1000);
    // Interleave two flows; drop a's fourth segment (a gap); spoil b's sixth checksum.
    let mut input = Vec::new();
    for i in 0..8 {
        if i != 3 {
            input.push((1, a[i].clone()));
        }
        let mut s = b[i].clone();
        if i == 5 {
            let l = s.len();
            s[l - 1] ^= 0xff;
        }
        input.push((2, s));
    }
    // A UDP datagram, an ICMP-ish packet and garbage pass through.
    input.insert(3, (1, udp_packet(false, b"dns")));
    input.insert(7, (2, vec![0x45, 1, 2]));
    input.insert(9, (2, vec![]));
    let mut c = Coalescer::new();
    let out = push_all(&mut c, &input);
    // Cut everything back and compare, per tag and flow, with the input.
    let mut got: Vec<(usize, Vec<u8>)> = Vec::new();
    for (tag, h, mut p) in out {
        if h.gso_type == GSO_NONE {
            assert_eq!(h, VnetHdr::default());
            got.push((tag, p));
        } else {
            for s in run_segment(&h, &mut p).unwrap() {
                got.push((tag, s));
            }
        }
    }
    // Flows may overtake each other; within one, the order holds.
    let flow = |p: &[u8]| parse_tcp(p).map(|t| flow_key(p, &t));
    assert_eq!(got.len(), input.len());
    for (tag, p) in &input {
        let key = (*tag, flow(p));
        let want: Vec<_> = input.iter().filter(|(t, q)| (*t, flow(q)) == key).collect();
        let have: Vec<_> = got.iter().filter(|(t, q)| (*t, flow(q)) == key).collect();
        assert!(have == want, "tag {tag}: a flow's packets differ");
    }
    assert!(c.stats.merged_writes >= 3, "{:?}", c.stats);
}

#[test]
fn merges_stay_within_a_packet_and_apart_per_interface() {
    let (_, segs) = segments_of(false, 1, 200_000, 1400);
    let mut c = Coalescer::new();
    let mut input: Vec<(usize, Vec<u8>)> = segs.iter().map(|s| (0, s.clone())).collect();
    // The same flow on another interface is another flow.
    input.insert(5, (9, segs[5].clone()));
    let out = push_all(&mut c, &input);
    let mut n = 0;
    for (tag, h, mut p) in out {
        assert!(p.len() <= MAX_PACKET);
        if tag == 9 {
            assert_eq!(p, segs[5]);
            continue;
        }
        n += if h.gso_type == GSO_NONE {
            1
        } else {
            run_segment(&h, &mut p).unwrap().len()
        };
    }
    assert_eq!(n, segs.len());
}

#[test]
fn discard_forgets_an_interface() {
    let (_, segs) = segments_of(false, 1, 5000, 1000);
    let mut c = Coalescer::new();
    let mut out = 0;
    for s in &segs[..3] {
        c.push(4, s, &mut |_, _, _| out += 1);
    }
    c.discard(4);
    c.flush(&mut |_, _, _| out += 1);
    assert_eq!(out, 0);
}
