//! CRC-64 of file contents as tar-split records it: Go's `hash/crc64` with the ISO table.
//!
//! Reflected polynomial `0xD800000000000000`, initial value and final xor all ones (the
//! `CRC-64/GO-ISO` catalogue entry). The `crc-fast` crate folds with PCLMULQDQ where the CPU has
//! it, which keeps the checksum far off the critical path of extraction.

use crc_fast::{CrcAlgorithm, Digest};

/// A running CRC-64/GO-ISO.
#[derive(Clone)]
pub struct Crc64 {
    digest: Digest,
}

impl Default for Crc64 {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc64 {
    /// A CRC of nothing so far.
    #[must_use]
    pub fn new() -> Self {
        Self {
            digest: Digest::new(CrcAlgorithm::Crc64GoIso),
        }
    }

    /// Add `data` to the checksum.
    pub fn update(&mut self, data: &[u8]) {
        self.digest.update(data);
    }

    /// The checksum as tar-split stores it: the value big-endian, eight bytes.
    #[must_use]
    pub fn finish(&self) -> [u8; 8] {
        self.digest.finalize().to_be_bytes()
    }
}

/// The CRC-64/GO-ISO of `data` in one call.
#[must_use]
pub fn checksum(data: &[u8]) -> u64 {
    crc_fast::checksum(CrcAlgorithm::Crc64GoIso, data)
}

#[cfg(test)]
// Test data is made of bytes from wrapping arithmetic.
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    #[test]
    fn check_value() {
        assert_eq!(checksum(b"123456789"), 0xB909_56C7_75A4_1001);
    }

    #[test]
    fn empty_is_zero() {
        assert_eq!(Crc64::new().finish(), [0; 8]);
    }

    #[test]
    fn streaming_equals_one_shot() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let mut crc = Crc64::new();
        for chunk in data.chunks(777) {
            crc.update(chunk);
        }
        assert_eq!(crc.finish(), checksum(&data).to_be_bytes());
    }

    #[test]
    fn matches_a_bitwise_reference() {
        // The textbook reflected CRC, bit by bit, as Go's crc64.ISO defines it.
        fn reference(data: &[u8]) -> u64 {
            let mut crc = !0u64;
            for &byte in data {
                crc ^= u64::from(byte);
                for _ in 0..8 {
                    crc = if crc & 1 == 1 {
                        (crc >> 1) ^ 0xD800_0000_0000_0000
                    } else {
                        crc >> 1
                    };
                }
            }
            !crc
        }
        for length in [0usize, 1, 7, 8, 15, 16, 63, 64, 65, 255, 256, 4097] {
            let data: Vec<u8> = (0..length).map(|i| (i * 31 + 5) as u8).collect();
            assert_eq!(checksum(&data), reference(&data), "length {length}");
        }
    }
}
