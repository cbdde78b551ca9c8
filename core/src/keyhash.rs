//! Hashing and comparing short strings (store keys, topics) on hot paths, inline.

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// Hash of a key or topic; the same for every caller in the process (seeded once, at random).
///
/// Written out rather than `BuildHasher::hash_one`, which the compiler keeps out of line in
/// the C ABI's calls (a call per operation); foldhash mixes the length into the seed, so the
/// bytes alone are hashed.
#[inline(always)]
pub(crate) fn hash_key(key: &str) -> u64 {
    static STATE: OnceLock<foldhash::fast::RandomState> = OnceLock::new();
    let mut h = STATE.get_or_init(Default::default).build_hasher();
    h.write(key.as_bytes());
    h.finish()
}

/// Whether two keys (or topics) are equal. Keys of up to 32 bytes (most keys) are compared with
/// two or four overlapping word loads, inline; a plain `==` on a key whose length is known only
/// at run time calls libc's `memcmp`, which was 3% of a C `hb_incr`.
#[inline(always)]
pub(crate) fn same_key(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    // Overlapping loads that together cover the `n` bytes.
    let words8 = |at: &[usize]| at.iter().all(|&i| word8(a, i) == word8(b, i));
    match n {
        17..=32 => words8(&[0, 8, n - 16, n - 8]),
        8..=16 => words8(&[0, n - 8]),
        4..=7 => [0, n - 4].iter().all(|&i| word4(a, i) == word4(b, i)),
        _ => a == b,
    }
}

/// 8 bytes of `s` from `at`, as one unaligned load.
#[inline(always)]
fn word8(s: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(s[at..at + 8].try_into().expect("8 bytes"))
}

/// 4 bytes of `s` from `at`, as one unaligned load.
#[inline(always)]
fn word4(s: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(s[at..at + 4].try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::same_key;

    /// Every length from 0 to 40 (both word paths, their edges and the `memcmp` path), every
    /// position of a difference, and keys of different lengths sharing a prefix.
    #[test]
    fn same_key_compares_every_byte_at_every_length() {
        let base: String = ('a'..='z').chain('A'..='Z').take(40).collect();
        for n in 0..=40 {
            let a = &base[..n];
            let copy = String::from(a); // another allocation, so no pointer is shared
            assert!(same_key(a, &copy), "len {n}");
            for i in 0..n {
                let mut b = a.as_bytes().to_vec();
                b[i] = b'0';
                let b = String::from_utf8(b).unwrap();
                assert!(!same_key(a, &b), "len {n}, differs at {i}");
                assert!(!same_key(&b, a), "len {n}, differs at {i}");
            }
            if n > 0 {
                assert!(!same_key(a, &base[..n - 1]), "len {n} vs {}", n - 1);
            }
        }
    }
}
