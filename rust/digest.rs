//! Digests and byte counts of the streams an apply reads: sha256 as `"sha256:<hex>"`.

use sha2::{Digest as _, Sha256};

/// Counts the bytes of a stream and, unless its digest is already known, hashes them.
pub struct Digester {
    state: State,
    count: u64,
}

enum State {
    Hashing(Sha256),
    Trusted(String),
}

impl Digester {
    /// Hash and count; with `trusted`, only count and report `trusted` as the digest.
    #[must_use]
    pub fn new(trusted: Option<String>) -> Self {
        let state = match trusted {
            Some(digest) => State::Trusted(digest),
            None => State::Hashing(Sha256::new()),
        };
        Self { state, count: 0 }
    }

    /// Add `data` to the stream.
    pub fn update(&mut self, data: &[u8]) {
        self.count += data.len() as u64;
        if let State::Hashing(hasher) = &mut self.state {
            hasher.update(data);
        }
    }

    /// `("sha256:<hex>", byte count)`.
    #[must_use]
    pub fn finish(self) -> (String, u64) {
        let digest = match self.state {
            State::Trusted(digest) => digest,
            State::Hashing(hasher) => format_sha256(&hasher.finalize()),
        };
        (digest, self.count)
    }
}

fn format_sha256(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(7 + 2 * bytes.len());
    text.push_str("sha256:");
    for &byte in bytes {
        text.push(char::from(HEX[usize::from(byte >> 4)]));
        text.push(char::from(HEX[usize::from(byte & 15)]));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_counts() {
        let mut digester = Digester::new(None);
        digester.update(b"a");
        digester.update(b"bc");
        assert_eq!(
            digester.finish(),
            (
                "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
                3
            )
        );
    }

    #[test]
    fn trusted_digest_is_reported_and_bytes_still_counted() {
        let trusted = format!("sha256:{}", "0".repeat(64));
        let mut digester = Digester::new(Some(trusted.clone()));
        digester.update(&[1; 10]);
        assert_eq!(digester.finish(), (trusted, 10));
    }
}
