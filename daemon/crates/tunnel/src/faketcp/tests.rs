use super::*;
use rand::{rngs::SmallRng, Rng, SeedableRng};

fn v4(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Builds the packet as the transport sends it: headers then payload.
fn packet(h: &Header, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; MAX_HEADER];
    let n = h.write(payload, 0, &mut out);
    out.truncate(n);
    out.extend_from_slice(payload);
    out
}

/// What a raw socket hands up: IPv4 with the header; IPv6 without it.
fn parse(pkt: &[u8], h: &Header) -> Result<Segment, Bad> {
    match h.remote {
        SocketAddr::V4(_) => parse_ipv4(pkt),
        SocketAddr::V6(_) => parse_tcp(h.local.ip(), h.remote.ip(), pkt, IPV6_HEADER),
    }
}

#[test]
fn written_segments_parse_back_with_valid_checksums() {
    for (local, remote) in [
        (v4("10.0.0.1:4000"), v4("10.0.0.2:55555")),
        (v4("[fd00::1]:4000"), v4("[fd00::2]:1234")),
    ] {
        for syn in [None, Some((1400, Some(WSCALE))), Some((1400, None))] {
            for len in [0usize, 1, 17, 1300] {
                let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let h = Header {
                    local,
                    remote,
                    seq: 0xfffffff0,
                    ack: 42,
                    flags: if syn.is_some() { SYN } else { ACK | PSH },
                    window: 0xffff,
                    syn,
                };
                let pkt = packet(&h, &payload);
                let s = parse(&pkt, &h).unwrap();
                assert_eq!((s.src, s.dst), (local, remote));
                assert_eq!(
                    (s.seq, s.ack, s.flags, s.window),
                    (h.seq, 42, h.flags, 0xffff)
                );
                assert_eq!(&pkt[s.payload.clone()], &payload[..]);
                assert_eq!(s.wscale, syn.and_then(|(_, w)| w));
                // One flipped bit anywhere in TCP is caught by the checksum.
                let ip = if local.is_ipv4() {
                    IPV4_HEADER
                } else {
                    IPV6_HEADER
                };
                for i in (ip..pkt.len()).step_by(7) {
                    let mut bad = pkt.clone();
                    bad[i] ^= 0x10;
                    assert!(parse(&bad, &h).is_err(), "bit flip at {i} went unnoticed");
                }
            }
        }
    }
}

#[test]
fn garbage_is_refused_without_panic() {
    let mut rng = SmallRng::seed_from_u64(3);
    let mut tcp = FakeTcp::new(Side::Server, 1400);
    for _ in 0..20_000 {
        let len = rng.random_range(0..80);
        let mut pkt: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if len > 0 && rng.random_bool(0.5) {
            pkt[0] = 0x45;
        }
        if len > 9 {
            pkt[9] = 6;
        }
        if let Ok(s) = parse_ipv4(&pkt) {
            let _ = tcp.input(0, &s);
        }
        let _ = parse_tcp(
            "::1".parse().unwrap(),
            "::2".parse().unwrap(),
            &pkt,
            len.min(3),
        );
    }
}

/// Moves control segments from one side to the other, through the wire
/// format; returns how many were moved.
fn deliver(now: u64, from: &mut FakeTcp, to: &mut FakeTcp) -> Vec<Segment> {
    let ctl: Vec<Header> = from.take_control().collect();
    ctl.iter()
        .map(|h| {
            let pkt = packet(h, &[]);
            let s = parse(&pkt, h).unwrap();
            assert_eq!(to.input(now, &s), Input::None);
            s
        })
        .collect()
}

fn send_data(
    now: u64,
    from: &mut FakeTcp,
    to: &mut FakeTcp,
    remote: SocketAddr,
    payload: &[u8],
) -> (Segment, Input) {
    let h = from
        .data_header(&remote, payload.len())
        .expect("established");
    let pkt = packet(&h, payload);
    let s = parse(&pkt, &h).unwrap();
    let r = to.input(now, &s);
    (s, r)
}

const SERVER: &str = "10.0.0.1:4000";
const CLIENT: &str = "10.0.0.2:40001";

