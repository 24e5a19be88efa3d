//! The fake-TCP layer: a client and a server state machine joined by a
//! network the input controls (deliver, drop, damage, time), plus raw
//! packets of any shape into both, as IPv4 packets or IPv6 segments.
//! Invariants: no panic; what a side writes parses back to the same
//! header and payload, with a valid checksum; control segments never carry
//! data; the flow tables stay within their bounds; forged segments (raw
//! bytes, or headers of any content with a valid checksum) are delivered
//! by the server only from a flow that proved itself; the frames of a data
//! segment give back its datagram, and frames of any bytes stay in bounds.
use arbitrary::{Arbitrary, Unstructured};
use kcpvpn_tunnel::faketcp::{
    frames, parse_ipv4, parse_tcp, FakeTcp, Header, Input, Side, FRAME_HEADER, IPV6_HEADER,
    MAX_FLOWS, MAX_HEADER,
};
use std::net::SocketAddr;

#[derive(Arbitrary, Debug)]
enum Op {
    /// Control segments (handshake, probes) cross, the first `skip` lost.
    Control {
        to_server: bool,
        skip: u8,
    },
    /// A data segment of `len` bytes crosses (lost if `lose`), damaged at
    /// (position, xor) if given.
    Data {
        to_server: bool,
        len: u16,
        lose: bool,
        damage: Option<(u16, u8)>,
    },
    /// Raw bytes into both sides.
    Raw {
        v6: bool,
        bytes: Vec<u8>,
    },
    /// A header of the attacker's choice, with a valid checksum, into both.
    Forged {
        seq: u32,
        ack: u32,
        flags: u8,
        from_client_addr: bool,
        len: u8,
    },
    Time(u16),
    /// The client opens a new connection from `port`.
    Connect(u16),
    /// Bytes read as a data segment's frames.
    Frames(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Script {
    v6: bool,
    ops: Vec<Op>,
}

fn wire(h: &Header, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; MAX_HEADER];
    let n = h.write(payload, 0, &mut out);
    out.truncate(n);
    out.extend_from_slice(payload);
    out
}

/// A data segment as the transport sends it: one frame.
fn framed(h: &Header, datagram: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; MAX_HEADER + FRAME_HEADER];
    let n = h.write_frame(datagram, 0, &mut out);
    out.truncate(n);
    out.extend_from_slice(datagram);
    out
}

fn parse(
    pkt: &[u8],
    v6: bool,
    src: SocketAddr,
    dst: SocketAddr,
) -> Option<kcpvpn_tunnel::faketcp::Segment> {
    if v6 {
        parse_tcp(src.ip(), dst.ip(), pkt, IPV6_HEADER.min(pkt.len())).ok()
    } else {
        parse_ipv4(pkt).ok()
    }
}

