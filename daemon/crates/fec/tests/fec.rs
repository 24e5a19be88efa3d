//! Behaviour of the encoder and decoder together: delivery exactly once,
//! recovery within the parity budget, partial groups, wrap-around,
//! duplicates, stale and malformed shards.
use kcpvpn_fec::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};

/// A datagram that names itself: 4-byte id, then a pattern of `len - 4` bytes.
fn datagram(id: u32, len: usize) -> Vec<u8> {
    let mut v = id.to_le_bytes().to_vec();
    v.extend((0..len.saturating_sub(4)).map(|j| (id as usize * 7 + j * 13) as u8));
    v
}

fn seqid(shard: &[u8]) -> u32 {
    u32::from_le_bytes(shard[..4].try_into().unwrap())
}

fn encode_all(enc: &mut FecEncoder, ds: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for d in ds {
        enc.encode(d, &mut |s| out.push(s.to_vec()));
    }
    out
}

/// Feeds shards, returns what came out (in order) and whether errors occurred.
fn feed(dec: &mut FecDecoder, shards: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    for s in shards {
        dec.input(s, &mut |d| got.push(d.to_vec()))
            .expect("well-formed shard refused");
    }
    got
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

#[test]
fn wire_format_is_as_documented() {
    let mut enc = FecEncoder::new(2, 1, 100);
    let mut shards = Vec::new();
    enc.encode(b"abc", &mut |s| shards.push(s.to_vec()));
    assert_eq!(
        shards,
        vec![vec![0, 0, 0, 0, 0xF1, 0, 3, 0, b'a', b'b', b'c']]
    );
    assert!(enc.has_partial());
    enc.encode(b"de", &mut |s| shards.push(s.to_vec()));
    assert!(!enc.has_partial());
    assert_eq!(shards.len(), 3);
    assert_eq!(shards[1], vec![1, 0, 0, 0, 0xF1, 0, 2, 0, b'd', b'e']);
    // Parity: seqid 2, kind 0xF2, count 2, region as long as the longest
    // data region (2 + 3 bytes).
    assert_eq!(&shards[2][..6], &[2, 0, 0, 0, 0xF2, 2]);
    assert_eq!(shards[2].len(), HEADER_LEN + SIZE_LEN + 3);
    // Known answer pinning the code of docs/protocol.md section 4: for 2+1
    // the parity row is [3, 2], so parity = 3·region0 + 2·region1 in
    // GF(2^8) mod 0x11D, with region0 = 03 00 'a' 'b' 'c' and
    // region1 = 02 00 'd' 'e' 00 (zero-padded).
    assert_eq!(&shards[2][6..], &[0x01, 0x00, b'k', b'l', 0xA5]);
    // Next group starts at seqid 3.
    enc.encode(b"f", &mut |s| shards.push(s.to_vec()));
    assert_eq!(seqid(&shards[3]), 3);
    assert_eq!(OVERHEAD, 8);
}

#[test]
fn parity_alone_rebuilds_a_lost_datagram_of_the_right_length() {
    let mut enc = FecEncoder::new(2, 1, 100);
    let shards = encode_all(&mut enc, &[b"abc".to_vec(), b"de".to_vec()]);
    let mut dec = FecDecoder::new(2, 1, 8);
    // Lose the short one: the rebuilt region is padded, the size field trims it.
    assert_eq!(
        feed(&mut dec, &[shards[0].clone(), shards[2].clone()]),
        vec![b"abc".to_vec(), b"de".to_vec()]
    );
    assert_eq!(dec.stats().recovered, 1);
}

#[test]
fn every_loss_pattern_within_parity_recovers_everything_once() {
    let (ds, ps) = (4usize, 2usize);
    let n = ds + ps;
    let data: Vec<Vec<u8>> = (0..ds as u32)
        .map(|i| datagram(i, 10 + 37 * i as usize))
        .collect();
    let shards = encode_all(&mut FecEncoder::new(ds, ps, 1500), &data);
    assert_eq!(shards.len(), n);
    for mask in 0u32..(1 << n) {
        let lost = mask.count_ones() as usize;
        let kept: Vec<Vec<u8>> = (0..n)
            .filter(|i| mask & (1 << i) == 0)
            .map(|i| shards[i].clone())
            .collect();
        let mut dec = FecDecoder::new(ds, ps, 4);
        let got = feed(&mut dec, &kept);
        let received: Vec<Vec<u8>> = (0..ds)
            .filter(|i| mask & (1 << i) == 0)
            .map(|i| data[i].clone())
            .collect();
        if lost <= ps {
            assert_eq!(sorted(got), sorted(data.clone()), "loss mask {mask:#b}");
        } else {
            // Too many losses: exactly the data that arrived, nothing invented.
            assert_eq!(sorted(got), sorted(received), "loss mask {mask:#b}");
        }
    }
}

#[test]
fn nothing_lost_means_parity_is_stale_and_nothing_recovered() {
    let data: Vec<Vec<u8>> = (0..10).map(|i| datagram(i, 100)).collect();
    let shards = encode_all(&mut FecEncoder::new(10, 3, 1500), &data);
    let mut dec = FecDecoder::new(10, 3, 8);
    assert_eq!(feed(&mut dec, &shards), data);
    let s = dec.stats();
    assert_eq!(
        (
            s.data_received,
            s.parity_received,
            s.recovered,
            s.stale,
            s.delivered
        ),
        (10, 3, 0, 3, 10)
    );
}

#[test]
fn partial_group_recovers_its_one_datagram_from_parity() {
    let mut enc = FecEncoder::new(10, 3, 1500);
    let mut shards = Vec::new();
    enc.encode(&datagram(7, 50), &mut |s| shards.push(s.to_vec()));
    enc.flush_partial(&mut |s| shards.push(s.to_vec()));
    assert!(!enc.has_partial());
    // Before any loss report a lone datagram is protected as if 10% were
    // lost: with 3 parity shards all 4 are lost 0.01% of the time (with 2,
    // 0.1%: above the 0.02% allowed).
    assert_eq!(shards.len(), 4);
    for p in &shards[1..] {
        assert_eq!(
            p[4..6],
            [0xF2, 1],
            "parity must say the group had 1 data shard"
        );
    }
    // Any one of the 4 shards is enough.
    for keep in 0..4 {
        let mut dec = FecDecoder::new(10, 3, 8);
        assert_eq!(
            feed(&mut dec, &shards[keep..keep + 1]),
            vec![datagram(7, 50)],
            "kept shard {keep}"
        );
        // The others are then stale, not delivered again.
        let again = feed(&mut dec, &shards);
        assert!(again.is_empty());
    }
    // The next datagram starts a new group.
    let mut next = Vec::new();
    enc.encode(b"x", &mut |s| next.push(s.to_vec()));
    assert_eq!(seqid(&next[0]), 13);
    assert_eq!(enc.stats().partial_groups, 1);
}

#[test]
fn partial_group_of_three_recovers_three_losses() {
    let mut enc = FecEncoder::new(10, 3, 1500);
    let data: Vec<Vec<u8>> = (0..3).map(|i| datagram(i, 20 + i as usize * 300)).collect();
    let mut shards = encode_all(&mut enc, &data);
    enc.flush_partial(&mut |s| shards.push(s.to_vec()));
    assert_eq!(shards.len(), 6);
    let mut dec = FecDecoder::new(10, 3, 8);
    assert_eq!(sorted(feed(&mut dec, &shards[3..])), sorted(data));
    assert_eq!(dec.stats().recovered, 3);
}

#[test]
fn flush_without_partial_group_sends_nothing() {
    let mut enc = FecEncoder::new(2, 1, 100);
    let mut n = 0;
    enc.flush_partial(&mut |_| n += 1);
    enc.encode(b"a", &mut |_| n += 1);
    enc.encode(b"b", &mut |_| n += 1);
    enc.flush_partial(&mut |_| n += 1);
    assert_eq!(n, 3);
}

#[test]
fn seqids_wrap_and_the_decoder_follows() {
    let (ds, ps) = (10usize, 3usize);
    let groups = group_count(ds + ps);
    // 2^32 / 13 groups, seqids below the largest multiple of 13 in u32.
    assert_eq!(groups, 330_382_099);
    let mut enc = FecEncoder::starting_at_group(ds, ps, 1500, groups - 2).unwrap();
    let data: Vec<Vec<u8>> = (0..50).map(|i| datagram(i, 64 + i as usize)).collect();
    let shards = encode_all(&mut enc, &data);
    let ids: Vec<u32> = shards.iter().map(|s| seqid(s)).collect();
    assert_eq!(ids[0], (groups - 2) * 13);
    assert_eq!(ids[25], groups * 13 - 1, "last seqid before the wrap");
    assert_eq!(ids[26], 0);
    // Lose one data shard in every group, across the wrap.
    let kept: Vec<Vec<u8>> = shards
        .iter()
        .filter(|s| seqid(s) % 13 != 4)
        .cloned()
        .collect();
    let mut dec = FecDecoder::new(ds, ps, 4);
    let got = feed(&mut dec, &kept);
    assert_eq!(got.len(), 50);
    assert_eq!(sorted(got), sorted(data));
    assert_eq!(dec.stats().recovered, 5);
    // The 2 parity shards each group no longer needed after its rebuild.
    assert_eq!(dec.stats().stale, 5 * 2);
}

#[test]
fn duplicates_are_counted_not_delivered() {
    let data: Vec<Vec<u8>> = (0..4).map(|i| datagram(i, 30)).collect();
    let shards = encode_all(&mut FecEncoder::new(4, 2, 1500), &data);
    let mut dec = FecDecoder::new(4, 2, 8);
    let mut got = feed(&mut dec, &shards[..2]);
    got.extend(feed(&mut dec, &shards[..2]));
    assert_eq!(got, data[..2].to_vec());
    assert_eq!(dec.stats().duplicates, 2);
    got.extend(feed(&mut dec, &shards[4..]));
    assert_eq!(sorted(got), sorted(data));
    // Now complete: data shards that were rebuilt are stale if they arrive,
    // shards already seen are duplicates.
    feed(&mut dec, &shards);
    let s = dec.stats();
    assert_eq!(
        (s.duplicates, s.stale, s.recovered, s.delivered),
        (2 + 4, 2, 2, 4)
    );
}

#[test]
fn old_groups_are_evicted_and_their_shards_become_stale() {
    let (ds, ps) = (2usize, 1usize);
    let data: Vec<Vec<u8>> = (0..20).map(|i| datagram(i, 16)).collect();
    let shards = encode_all(&mut FecEncoder::new(ds, ps, 1500), &data);
    let mut dec = FecDecoder::new(ds, ps, 3);
    // Group 0: only its first data shard arrives now.
    let mut got = feed(&mut dec, &shards[..1]);
    // Groups 1..=3 arrive whole: group 3 pushes group 0 out of the 3-group window.
    got.extend(feed(&mut dec, &shards[3..12]));
    assert_eq!(dec.stats().evicted_incomplete, 1);
    // Group 0's other shards are now too old.
    got.extend(feed(&mut dec, &shards[1..3]));
    assert_eq!(
        dec.stats().stale,
        2 + 3,
        "2 late shards of group 0 + 3 unneeded parity"
    );
    assert_eq!(got, [&data[..1], &data[2..8]].concat());
}

#[test]
fn reordered_groups_within_the_window_are_all_delivered() {
    let data: Vec<Vec<u8>> = (0..30).map(|i| datagram(i, 100)).collect();
    let shards = encode_all(&mut FecEncoder::new(10, 3, 1500), &data);
    // Newest group first, then the older ones, each missing a shard.
    let mut order: Vec<Vec<u8>> = Vec::new();
    for g in (0..3).rev() {
        order.extend(shards[g * 13 + 1..(g + 1) * 13].iter().cloned());
    }
    let mut dec = FecDecoder::new(10, 3, 4);
    assert_eq!(sorted(feed(&mut dec, &order)), sorted(data));
}

#[test]
fn oversize_datagrams_are_dropped_and_counted() {
    let mut enc = FecEncoder::new(2, 1, 10);
    let mut n = 0;
    enc.encode(&[0; 11], &mut |_| n += 1);
    assert_eq!((n, enc.stats().oversize, enc.has_partial()), (0, 1, false));
    enc.encode(&[0; 10], &mut |_| n += 1);
    assert_eq!(n, 1);
}

#[test]
fn empty_datagrams_round_trip() {
    let data = vec![vec![], b"x".to_vec()];
    let shards = encode_all(&mut FecEncoder::new(2, 1, 10), &data);
    let mut dec = FecDecoder::new(2, 1, 2);
    assert_eq!(feed(&mut dec, &shards[1..]), vec![b"x".to_vec(), vec![]]);
}

#[test]
fn bad_parameters_are_refused_with_a_reason() {
    for (d, p) in [(0, 3), (10, 0), (0, 0), (200, 57), (256, 1)] {
        let e = FecEncoder::try_new(d, p, 1500)
            .err()
            .expect("accepted bad counts");
        assert_eq!(e, FecError::InvalidShardCounts { data: d, parity: p });
        assert!(e.to_string().contains("turn FEC off"));
        assert!(FecDecoder::try_new(d, p, 8).is_err());
    }
    assert!(FecEncoder::try_new(200, 56, 1500).is_ok());
    assert_eq!(
        FecEncoder::try_new(10, 3, 65536).err(),
        Some(FecError::InvalidMaxDatagram(65536))
    );
    assert_eq!(
        FecDecoder::try_new(10, 3, 0).err(),
        Some(FecError::InvalidMaxOpenGroups(0))
    );
    assert!(std::panic::catch_unwind(|| FecEncoder::new(0, 3, 1500)).is_err());
}

#[test]
fn malformed_shards_are_errors_and_counted() {
    let data: Vec<Vec<u8>> = (0..3).map(|i| datagram(i, 40)).collect();
    let good = encode_all(&mut FecEncoder::new(3, 2, 1500), &data);
    let (d0, p0) = (good[0].clone(), good[3].clone());
    let with = |base: &Vec<u8>, f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = base.clone();
        f(&mut v);
        v
    };
    let cases: Vec<(Vec<u8>, FecError)> = vec![
        (vec![1, 2, 3], FecError::Truncated(3)),
        (with(&d0, &|v| v.truncate(7)), FecError::Truncated(7)),
        (
            with(&d0, &|v| v[4] = 0x51),
            FecError::BadType {
                kind: 0x51,
                count: 0,
            },
        ),
        (
            with(&d0, &|v| v[5] = 1),
            FecError::BadType {
                kind: 0xF1,
                count: 1,
            },
        ),
        (
            with(&d0, &|v| v[6] = 41),
            FecError::SizeMismatch {
                size: 41,
                carried: 40,
            },
        ),
        (
            with(&d0, &|v| v.push(0)),
            FecError::SizeMismatch {
                size: 40,
                carried: 41,
            },
        ),
        (
            with(&d0, &|v| v[..4].copy_from_slice(&3u32.to_le_bytes())),
            FecError::WrongPosition { index: 3 },
        ),
        (
            with(&p0, &|v| v[..4].copy_from_slice(&0u32.to_le_bytes())),
            FecError::WrongPosition { index: 0 },
        ),
        (
            with(&p0, &|v| v[5] = 0),
            FecError::BadDataCount {
                count: 0,
                data_shards: 3,
            },
        ),
        (
            with(&p0, &|v| v[5] = 4),
            FecError::BadDataCount {
                count: 4,
                data_shards: 3,
            },
        ),
        (
            with(&d0, &|v| v[..4].copy_from_slice(&u32::MAX.to_le_bytes())),
            FecError::SeqidOutOfRange(u32::MAX),
        ),
    ];
    let mut dec = FecDecoder::new(3, 2, 8);
    for (i, (shard, want)) in cases.iter().enumerate() {
        let r = dec.input(shard, &mut |_| {
            panic!("malformed shard delivered something")
        });
        assert_eq!(r.as_ref().err(), Some(want), "case {i}");
        assert!(!want.to_string().is_empty());
    }
    assert_eq!(dec.stats().malformed, cases.len() as u64);
    // None of that disturbed the real group.
    assert_eq!(sorted(feed(&mut dec, &good[1..])), sorted(data));
}

