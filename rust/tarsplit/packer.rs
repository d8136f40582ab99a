//! Writing tar-split entries: one JSON object per line, as Go's `storage.NewJSONPacker` does.
//!
//! ```text
//! {"type":2,"payload":"<base64>","position":N}
//! {"type":1,"name":"<name>","size":S,"payload":"<base64 of 8-byte CRC>","position":N}
//! ```
//! Field order and omissions follow Go's struct tags; strings use Go 1.19's escaping.

use std::io::Write;

use base64::Engine as _;

use crate::error::{Error, Result};
use crate::paths::{clean, PathSet};

/// Entry type of a file (its content lives in the layer, only its CRC here).
pub const FILE_TYPE: u8 = 1;
/// Entry type of a segment (raw archive bytes kept verbatim).
pub const SEGMENT_TYPE: u8 = 2;

/// Writes tar-split lines to `W`, numbering them and refusing duplicate file names.
pub struct Packer<W: Write> {
    out: W,
    position: u64,
    seen: PathSet,
    line: Vec<u8>,
}

impl<W: Write> Packer<W> {
    /// A packer writing to `out` (which should buffer).
    pub fn new(out: W) -> Self {
        Self {
            out,
            position: 0,
            seen: PathSet::new(),
            line: Vec::with_capacity(4096),
        }
    }

    /// Refuse a file name that is the same as an earlier one after `path.Clean`, and remember it.
    pub fn claim_name(&mut self, name: &[u8]) -> Result<()> {
        if self.seen.insert(&clean(name)) {
            Ok(())
        } else {
            Err(Error::InvalidLayerData(format!(
                "duplicate path {} in the layer",
                crate::paths::shown(name)
            )))
        }
    }

    /// Write a segment entry holding `payload` verbatim.
    pub fn add_segment(&mut self, payload: &[u8]) -> Result<()> {
        self.line.clear();
        self.line.extend_from_slice(b"{\"type\":2,\"payload\":\"");
        push_base64(&mut self.line, payload);
        self.line.extend_from_slice(b"\",");
        self.finish_line()
    }

    /// Write a file entry; `name` must have been claimed with [`Packer::claim_name`].
    pub fn add_file(&mut self, name: &[u8], size: i64, crc: Option<[u8; 8]>) -> Result<()> {
        self.line.clear();
        self.line.extend_from_slice(b"{\"type\":1,");
        if !name.is_empty() {
            if let Ok(text) = std::str::from_utf8(name) {
                self.line.extend_from_slice(b"\"name\":\"");
                push_go_string(&mut self.line, text);
            } else {
                self.line.extend_from_slice(b"\"name_raw\":\"");
                push_base64(&mut self.line, name);
            }
            self.line.extend_from_slice(b"\",");
        }
        if size != 0 {
            self.line.extend_from_slice(b"\"size\":");
            self.line
                .extend_from_slice(itoa::Buffer::new().format(size).as_bytes());
            self.line.push(b',');
        }
        match crc {
            Some(crc) => {
                self.line.extend_from_slice(b"\"payload\":\"");
                push_base64(&mut self.line, &crc);
                self.line.extend_from_slice(b"\",");
            }
            None => self.line.extend_from_slice(b"\"payload\":null,"),
        }
        self.finish_line()
    }

    fn finish_line(&mut self) -> Result<()> {
        self.line.extend_from_slice(b"\"position\":");
        self.line
            .extend_from_slice(itoa::Buffer::new().format(self.position).as_bytes());
        self.line.extend_from_slice(b"}\n");
        self.position += 1;
        self.out.write_all(&self.line).map_err(|source| Error::Io {
            source,
            path: "tar-split".into(),
        })
    }

    /// Lines written so far.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The writer, once every entry is in.
    pub fn into_inner(self) -> W {
        self.out
    }

    /// The writer, to flush or inspect it.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }
}

fn push_base64(out: &mut Vec<u8>, data: &[u8]) {
    let start = out.len();
    out.resize(start + data.len().div_ceil(3) * 4, 0);
    // The buffer was sized for the padded encoding, so this cannot run short.
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(data, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + written);
}

/// Append `text` as the inside of a JSON string, escaped as Go 1.19's `encoding/json` does
/// with HTML escaping on (the default of `json.Encoder`).
pub fn push_go_string(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        let escape: Option<&[u8]> = match byte {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..=0x1F | b'<' | b'>' | b'&' => Some(b""),
            // U+2028 and U+2029: E2 80 A8 / E2 80 A9.
            0xE2 if bytes.get(index + 1) == Some(&0x80)
                && matches!(bytes.get(index + 2), Some(0xA8 | 0xA9)) =>
            {
                Some(b"")
            }
            _ => None,
        };
        let Some(escape) = escape else {
            index += 1;
            continue;
        };
        out.extend_from_slice(&bytes[start..index]);
        if escape.is_empty() {
            if byte == 0xE2 {
                out.extend_from_slice(if bytes[index + 2] == 0xA8 {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                });
                index += 3;
                start = index;
                continue;
            }
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 15)]);
        } else {
            out.extend_from_slice(escape);
        }
        index += 1;
        start = index;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go_string(text: &str) -> String {
        let mut out = Vec::new();
        push_go_string(&mut out, text);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_like_go() {
        assert_eq!(go_string("plain/name.txt"), "plain/name.txt");
        assert_eq!(go_string("a\"b\\c"), "a\\\"b\\\\c");
        assert_eq!(go_string("<&>"), "\\u003c\\u0026\\u003e");
        assert_eq!(
            go_string("\n\r\t\x08\x0c\x01\x1f\x7f"),
            "\\n\\r\\t\\u0008\\u000c\\u0001\\u001f\x7f"
        );
        assert_eq!(go_string("\u{2028}x\u{2029}é€"), "\\u2028x\\u2029é€");
    }

    #[test]
    fn writes_go_lines() {
        let mut packer = Packer::new(Vec::new());
        packer.add_segment(b"hello").unwrap();
        packer.claim_name(b"dir/file").unwrap();
        packer
            .add_file(b"dir/file", 5, Some([1, 2, 3, 4, 5, 6, 7, 8]))
            .unwrap();
        packer.claim_name(b"empty").unwrap();
        packer.add_file(b"empty", 0, None).unwrap();
        packer.claim_name(b"\xff").unwrap();
        packer.add_file(b"\xff", 0, None).unwrap();
        packer.claim_name(b"").unwrap();
        packer.add_file(b"", -3, None).unwrap();
        packer.add_segment(b"").unwrap();
        let text = String::from_utf8(packer.into_inner()).unwrap();
        assert_eq!(
            text,
            "{\"type\":2,\"payload\":\"aGVsbG8=\",\"position\":0}\n\
             {\"type\":1,\"name\":\"dir/file\",\"size\":5,\"payload\":\"AQIDBAUGBwg=\",\"position\":1}\n\
             {\"type\":1,\"name\":\"empty\",\"payload\":null,\"position\":2}\n\
             {\"type\":1,\"name_raw\":\"/w==\",\"payload\":null,\"position\":3}\n\
             {\"type\":1,\"size\":-3,\"payload\":null,\"position\":4}\n\
             {\"type\":2,\"payload\":\"\",\"position\":5}\n"
        );
    }

    #[test]
    fn duplicates_are_refused_after_cleaning() {
        let mut packer = Packer::new(Vec::new());
        packer.claim_name(b"./a/b/").unwrap();
        assert!(packer.claim_name(b"a//b").is_err());
        packer.claim_name(b"").unwrap();
        assert!(packer.claim_name(b".").is_err());
    }
}