fn handshake() -> (FakeTcp, FakeTcp) {
    let mut c = FakeTcp::new(Side::Client, 1400);
    let mut s = FakeTcp::new(Side::Server, 1400);
    c.connect(0, v4(CLIENT), v4(SERVER));
    let syn = deliver(0, &mut c, &mut s);
    assert_eq!(syn.len(), 1);
    assert_eq!(syn[0].flags, SYN);
    assert_eq!(syn[0].wscale, Some(WSCALE));
    assert_eq!(s.connections(), 0, "no state before the peer proves itself");
    let synack = deliver(1, &mut s, &mut c);
    assert_eq!(synack[0].flags, SYN | ACK);
    assert_eq!(synack[0].ack, syn[0].seq.wrapping_add(1));
    assert!(c.established(&v4(SERVER)));
    let ack = deliver(2, &mut c, &mut s);
    assert_eq!(ack[0].flags, ACK);
    assert_eq!(ack[0].seq, syn[0].seq.wrapping_add(1));
    assert_eq!(ack[0].ack, synack[0].seq.wrapping_add(1));
    assert_eq!(s.connections(), 1);
    assert!(s.established(&v4(CLIENT)));
    (c, s)
}

#[test]
fn sequence_and_ack_numbers_advance_with_the_bytes() {
    let (mut c, mut s) = handshake();
    let (a, r) = send_data(3, &mut c, &mut s, v4(SERVER), &[1; 100]);
    assert_eq!(r, Input::Data);
    let (b, r) = send_data(4, &mut c, &mut s, v4(SERVER), &[2; 50]);
    assert_eq!(r, Input::Data);
    assert_eq!(b.seq, a.seq.wrapping_add(100));
    assert_eq!(b.flags, ACK | PSH);
    let (d, _) = send_data(5, &mut s, &mut c, v4(CLIENT), &[3; 10]);
    assert_eq!(
        d.ack,
        b.seq.wrapping_add(50),
        "the server acknowledges all it got"
    );
    let (e, _) = send_data(6, &mut c, &mut s, v4(SERVER), &[4; 10]);
    assert_eq!(e.ack, d.seq.wrapping_add(10));
    assert_eq!(e.seq, b.seq.wrapping_add(50));
}

#[test]
fn a_lost_segment_does_not_stall_the_acknowledgements() {
    let (mut c, mut s) = handshake();
    let lost = c.data_header(&v4(SERVER), 100).unwrap();
    let (b, _) = send_data(3, &mut c, &mut s, v4(SERVER), &[2; 100]);
    assert_eq!(b.seq, lost.seq.wrapping_add(100));
    let (d, _) = send_data(4, &mut s, &mut c, v4(CLIENT), &[3; 10]);
    assert_eq!(d.ack, b.seq.wrapping_add(100));
}

#[test]
fn a_forged_ack_creates_no_flow() {
    let mut s = FakeTcp::new(Side::Server, 1400);
    let h = Header {
        local: v4(CLIENT),
        remote: v4(SERVER),
        seq: 1000,
        ack: 12345,
        flags: ACK | PSH,
        window: 100,
        syn: None,
    };
    let pkt = packet(&h, b"hello");
    assert_eq!(s.input(0, &parse_ipv4(&pkt).unwrap()), Input::None);
    assert_eq!(s.connections(), 0);
    assert_eq!(s.stats.stray, 1);
}

#[test]
fn the_first_data_segment_proves_the_peer_when_the_last_ack_was_lost() {
    let mut c = FakeTcp::new(Side::Client, 1400);
    let mut s = FakeTcp::new(Side::Server, 1400);
    c.connect(0, v4(CLIENT), v4(SERVER));
    deliver(0, &mut c, &mut s);
    deliver(1, &mut s, &mut c);
    let _lost_ack: Vec<_> = c.take_control().collect();
    let (_, r) = send_data(2, &mut c, &mut s, v4(SERVER), b"first");
    assert_eq!(r, Input::Data);
    assert!(s.established(&v4(CLIENT)));
}