#[test]
fn parity_contradicting_its_group_is_refused() {
    let data: Vec<Vec<u8>> = (0..3).map(|i| datagram(i, 40)).collect();
    let good = encode_all(&mut FecEncoder::new(3, 2, 1500), &data);
    let mut dec = FecDecoder::new(3, 2, 8);
    feed(&mut dec, &good[2..4]);
    // Claims the group had 2 data shards, but data shard 2 arrived.
    let mut p = good[4].clone();
    p[5] = 2;
    assert!(matches!(
        dec.input(&p, &mut |_| {}),
        Err(FecError::Inconsistent(_))
    ));
    // Different length from the first parity.
    let mut p = good[4].clone();
    p.push(0);
    assert!(matches!(
        dec.input(&p, &mut |_| {}),
        Err(FecError::Inconsistent(_))
    ));
    assert_eq!(dec.stats().malformed, 2);
    // The genuine second parity completes the group: data 0 and 1 rebuilt.
    assert_eq!(
        sorted(feed(&mut dec, &good[4..])),
        sorted(data[..2].to_vec())
    );
}

/// What the encoder is asked to do: send a datagram of some length, or
/// flush a partial group.
#[derive(Clone, Debug)]
enum Op {
    Send(usize),
    Flush,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![8 => (4usize..400).prop_map(Op::Send), 1 => Just(Op::Flush)],
        1..120,
    )
}

