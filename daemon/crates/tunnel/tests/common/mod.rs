//! Helpers shared by the integration tests of this crate.

/// An IPv4/UDP packet of flow `who` (its source address) from `port`,
/// carrying `seq` and a pattern derived from it: one flow's packets must
/// arrive in order and intact.
pub fn flow_packet(who: usize, port: u16, seq: u32, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len.max(32)];
    p[0] = 0x45;
    let total = p.len() as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 1, (who >> 8) as u8, who as u8]);
    p[16..20].copy_from_slice(&[10, 2, 0, 1]);
    p[20..22].copy_from_slice(&port.to_be_bytes());
    p[22..24].copy_from_slice(&53u16.to_be_bytes());
    p[28..32].copy_from_slice(&seq.to_le_bytes());
    for (k, b) in p.iter_mut().enumerate().skip(32) {
        *b = (k as u32 ^ seq) as u8;
    }
    p
}