#[test]
fn the_client_probes_when_quiet_and_reconnects_when_dead() {
    let (mut c, mut s) = handshake();
    c.poll(PROBE_AFTER_MS + 10);
    let probe = deliver(PROBE_AFTER_MS + 10, &mut c, &mut s);
    assert_eq!(probe.len(), 1);
    // The server answers the probe with an ACK, which keeps the client alive.
    let answer = deliver(PROBE_AFTER_MS + 11, &mut s, &mut c);
    assert_eq!(answer.len(), 1);
    assert_eq!(answer[0].flags, ACK);
    c.poll(PROBE_AFTER_MS + 20);
    assert!(c.established(&v4(SERVER)));
    // Then silence: the connection is given up; a new one may open at once.
    let t = PROBE_AFTER_MS + 11 + DEAD_AFTER_MS;
    c.poll(t);
    assert!(!c.connecting(&v4(SERVER)));
    assert!(c.may_connect(t));
    assert_eq!(c.stats.reconnects, 1);
    c.connect(t, v4("10.0.0.2:40002"), v4(SERVER));
    deliver(t, &mut c, &mut s);
    deliver(t, &mut s, &mut c);
    deliver(t, &mut c, &mut s);
    assert!(s.established(&v4("10.0.0.2:40002")));
    let (_, r) = send_data(t, &mut c, &mut s, v4(SERVER), b"again");
    assert_eq!(r, Input::Data);
}

#[test]
fn a_reset_ends_the_client_connection() {
    let (mut c, _s) = handshake();
    let (seq, ack) = {
        let h = c.data_header(&v4(SERVER), 0).unwrap();
        (h.ack, h.seq)
    };
    let rst = Header {
        local: v4(SERVER),
        remote: v4(CLIENT),
        seq,
        ack,
        flags: RST,
        window: 0,
        syn: None,
    };
    let pkt = packet(&rst, &[]);
    c.input(10, &parse_ipv4(&pkt).unwrap());
    assert!(!c.connecting(&v4(SERVER)));
    assert!(!c.may_connect(10));
    assert!(c.may_connect(10 + SYN_RETRY_MS));
}

#[test]
fn syns_are_retransmitted() {
    let mut c = FakeTcp::new(Side::Client, 1400);
    c.connect(0, v4(CLIENT), v4(SERVER));
    assert_eq!(c.take_control().count(), 1);
    c.poll(SYN_RETRY_MS);
    let again: Vec<_> = c.take_control().collect();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].flags, SYN);
    assert_eq!(c.stats.syns_out, 2);
}

#[test]
fn ipv6_handshake_and_data() {
    let (srv, cli) = (v4("[fd00::1]:4000"), v4("[fd00::2]:40001"));
    let mut c = FakeTcp::new(Side::Client, 1400);
    let mut s = FakeTcp::new(Side::Server, 1400);
    c.connect(0, cli, srv);
    deliver(0, &mut c, &mut s);
    deliver(0, &mut s, &mut c);
    deliver(0, &mut c, &mut s);
    let (_, r) = send_data(1, &mut s, &mut c, cli, b"over v6");
    assert_eq!(r, Input::Data);
}

#[test]
fn frames_split_a_merged_payload_and_stop_at_a_malformed_one() {
    let mut buf = vec![9u8; 3]; // bytes before the payload
    for (len, fill) in [(5usize, 1u8), (5, 2), (3, 3)] {
        buf.extend_from_slice(&(len as u16).to_be_bytes());
        buf.extend(std::iter::repeat_n(fill, len));
    }
    let mut out = Vec::new();
    assert!(frames(&buf, 3..buf.len(), &mut out));
    let got: Vec<&[u8]> = out.iter().map(|r| &buf[r.clone()]).collect();
    assert_eq!(got, [&[1u8; 5][..], &[2; 5], &[3; 3]]);
    // A length past the end, or zero: what came before is kept.
    for bad in [[0u8, 9], [0, 0]] {
        let mut b = buf.clone();
        b.extend_from_slice(&bad);
        b.push(4);
        out.clear();
        assert!(!frames(&b, 3..b.len(), &mut out));
        assert_eq!(out.len(), 3);
    }
    // A lone byte of a length, and a range beyond the buffer.
    out.clear();
    assert!(!frames(&[1u8], 0..1, &mut out));
    assert!(!frames(&buf, 0..buf.len() + 1, &mut out));
    assert!(out.is_empty());
}

/// What the transport's raw path sends: headers, the frame's length, the
/// datagram.
fn framed_packet(h: &Header, datagram: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; MAX_HEADER + FRAME_HEADER];
    let n = h.write_frame(datagram, 0, &mut out);
    out.truncate(n);
    out.extend_from_slice(datagram);
    out
}