struct Run {
    sent: Vec<Vec<u8>>,
    /// Shards grouped by group id, in the order of sending.
    groups: BTreeMap<u32, Vec<Vec<u8>>>,
    order: Vec<u32>,
}

fn run(ds: usize, ps: usize, first_group: u32, ops: &[Op]) -> Run {
    let mut enc = FecEncoder::starting_at_group(ds, ps, 1500, first_group).unwrap();
    let n = (ds + ps) as u32;
    let mut sent = Vec::new();
    let mut shards = Vec::new();
    for op in ops {
        match op {
            Op::Send(len) => {
                let d = datagram(sent.len() as u32, *len);
                enc.encode(&d, &mut |s| shards.push(s.to_vec()));
                sent.push(d);
            }
            Op::Flush => enc.flush_partial(&mut |s| shards.push(s.to_vec())),
        }
    }
    enc.flush_partial(&mut |s| shards.push(s.to_vec()));
    let mut groups: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
    let mut order = Vec::new();
    for s in shards {
        let g = seqid(&s) / n;
        if !groups.contains_key(&g) {
            order.push(g);
        }
        groups.entry(g).or_default().push(s);
    }
    Run {
        sent,
        groups,
        order,
    }
}

fn counts(v: &[Vec<u8>]) -> HashMap<Vec<u8>, usize> {
    let mut m = HashMap::new();
    for x in v {
        *m.entry(x.clone()).or_insert(0) += 1;
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// At most as many shards lost per group as it has parity, shards
    /// reordered within neighbouring groups and some duplicated: every
    /// datagram comes out exactly once and intact.
    #[test]
    fn losses_within_parity_deliver_everything_once(
        ds in 1usize..12, ps in 1usize..5, near_wrap in any::<bool>(),
        ops in ops(), seed in any::<u64>(),
    ) {
        let groups = group_count(ds + ps);
        let first = if near_wrap { groups - 3 } else { 0 };
        let r = run(ds, ps, first, &ops);
        let mut rng = seed;
        let mut next = || { rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (rng >> 33) as usize };
        let mut wire: Vec<Vec<u8>> = Vec::new();
        for g in &r.order {
            let mut shards = r.groups[g].clone();
            // Groups closed early carry only the parity their size needs.
            let parity_here = shards.iter().filter(|s| is_parity(s)).count();
            let lose = next() % (parity_here + 1);
            for _ in 0..lose.min(shards.len()) {
                let i = next() % shards.len();
                shards.remove(i);
            }
            if next() % 4 == 0 && !shards.is_empty() {
                let i = next() % shards.len();
                shards.push(shards[i].clone());
            }
            wire.extend(shards);
        }
        // Local reordering: each datagram moves at most 20 places. (Chained
        // swaps let one travel without bound, past the decoder's 64 open
        // groups, where a shard that late is rightly dropped.)
        let mut keyed: Vec<(usize, Vec<u8>)> =
            wire.into_iter().enumerate().map(|(i, w)| (i + next() % 20, w)).collect();
        keyed.sort_by_key(|k| k.0);
        let wire: Vec<Vec<u8>> = keyed.into_iter().map(|k| k.1).collect();
        let mut dec = FecDecoder::new(ds, ps, 64);
        let got = feed(&mut dec, &wire);
        prop_assert_eq!(got.len(), r.sent.len());
        prop_assert_eq!(counts(&got), counts(&r.sent));
        prop_assert_eq!(dec.stats().malformed, 0);
        prop_assert_eq!(dec.stats().evicted_incomplete, 0);
    }

    /// Any losses at all: what comes out was sent, at most once, and every
    /// data shard that arrived was delivered.
    #[test]
    fn heavy_losses_never_deliver_wrong_or_twice(
        ds in 1usize..12, ps in 1usize..5, ops in ops(), loss in 0u32..100, seed in any::<u64>(),
    ) {
        let r = run(ds, ps, 0, &ops);
        let n = (ds + ps) as u32;
        let mut rng = seed;
        let mut next = || { rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (rng >> 33) as u32 };
        let mut wire = Vec::new();
        let mut arrived_data = Vec::new();
        for g in &r.order {
            for s in &r.groups[g] {
                if next() % 100 >= loss {
                    if seqid(s) % n < ds as u32 {
                        arrived_data.push(s[OVERHEAD..].to_vec());
                    }
                    wire.push(s.clone());
                }
            }
        }
        let mut dec = FecDecoder::new(ds, ps, 16);
        let got = feed(&mut dec, &wire);
        let sent = counts(&r.sent);
        let got_c = counts(&got);
        for (d, c) in &got_c {
            prop_assert_eq!(*c, 1);
            prop_assert!(sent.contains_key(d), "delivered something never sent");
        }
        for d in &arrived_data {
            prop_assert!(got_c.contains_key(d));
        }
        prop_assert_eq!(dec.stats().delivered as usize, got.len());
    }

    /// Random bytes: errors, never a panic, and nothing delivered that is
    /// longer than the input.
    #[test]
    fn garbage_never_panics(shards in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..50),
                            ds in 1usize..6, ps in 1usize..4) {
        let mut dec = FecDecoder::new(ds, ps, 4);
        for s in &shards {
            let _ = dec.input(s, &mut |d| assert!(d.len() <= 64));
        }
    }
}

