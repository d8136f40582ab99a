//! Path names as Go handles them (`path.Clean`, `path.Base`), and sets of paths that keep
//! 128-bit keyed hashes instead of the names, so memory stays flat however many entries a
//! layer has.

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

/// Go's `path.Clean`: the shortest equivalent name, by purely lexical processing.
#[must_use]
pub fn clean(path: &[u8]) -> Vec<u8> {
    if path.is_empty() {
        return b".".to_vec();
    }
    let rooted = path[0] == b'/';
    let mut out: Vec<u8> = Vec::with_capacity(path.len());
    if rooted {
        out.push(b'/');
    }
    // Where `..` may no longer back up: after the root slash, or at the start.
    let floor = out.len();
    let mut dotdot = floor;
    for component in path.split(|&byte| byte == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                if out.len() > dotdot {
                    // Back up to the previous slash (or the floor).
                    let cut = out[dotdot..]
                        .iter()
                        .rposition(|&byte| byte == b'/')
                        .map_or(dotdot, |index| dotdot + index);
                    out.truncate(cut);
                } else if !rooted {
                    if !out.is_empty() {
                        out.push(b'/');
                    }
                    out.extend_from_slice(b"..");
                    dotdot = out.len();
                }
            }
            name => {
                if out.len() > floor {
                    out.push(b'/');
                }
                out.extend_from_slice(name);
            }
        }
    }
    if out.is_empty() {
        out.push(b'.');
    }
    out
}

/// Go's `path.Base`: the last element, trailing slashes dropped; `.` for empty, `/` for root.
#[must_use]
pub fn base(path: &[u8]) -> &[u8] {
    if path.is_empty() {
        return b".";
    }
    let trimmed = match path.iter().rposition(|&byte| byte != b'/') {
        Some(last) => &path[..=last],
        None => return b"/",
    };
    match trimmed.iter().rposition(|&byte| byte == b'/') {
        Some(slash) => &trimmed[slash + 1..],
        None => trimmed,
    }
}

/// A name for messages, as the pure engine shows it: Python's
/// `repr(name.decode("utf-8", "backslashreplace"))`.
#[must_use]
pub fn shown(name: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut decoded = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        decoded.push_str(chunk.valid());
        for byte in chunk.invalid() {
            let _ = write!(decoded, "\\x{byte:02x}");
        }
    }
    let quote = if decoded.contains('\'') && !decoded.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(decoded.len() + 2);
    out.push(quote);
    for character in decoded.chars() {
        match character {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7F => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// A set of byte strings kept as two independent keyed SipHash-1-3 values (random keys per
/// set). A false match needs a 128-bit collision under keys the archive's author cannot know.
pub struct PathSet {
    keys: (RandomState, RandomState),
    seen: HashSet<u128, BuildHasherDefault<PrehashedHasher>>,
}

impl Default for PathSet {
    fn default() -> Self {
        Self::new()
    }
}

impl PathSet {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self {
            keys: (RandomState::new(), RandomState::new()),
            seen: HashSet::default(),
        }
    }

    fn key(&self, path: &[u8]) -> u128 {
        let high = self.keys.0.hash_one(path);
        let low = self.keys.1.hash_one(path);
        (u128::from(high) << 64) | u128::from(low)
    }

    /// Add `path`; false if it was there already.
    pub fn insert(&mut self, path: &[u8]) -> bool {
        let key = self.key(path);
        self.seen.insert(key)
    }

    /// Whether `path` was added.
    #[must_use]
    pub fn contains(&self, path: &[u8]) -> bool {
        self.seen.contains(&self.key(path))
    }

    /// Forget every path.
    pub fn clear(&mut self) {
        self.seen.clear();
    }

    /// How many paths were added.
    #[must_use]
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no path was added.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// The set's keys are already keyed hashes: the table uses their low bits as they are.
#[derive(Default)]
struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u128(&mut self, value: u128) {
        // Truncation intended: the low half of a keyed hash is as good as any.
        #[allow(clippy::cast_possible_truncation)]
        {
            self.0 = value as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        // Cases from Go's path/path_test.go.
        let cases: &[(&str, &str)] = &[
            ("", "."),
            ("abc", "abc"),
            ("abc/def", "abc/def"),
            ("a/b/c", "a/b/c"),
            (".", "."),
            ("..", ".."),
            ("../..", "../.."),
            ("../../abc", "../../abc"),
            ("/abc", "/abc"),
            ("/", "/"),
            ("abc/", "abc"),
            ("abc/def/", "abc/def"),
            ("a/b/c/", "a/b/c"),
            ("./", "."),
            ("../", ".."),
            ("../../", "../.."),
            ("/abc/", "/abc"),
            ("abc//def//ghi", "abc/def/ghi"),
            ("//abc", "/abc"),
            ("///abc", "/abc"),
            ("//abc//", "/abc"),
            ("abc//", "abc"),
            ("abc/./def", "abc/def"),
            ("/./abc/def", "/abc/def"),
            ("abc/.", "abc"),
            ("abc/def/ghi/../jkl", "abc/def/jkl"),
            ("abc/def/../ghi/../jkl", "abc/jkl"),
            ("abc/def/..", "abc"),
            ("abc/def/../..", "."),
            ("/abc/def/../..", "/"),
            ("abc/def/../../..", ".."),
            ("/abc/def/../../..", "/"),
            ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
            ("abc/./../def", "def"),
            ("abc//./../def", "def"),
            ("abc/../../././../def", "../../def"),
            ("/..", "/"),
            ("/../a", "/a"),
            ("..a/b", "..a/b"),
            ("a/..b", "a/..b"),
        ];
        for (input, want) in cases {
            assert_eq!(
                String::from_utf8(clean(input.as_bytes())).unwrap(),
                *want,
                "clean({input:?})"
            );
        }
    }

    #[test]
    fn base_matches_go() {
        let cases: &[(&str, &str)] = &[
            ("", "."),
            (".", "."),
            ("/.", "."),
            ("/", "/"),
            ("////", "/"),
            ("x/", "x"),
            ("abc", "abc"),
            ("abc/def", "def"),
            ("a/b/.x", ".x"),
            ("a/b/c.", "c."),
            ("a/b/c.x", "c.x"),
            ("dir/.wh.file//", ".wh.file"),
        ];
        for (input, want) in cases {
            assert_eq!(base(input.as_bytes()), want.as_bytes(), "base({input:?})");
        }
    }

    #[test]
    fn shown_is_pythons_repr() {
        assert_eq!(shown(b"f"), "'f'");
        assert_eq!(shown(b"it's"), "\"it's\"");
        assert_eq!(shown(b"a\\b\n\x01"), "'a\\\\b\\n\\x01'");
        assert_eq!(shown(b"caf\xe9"), "'caf\\\\xe9'");
        assert_eq!(shown("é".as_bytes()), "'é'");
    }

    #[test]
    fn path_set_remembers_hashes() {
        let mut set = PathSet::new();
        assert!(set.insert(b"a/b"));
        assert!(!set.insert(b"a/b"));
        assert!(set.contains(b"a/b"));
        assert!(!set.contains(b"a/c"));
        assert_eq!(set.len(), 1);
        for index in 0..10_000 {
            assert!(set.insert(format!("file{index}").as_bytes()));
        }
        assert_eq!(set.len(), 10_001);
        set.clear();
        assert!(set.is_empty());
    }
}