#[test]
fn a_framed_segment_carries_its_datagram_under_a_valid_checksum() {
    for (local, remote) in [
        (v4("10.0.0.1:4000"), v4("10.0.0.2:55555")),
        (v4("[fd00::1]:4000"), v4("[fd00::2]:1234")),
    ] {
        let h = Header {
            local,
            remote,
            seq: 7,
            ack: 9,
            flags: ACK | PSH,
            window: 0xffff,
            syn: None,
        };
        let d: Vec<u8> = (0..1201).map(|i| (i * 7) as u8).collect();
        let pkt = framed_packet(&h, &d);
        let s = parse(&pkt, &h).unwrap();
        assert!(!s.offloaded);
        assert_eq!(s.payload.len(), FRAME_HEADER + d.len());
        let mut out = Vec::new();
        assert!(frames(&pkt, s.payload, &mut out));
        assert_eq!(out.len(), 1);
        assert_eq!(&pkt[out[0].clone()], &d[..]);
        let mut bad = pkt.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(parse(&bad, &h), Err(Bad::Checksum));
    }
}

/// A run written for the kernel to segment, as a receiver gets it when it
/// crossed virtual links whole (or GRO merged it back): one packet whose
/// checksum field holds only the pseudo-header's sum. It parses as
/// offloaded, its frames give back every datagram, and the IPv4 header is
/// complete (nothing fills it in on the packet path).
#[test]
fn an_offloaded_run_parses_whole_into_its_datagrams() {
    for (local, remote) in [
        (v4("10.0.0.1:4000"), v4("10.0.0.2:55555")),
        (v4("[fd00::1]:4000"), v4("[fd00::2]:1234")),
    ] {
        let datagrams: Vec<Vec<u8>> = [700usize, 700, 700, 123]
            .iter()
            .enumerate()
            .map(|(k, &n)| vec![k as u8 + 1; n])
            .collect();
        let bytes: usize = datagrams.iter().map(|d| FRAME_HEADER + d.len()).sum();
        let h = Header {
            local,
            remote,
            seq: 0xffff_fff0,
            ack: 1,
            flags: ACK | PSH,
            window: 0xffff,
            syn: None,
        };
        let mut pkt = vec![0u8; MAX_HEADER];
        let n = h.write_offloaded(bytes, 0, 0x1234, &mut pkt);
        pkt.truncate(n);
        for d in &datagrams {
            pkt.extend_from_slice(&(d.len() as u16).to_be_bytes());
            pkt.extend_from_slice(d);
        }
        if local.is_ipv4() {
            assert_eq!(
                fold(sum(&pkt[..IPV4_HEADER])),
                0xffff,
                "IPv4 header checksum"
            );
            assert_eq!(&pkt[4..6], &0x1234u16.to_be_bytes());
        }
        let s = parse(&pkt, &h).unwrap();
        assert!(s.offloaded);
        assert_eq!(s.seq, h.seq);
        let mut out = Vec::new();
        assert!(frames(&pkt, s.payload.clone(), &mut out));
        let got: Vec<Vec<u8>> = out.iter().map(|r| pkt[r.clone()].to_vec()).collect();
        assert_eq!(got, datagrams);
        // The receiving side moves its acknowledgement past the whole run.
        let mut c = FakeTcp::new(Side::Client, 1400);
        c.connect(0, remote, local);
        let syn = c.take_control().next().unwrap();
        let synack = Header {
            local,
            remote,
            seq: h.seq.wrapping_sub(1),
            ack: syn.seq.wrapping_add(1),
            flags: SYN | ACK,
            window: 0xffff,
            syn: Some((1400, Some(WSCALE))),
        };
        let p = packet(&synack, &[]);
        assert_eq!(c.input(1, &parse(&p, &synack).unwrap()), Input::None);
        assert_eq!(c.input(2, &s), Input::Data);
        let next = c.data_header(&local, 10).unwrap();
        assert_eq!(next.ack, h.seq.wrapping_add(bytes as u32));
        // A checksum field that is neither valid nor the offload's is refused.
        let ip = if local.is_ipv4() {
            IPV4_HEADER
        } else {
            IPV6_HEADER
        };
        let mut bad = pkt.clone();
        bad[ip + 17] ^= 0x40;
        assert_eq!(parse(&bad, &h), Err(Bad::Checksum));
    }
}