// --- adaptive parity (set_parity) -------------------------------------------

fn is_parity(shard: &[u8]) -> bool {
    shard[4] == KIND_PARITY
}

/// Fewer parity shards are exactly the first ones of the full set (same
/// seqids, same bytes), so any receiver decodes them unchanged.
#[test]
fn reduced_parity_is_a_prefix_of_full_parity() {
    let ds: Vec<Vec<u8>> = (0..30)
        .map(|i| datagram(i, 40 + (i as usize * 37) % 1200))
        .collect();
    let mut full = FecEncoder::new(10, 4, 1400);
    let all = encode_all(&mut full, &ds);
    for n in 0..=4 {
        let mut enc = FecEncoder::new(10, 4, 1400);
        enc.set_parity(n);
        assert_eq!(enc.parity(), n);
        let some = encode_all(&mut enc, &ds);
        let expect: Vec<Vec<u8>> = all
            .iter()
            .filter(|s| !is_parity(s) || (seqid(s) % 14) < 10 + n as u32)
            .cloned()
            .collect();
        assert_eq!(some, expect, "parity {n}");
        assert_eq!(enc.stats().parity_shards, 3 * n as u64);
    }
}

#[test]
fn set_parity_is_clamped_to_the_configured_maximum() {
    let mut enc = FecEncoder::new(10, 3, 1400);
    enc.set_parity(200);
    assert_eq!(enc.parity(), 3);
}

