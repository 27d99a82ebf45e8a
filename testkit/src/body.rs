//! Bodies generated from a seed: byte `i` of a resource is a pure function of
//! `(seed, version, i)`, so any range of any size can be served and checked
//! without storing anything.

use sha2::{Digest, Sha256};

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn key(seed: u64, version: u32) -> u64 {
    seed.wrapping_mul(GOLDEN) ^ u64::from(version).rotate_left(40) ^ 0xF3A1_C0DE_5EED_0001
}

/// SplitMix64's finaliser: a strong 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn word(key: u64, index: u64) -> [u8; 8] {
    mix(key.wrapping_add(index.wrapping_mul(GOLDEN))).to_le_bytes()
}

/// Fills `buf` with the bytes at `offset..offset + buf.len()` of the body
/// generated from `seed` and `version`.
pub fn fill(seed: u64, version: u32, offset: u64, buf: &mut [u8]) {
    let k = key(seed, version);
    let mut pos = offset;
    let mut out = buf;
    // Leading partial word.
    let skip = (pos % 8) as usize;
    if skip != 0 && !out.is_empty() {
        let w = word(k, pos / 8);
        let n = (8 - skip).min(out.len());
        out[..n].copy_from_slice(&w[skip..skip + n]);
        out = &mut out[n..];
        pos += n as u64;
    }
    let mut index = pos / 8;
    let mut chunks = out.chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&word(k, index));
        index += 1;
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let w = word(k, index);
        let n = rest.len();
        rest.copy_from_slice(&w[..n]);
    }
}

/// The bytes in `range` of the body generated from `seed` and `version`.
pub fn bytes(seed: u64, version: u32, range: std::ops::Range<u64>) -> Vec<u8> {
    let len = usize::try_from(range.end.saturating_sub(range.start)).unwrap_or(0);
    let mut v = vec![0u8; len];
    fill(seed, version, range.start, &mut v);
    v
}

/// SHA-256 of the whole body of `len` bytes generated from `seed` and `version`.
pub fn sha256(seed: u64, version: u32, len: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(buf.len() as u64) as usize;
        fill(seed, version, pos, &mut buf[..n]);
        h.update(&buf[..n]);
        pos += n as u64;
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_range_matches_the_whole() {
        let whole = bytes(7, 0, 0..1000);
        for (a, b) in [(0, 1), (3, 17), (8, 16), (999, 1000), (5, 900), (1, 2)] {
            assert_eq!(bytes(7, 0, a..b), whole[a as usize..b as usize], "{a}..{b}");
        }
        assert_ne!(
            bytes(7, 1, 0..64),
            whole[..64],
            "a new version is a new representation"
        );
        assert_ne!(bytes(8, 0, 0..64), whole[..64]);
    }
}
