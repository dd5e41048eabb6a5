//! The weights blob: every constant a kernel reads, packed at 64-byte aligned offsets, identical
//! contents stored once.

use std::collections::HashMap;

/// Alignment of the blob and of every constant in it: a cache line, and enough for any vector load.
pub(crate) const WEIGHTS_ALIGN: usize = 64;

/// A growing weights blob.
#[derive(Default)]
pub(crate) struct Blob {
    /// The bytes (padding is zero).
    pub bytes: Vec<u8>,
    /// Content hash -> offsets of entries with that hash (compared byte for byte on lookup).
    index: HashMap<u64, Vec<(usize, usize)>>,
}

impl Blob {
    /// Offset of `data` in the blob, adding it if no identical entry exists.
    pub fn intern(&mut self, data: &[u8]) -> usize {
        let h = fnv1a(data);
        if let Some(list) = self.index.get(&h) {
            for &(off, len) in list {
                if len == data.len() && &self.bytes[off..off + len] == data {
                    return off;
                }
            }
        }
        let off = self.bytes.len().div_ceil(WEIGHTS_ALIGN) * WEIGHTS_ALIGN;
        self.bytes.resize(off, 0);
        self.bytes.extend_from_slice(data);
        self.index.entry(h).or_default().push((off, data.len()));
        off
    }

    /// The blob padded to a multiple of the alignment, so its size is a whole number of lines.
    pub fn finish(mut self) -> Vec<u8> {
        let n = self.bytes.len().div_ceil(WEIGHTS_ALIGN) * WEIGHTS_ALIGN;
        self.bytes.resize(n, 0);
        self.bytes
    }
}

fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_deduplicated() {
        let mut b = Blob::default();
        assert_eq!(b.intern(&[1, 2, 3]), 0);
        assert_eq!(b.intern(&[4; 70]), 64);
        assert_eq!(b.intern(&[1, 2, 3]), 0);
        assert_eq!(b.intern(&[5]), 192);
        let bytes = b.finish();
        assert_eq!(bytes.len(), 256);
        assert_eq!(&bytes[..4], &[1, 2, 3, 0]);
    }
}