#[test]
fn no_parity_groups_still_deliver_and_keep_seqids() {
    let ds: Vec<Vec<u8>> = (0..25).map(|i| datagram(i, 100)).collect();
    let mut enc = FecEncoder::new(10, 3, 1400);
    enc.set_parity(0);
    let shards = encode_all(&mut enc, &ds);
    assert_eq!(shards.len(), 25);
    assert!(shards.iter().all(|s| !is_parity(s)));
    // Group 1 starts at 13 even though its parity ids 10..13 were never used.
    assert_eq!(seqid(&shards[10]), 13);
    assert_eq!(seqid(&shards[20]), 26);
    let mut dec = FecDecoder::new(10, 3, 64);
    assert_eq!(feed(&mut dec, &shards), ds);
    assert_eq!(dec.stats().malformed, 0);
}

/// A mix of parity counts (adaptive FEC) spreads the extra shards evenly:
/// over 100 groups at 5% loss and a 5% target, 1.63 per group on average.
#[test]
fn mixed_parity_averages_out_over_groups() {
    let mut enc = FecEncoder::new(10, 8, 1400);
    enc.set_loss_with_target(Some(0.05), 0.05);
    assert_eq!(enc.parity(), 1);
    let mut per_group = Vec::new();
    let mut n = 0;
    for i in 0..1000 {
        enc.encode(&datagram(i, 1300), &mut |s| n += is_parity(s) as usize);
        if (i + 1) % 10 == 0 {
            per_group.push(std::mem::take(&mut n));
        }
    }
    assert!(per_group.iter().all(|&n| n == 1 || n == 2), "{per_group:?}");
    let total: usize = per_group.iter().sum();
    let expect = enc.parity_average() * 100.0;
    assert!((total as f64 - expect).abs() <= 1.0, "{total} vs {expect}");
    // Evenly: never two groups in a row with only one when most get two.
    assert!(!per_group.windows(2).any(|w| w == [1, 1]), "{per_group:?}");
}