pub fn run(data: &[u8]) {
    let Ok(script) = Script::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let v6 = script.v6;
    let (server, mut client): (SocketAddr, SocketAddr) = if v6 {
        (
            "[fd00::1]:4000".parse().unwrap(),
            "[fd00::2]:40000".parse().unwrap(),
        )
    } else {
        (
            "10.0.0.1:4000".parse().unwrap(),
            "10.0.0.2:40000".parse().unwrap(),
        )
    };
    let mut c = FakeTcp::new(Side::Client, 1400);
    let mut s = FakeTcp::new(Side::Server, 1400);
    let mut now = 0u64;
    c.connect(now, client, server);
    // Flows the server proved through honest segments (the client's addresses).
    let mut proven: Vec<SocketAddr> = Vec::new();
    for op in script.ops.into_iter().take(256) {
        match op {
            Op::Control { to_server, skip } => {
                let (from, to) = if to_server {
                    (&mut c, &mut s)
                } else {
                    (&mut s, &mut c)
                };
                let ctl: Vec<Header> = from.take_control().collect();
                for h in ctl.iter().skip(skip as usize % 4) {
                    let pkt = wire(h, &[]);
                    let seg = parse(&pkt, v6, h.local, h.remote).expect("own segment parses");
                    assert_eq!(
                        (seg.src, seg.dst, seg.seq, seg.ack),
                        (h.local, h.remote, h.seq, h.ack)
                    );
                    assert_eq!(to.input(now, &seg), Input::None, "control carried data");
                }
                if to_server && s.established(&client) && !proven.contains(&client) {
                    proven.push(client);
                }
            }
            Op::Data {
                to_server,
                len,
                lose,
                damage,
            } => {
                let (remote, from_addr) = if to_server {
                    (server, client)
                } else {
                    (client, server)
                };
                let (from, to) = if to_server {
                    (&mut c, &mut s)
                } else {
                    (&mut s, &mut c)
                };
                let payload: Vec<u8> = (0..len % 1500 + 1).map(|i| i as u8).collect();
                let Some(h) = from.data_header(&remote, FRAME_HEADER + payload.len()) else {
                    continue;
                };
                assert_eq!(h.local, from_addr);
                let mut pkt = framed(&h, &payload);
                let seg = parse(&pkt, v6, h.local, h.remote).expect("own segment parses");
                let mut got = Vec::new();
                assert!(frames(&pkt, seg.payload.clone(), &mut got));
                assert_eq!(got.len(), 1);
                assert_eq!(&pkt[got[0].clone()], &payload[..]);
                if lose {
                    continue;
                }
                let damaged = match damage {
                    Some((at, x)) if x != 0 && !pkt.is_empty() => {
                        let at = at as usize % pkt.len();
                        pkt[at] ^= x;
                        true
                    }
                    _ => false,
                };
                let Some(seg) = parse(&pkt, v6, h.local, h.remote) else {
                    continue;
                };
                let r = to.input(now, &seg);
                if to_server && r == Input::Data && !damaged && !proven.contains(&seg.src) {
                    proven.push(seg.src); // its ack carried the cookie
                }
            }
            Op::Raw { v6: raw6, bytes } => {
                let seg = if raw6 {
                    parse_tcp(client.ip(), server.ip(), &bytes, 0).ok()
                } else {
                    parse_ipv4(&bytes).ok()
                };
                if let Some(seg) = seg {
                    let known = proven.contains(&seg.src);
                    if s.input(now, &seg) == Input::Data {
                        assert!(known || s.established(&seg.src), "garbage delivered");
                    }
                    let _ = c.input(now, &seg);
                }
            }
            Op::Forged {
                seq,
                ack,
                flags,
                from_client_addr,
                len,
            } => {
                let src = if from_client_addr {
                    client
                } else {
                    let mut a = client;
                    a.set_port(client.port() ^ 0x5555);
                    a
                };
                let h = Header {
                    local: src,
                    remote: server,
                    seq,
                    ack,
                    flags,
                    window: 1000,
                    syn: None,
                };
                let payload = vec![7u8; len as usize];
                let pkt = wire(&h, &payload);
                if let Some(seg) = parse(&pkt, v6, h.local, h.remote) {
                    let before = s.established(&src);
                    let r = s.input(now, &seg);
                    if !before && r == Input::Data {
                        // Only a guessed cookie (1 in 2^31 per try) gets here.
                        assert!(s.established(&src));
                    }
                }
            }
            Op::Time(ms) => {
                now += ms as u64;
                c.poll(now);
                s.poll(now);
            }
            Op::Connect(port) => {
                if c.may_connect(now) {
                    client.set_port(port.max(1));
                    c.connect(now, client, server);
                }
            }
            Op::Frames(bytes) => {
                let start = bytes.first().map_or(0, |&b| b as usize % 4).min(bytes.len());
                let mut got = Vec::new();
                let whole = frames(&bytes, start..bytes.len(), &mut got);
                let mut at = start;
                for r in &got {
                    assert_eq!(r.start, at + FRAME_HEADER, "frames are back to back");
                    assert!(!r.is_empty() && r.end <= bytes.len());
                    at = r.end;
                }
                assert_eq!(whole, at == bytes.len());
            }
        }
        assert!(s.connections() <= MAX_FLOWS);
        assert!(c.connections() <= 1);
    }
}