#[test]
fn partial_flush_parity_follows_the_loss_rate() {
    let mut enc = FecEncoder::new(10, 3, 1400);
    // A clean link: no parity at all, but the group is closed all the same.
    enc.set_loss(Some(0.0));
    assert_eq!(enc.parity(), 0);
    let mut out = Vec::new();
    enc.encode(&datagram(0, 300), &mut |s| out.push(s.to_vec()));
    enc.flush_partial(&mut |s| out.push(s.to_vec()));
    assert_eq!(out.len(), 1);
    assert!(!enc.has_partial());
    enc.encode(&datagram(1, 300), &mut |s| out.push(s.to_vec()));
    assert_eq!(
        seqid(&out[1]),
        13,
        "the next datagram starts the next group"
    );
    // 1% loss: one shard fails 0.01% of the time with 1 parity shard.
    enc.set_loss(Some(0.01));
    let mut out = Vec::new();
    enc.flush_partial(&mut |s| out.push(s.to_vec()));
    assert_eq!(out.len(), 1);
    assert!(is_parity(&out[0]));
    // Losing the data shard: the one parity rebuilds it.
    let mut dec = FecDecoder::new(10, 3, 64);
    assert_eq!(feed(&mut dec, &out), vec![datagram(1, 300)]);
    // At 5% loss one datagram needs 2 (1 would fail 0.25% > 0.1% of the
    // time), while full groups get 2 or 3 (2.58 on average for a 1% target).
    enc.set_loss(Some(0.05));
    assert_eq!(enc.parity(), 2);
    assert!(
        (enc.parity_average() - 2.58).abs() < 0.01,
        "{}",
        enc.parity_average()
    );
    let mut out = Vec::new();
    enc.encode(&datagram(2, 30), &mut |s| out.push(s.to_vec()));
    enc.flush_partial(&mut |s| out.push(s.to_vec()));
    assert_eq!(out.iter().filter(|s| is_parity(s)).count(), 2);
    // Stale reports: full groups go back to all parity, lone datagrams
    // keep the last estimate.
    enc.set_stale();
    assert_eq!(enc.parity(), 3);
    let mut out = Vec::new();
    enc.encode(&datagram(3, 30), &mut |s| out.push(s.to_vec()));
    enc.flush_partial(&mut |s| out.push(s.to_vec()));
    assert_eq!(out.iter().filter(|s| is_parity(s)).count(), 2);
}

proptest! {
    /// With n parity shards per group, losing any n shards of each group
    /// still delivers everything, whatever n is set to between groups.
    #[test]
    fn any_n_losses_recovered_with_n_parity(
        counts in proptest::collection::vec(0usize..=3, 1..6),
        seed in any::<u64>(),
    ) {
        let mut enc = FecEncoder::new(6, 3, 1400);
        let mut shards = Vec::new();
        let mut sent = Vec::new();
        let mut id = 0;
        for &n in &counts {
            enc.set_parity(n);
            let mut group = Vec::new();
            for _ in 0..6 {
                let d = datagram(id, 20 + (id as usize * 53) % 700);
                id += 1;
                enc.encode(&d, &mut |s| group.push(s.to_vec()));
                sent.push(d);
            }
            prop_assert_eq!(group.len(), 6 + n);
            // Drop n shards picked from the seed (data or parity).
            let mut s = seed ^ id as u64;
            for _ in 0..n {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let at = (s >> 33) as usize % group.len();
                group.remove(at);
            }
            shards.extend(group);
        }
        let mut dec = FecDecoder::new(6, 3, 64);
        prop_assert_eq!(sorted(feed(&mut dec, &shards)), sorted(sent));
    }
}

/// A full group that carries interactive traffic gets the strict parity of
/// a group closed early; the groups after it go back to the adaptive count.
#[test]
fn a_protected_group_gets_strict_parity_then_the_next_does_not() {
    let mut enc = FecEncoder::new(10, 8, 1400);
    enc.set_loss_with_target(Some(0.05), 0.05);
    assert_eq!(enc.parity(), 1);
    let strict = parity_for_loss(10, 8, 0.05, PARTIAL_GROUP_FAILURE);
    assert!(strict >= 4, "strict parity {strict}");
    let mut per_group = Vec::new();
    let mut n = 0;
    for i in 0..30 {
        // The ping rides in the middle of the second group.
        if i == 14 {
            enc.protect_group();
        }
        enc.encode(&datagram(i, 1300), &mut |s| n += is_parity(s) as usize);
        if (i + 1) % 10 == 0 {
            per_group.push(std::mem::take(&mut n));
        }
    }
    assert!(per_group[0] <= 2, "{per_group:?}");
    assert_eq!(per_group[1], strict, "{per_group:?}");
    assert!(per_group[2] <= 2, "{per_group:?}");
    assert_eq!(enc.stats().protected_groups, 1);
    // On a link measured clean, protection costs nothing.
    enc.set_loss_with_target(Some(0.0), 0.05);
    enc.protect_group();
    let mut parity = 0;
    for i in 0..10 {
        enc.encode(&datagram(i, 1300), &mut |s| parity += is_parity(s) as usize);
    }
    assert_eq!(parity, 0);
    assert_eq!(enc.stats().protected_groups, 1);
}

/// A full group of small datagrams (a bulk receiver's ACKs) gets parity for
/// the 1% target instead of the adaptive count; one full-size datagram in
/// the group, or no loss estimate yet (all parity anyway), and nothing
/// changes.
#[test]
fn a_group_of_small_datagrams_gets_parity_for_one_percent() {
    let mut enc = FecEncoder::new(10, 8, 1400);
    enc.set_loss_with_target(Some(0.05), 0.10);
    let adaptive = enc.parity();
    let small = parity_for_loss(10, 8, 0.05, SMALL_GROUP_FAILURE);
    assert!(small > adaptive + 1, "{small} vs {adaptive}");
    let group = |enc: &mut FecEncoder, sizes: &dyn Fn(u32) -> usize| {
        let mut n = 0;
        for i in 0..10 {
            enc.encode(&datagram(i, sizes(i)), &mut |s| n += is_parity(s) as usize);
        }
        n
    };
    // Just within a quarter (the coded region adds a 2-byte length).
    assert_eq!(group(&mut enc, &|_| 1400 / SMALL_SHARE - 2), small);
    assert_eq!(enc.stats().small_groups, 1);
    assert!(group(&mut enc, &|i| if i == 7 { 1300 } else { 80 }) <= adaptive + 1);
    assert!(group(&mut enc, &|_| 1400 / SMALL_SHARE - 1) <= adaptive + 1);
    assert_eq!(enc.stats().small_groups, 1);
    // Small groups on a clean link: no parity.
    enc.set_loss_with_target(Some(0.0), 0.10);
    assert_eq!(group(&mut enc, &|_| 80), 0);
    // Before any estimate every group gets all parity, small or not.
    enc.set_loss(None);
    assert_eq!(group(&mut enc, &|_| 80), 8);
    assert_eq!(enc.stats().small_groups, 1);
}
