//! Reading tar-split entries back: one JSON object per line, as Go's `storage.NewJSONUnpacker`
//! reads what [`super::Packer`] wrote, with the stricter checks of docs/diff.md.
//!
//! ```text
//! {"type":2,"payload":"<base64>","position":N}
//! {"type":1,"name":"<name>","size":S,"payload":"<base64 of 8-byte CRC>","position":N}
//! ```
//! Every line must be one JSON object. Keys are matched exactly; unknown keys are checked for
//! syntax and ignored, `position` too; a key given twice counts once, the last time (as in Go
//! and Python). A `null` value counts as a missing key. A line that is not valid JSON, an
//! unknown `type`, a value of the wrong kind or bad base64 is [`Error::InvalidLayerData`]
//! naming the tar-split file and the line number (from 1).

use std::borrow::Cow;
use std::io::{self, BufRead};

use base64::alphabet::STANDARD;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;

use crate::error::{Error, Result};
use crate::tarsplit::packer::{FILE_TYPE, SEGMENT_TYPE};

/// Longest line we hold. The longest a packer writes is a segment with the 64 MiB of meta
/// headers the walker allows before one entry (about 86 MiB of base64).
pub const MAX_LINE: usize = 128 << 20;
/// Deepest nesting of arrays and objects in values we skip.
const MAX_DEPTH: usize = 256;

/// Padded standard base64, as Go's `encoding/json` reads `[]byte`; like Go's decoder it does not
/// insist that the unused bits of the last character be zero.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// One tar-split entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    /// Raw archive bytes, written as they are.
    Segment(Vec<u8>),
    /// A file whose content comes from the layer.
    File {
        /// `name_raw` when given, else `name` (Go's `GetName`).
        name: Vec<u8>,
        /// The content's length; nothing is read unless it is above 0.
        size: i64,
        /// The decoded `payload` (the CRC-64 of the content, 8 bytes), if any.
        crc: Option<Vec<u8>>,
    },
}

/// Reads entries from a decompressed tar-split stream.
pub struct Unpacker<R: BufRead> {
    input: R,
    /// The tar-split file, for messages.
    source: String,
    line: Vec<u8>,
    /// Lines read so far (the number of the last one).
    number: u64,
}

impl<R: BufRead> Unpacker<R> {
    /// An unpacker reading `input`, calling it `source` in messages.
    pub fn new(input: R, source: &str) -> Self {
        Self {
            input,
            source: source.to_string(),
            line: Vec::new(),
            number: 0,
        }
    }

    /// The number of the last line read (0 before the first).
    #[must_use]
    pub fn line_number(&self) -> u64 {
        self.number
    }

    fn invalid(&self, reason: &str) -> Error {
        Error::InvalidLayerData(format!(
            "{}: line {} is not a tar-split entry: {reason}",
            self.source, self.number
        ))
    }

    /// The next entry, `None` after the last line.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        if !self.read_line()? {
            if self.number == 0 {
                // Every apply writes at least the final empty segment.
                return Err(Error::InvalidLayerData(format!(
                    "{}: the tar-split file is empty",
                    self.source
                )));
            }
            return Ok(None);
        }
        let fields = parse_line(&self.line).map_err(|reason| self.invalid(&reason))?;
        let entry = match fields.kind {
            Some(kind) if kind == i64::from(FILE_TYPE) => Entry::File {
                name: fields
                    .name_raw
                    .filter(|raw| !raw.is_empty())
                    .or(fields.name)
                    .unwrap_or_default(),
                size: fields.size.unwrap_or(0),
                crc: fields.payload,
            },
            Some(kind) if kind == i64::from(SEGMENT_TYPE) => {
                Entry::Segment(fields.payload.unwrap_or_default())
            }
            Some(other) => return Err(self.invalid(&format!("unknown entry type {other}"))),
            None => return Err(self.invalid("the entry has no type")),
        };
        Ok(Some(entry))
    }

    /// Read the next line into `self.line`, without its `\n`; false at the end of the stream.
    fn read_line(&mut self) -> Result<bool> {
        self.line.clear();
        self.number += 1;
        loop {
            let available = match self.input.fill_buf() {
                Ok(available) => available,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(self.read_error(error)),
            };
            if available.is_empty() {
                if self.line.is_empty() {
                    self.number -= 1;
                    return Ok(false);
                }
                return Ok(true);
            }
            let (taken, complete) = match available.iter().position(|&byte| byte == b'\n') {
                Some(end) => (end, true),
                None => (available.len(), false),
            };
            if self.line.len() + taken > MAX_LINE {
                return Err(self.invalid(&format!("it is longer than {MAX_LINE} bytes")));
            }
            self.line.extend_from_slice(&available[..taken]);
            self.input.consume(taken + usize::from(complete));
            if complete {
                return Ok(true);
            }
        }
    }

    fn read_error(&self, error: io::Error) -> Error {
        if error.raw_os_error().is_some() {
            // The file itself could not be read.
            Error::Io {
                source: error,
                path: self.source.clone().into(),
            }
        } else {
            Error::InvalidLayerData(format!(
                "{}: cannot read tar-split after line {}: {error}",
                self.source,
                self.number - 1
            ))
        }
    }
}

/// The fields of one line that reassembly uses.
#[derive(Default)]
struct Fields {
    kind: Option<i64>,
    name: Option<Vec<u8>>,
    name_raw: Option<Vec<u8>>,
    size: Option<i64>,
    payload: Option<Vec<u8>>,
}

/// A JSON value as the line parser sees it.
enum Value<'a> {
    Null,
    String(Cow<'a, [u8]>),
    /// An integer written without fraction or exponent.
    Integer(&'a [u8]),
    /// Any other number, boolean, array or object (checked, not kept).
    Other,
}

fn parse_line(line: &[u8]) -> std::result::Result<Fields, String> {
    if std::str::from_utf8(line).is_err() {
        return Err("not valid JSON: not UTF-8".into());
    }
    let mut parser = Parser { text: line, at: 0 };
    let mut fields = Fields::default();
    parser.skip_space();
    parser.expect(b'{')?;
    parser.skip_space();
    if parser.peek() == Some(b'}') {
        parser.at += 1;
    } else {
        loop {
            parser.skip_space();
            if parser.peek() != Some(b'"') {
                return Err(parser.unexpected("a key"));
            }
            let key = parser.string()?;
            parser.skip_space();
            parser.expect(b':')?;
            parser.skip_space();
            let value = parser.value(0)?;
            fields.set(&key, value)?;
            parser.skip_space();
            match parser.peek() {
                Some(b',') => parser.at += 1,
                Some(b'}') => {
                    parser.at += 1;
                    break;
                }
                _ => return Err(parser.unexpected("',' or '}'")),
            }
        }
    }
    parser.skip_space();
    if parser.at != line.len() {
        return Err(parser.unexpected("the end of the line"));
    }
    Ok(fields)
}

impl Fields {
    fn set(&mut self, key: &[u8], value: Value<'_>) -> std::result::Result<(), String> {
        match key {
            b"type" => self.kind = integer(value, "type")?,
            b"size" => self.size = integer(value, "size")?,
            b"name" => {
                self.name = string(value, "name")?.map(Cow::into_owned);
            }
            b"name_raw" => self.name_raw = base64(value, "name_raw")?,
            b"payload" => self.payload = base64(value, "payload")?,
            _ => {}
        }
        Ok(())
    }
}

fn integer(value: Value<'_>, key: &str) -> std::result::Result<Option<i64>, String> {
    match value {
        Value::Null => Ok(None),
        Value::Integer(text) => std::str::from_utf8(text)
            .ok()
            .and_then(|text| text.parse::<i64>().ok())
            .map(Some)
            .ok_or_else(|| format!("\"{key}\" is out of range")),
        _ => Err(format!("\"{key}\" is not an integer")),
    }
}

fn string<'a>(value: Value<'a>, key: &str) -> std::result::Result<Option<Cow<'a, [u8]>>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) => Ok(Some(text)),
        _ => Err(format!("\"{key}\" is not a string")),
    }
}

fn base64(value: Value<'_>, key: &str) -> std::result::Result<Option<Vec<u8>>, String> {
    let Some(text) = string(value, key)? else {
        return Ok(None);
    };
    BASE64
        .decode(&text)
        .map(Some)
        .map_err(|error| format!("\"{key}\" is not valid base64: {error}"))
}

/// A JSON parser over one line, just enough for tar-split entries and whatever else a line may
/// hold (skipped).
struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.at += 1;
        }
    }

    fn unexpected(&self, wanted: &str) -> String {
        match self.peek() {
            Some(byte) => format!(
                "not valid JSON: expected {wanted} at byte {}, found {:?}",
                self.at + 1,
                char::from(byte)
            ),
            None => format!("not valid JSON: expected {wanted}, found the end of the line"),
        }
    }

    fn expect(&mut self, byte: u8) -> std::result::Result<(), String> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.unexpected(&format!("{:?}", char::from(byte))))
        }
    }

    fn value(&mut self, depth: usize) -> std::result::Result<Value<'a>, String> {
        match self.peek() {
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'{' | b'[') => {
                if depth >= MAX_DEPTH {
                    return Err(format!("not valid JSON: nested deeper than {MAX_DEPTH}"));
                }
                self.container(depth + 1)?;
                Ok(Value::Other)
            }
            Some(b't') => self.literal(b"true", Value::Other),
            Some(b'f') => self.literal(b"false", Value::Other),
            Some(b'n') => self.literal(b"null", Value::Null),
            _ => Err(self.unexpected("a value")),
        }
    }

    fn literal(
        &mut self,
        word: &'static [u8],
        value: Value<'a>,
    ) -> std::result::Result<Value<'a>, String> {
        if self.text[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(self.unexpected("a value"))
        }
    }

    /// An array or object, checked and skipped.
    fn container(&mut self, depth: usize) -> std::result::Result<(), String> {
        let object = self.peek() == Some(b'{');
        let close = if object { b'}' } else { b']' };
        self.at += 1;
        self.skip_space();
        if self.peek() == Some(close) {
            self.at += 1;
            return Ok(());
        }
        loop {
            self.skip_space();
            if object {
                if self.peek() != Some(b'"') {
                    return Err(self.unexpected("a key"));
                }
                self.string()?;
                self.skip_space();
                self.expect(b':')?;
                self.skip_space();
            }
            self.value(depth)?;
            self.skip_space();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(byte) if byte == close => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(self.unexpected(if object { "',' or '}'" } else { "',' or ']'" })),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> std::result::Result<Value<'a>, String> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.unexpected("a digit")),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return Err(self.unexpected("a digit"));
            }
            integer = false;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err(self.unexpected("a digit"));
            }
            integer = false;
        }
        Ok(if integer {
            Value::Integer(&self.text[start..self.at])
        } else {
            Value::Other
        })
    }

    /// A string, borrowed from the line when it has no escapes. The line is valid UTF-8, so
    /// only escapes need decoding.
    fn string(&mut self) -> std::result::Result<Cow<'a, [u8]>, String> {
        self.at += 1; // the opening quote
        let start = self.at;
        let mut owned: Option<Vec<u8>> = None;
        loop {
            let run_start = self.at;
            while matches!(self.peek(), Some(byte) if byte != b'"' && byte != b'\\' && byte >= 0x20)
            {
                self.at += 1;
            }
            if let Some(owned) = owned.as_mut() {
                owned.extend_from_slice(&self.text[run_start..self.at]);
            }
            match self.peek() {
                Some(b'"') => {
                    let end = self.at;
                    self.at += 1;
                    return Ok(match owned {
                        Some(owned) => Cow::Owned(owned),
                        None => Cow::Borrowed(&self.text[start..end]),
                    });
                }
                Some(b'\\') => {
                    let owned = owned.get_or_insert_with(|| self.text[start..self.at].to_vec());
                    self.at += 1;
                    let escaped = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.at += 1;
                            let character = self.unicode_escape()?;
                            let mut buffer = [0u8; 4];
                            owned.extend_from_slice(character.encode_utf8(&mut buffer).as_bytes());
                            continue;
                        }
                        _ => return Err(self.unexpected("an escape")),
                    };
                    self.at += 1;
                    owned.push(u8::try_from(escaped).unwrap_or(b'?'));
                }
                Some(_) => {
                    return Err(self.unexpected("a character (control characters must be escaped)"))
                }
                None => return Err("not valid JSON: unterminated string".into()),
            }
        }
    }

    fn hex4(&mut self) -> std::result::Result<u32, String> {
        let digits = self
            .text
            .get(self.at..self.at + 4)
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .filter(|digits| digits.bytes().all(|byte| byte.is_ascii_hexdigit()))
            .and_then(|digits| u32::from_str_radix(digits, 16).ok())
            .ok_or_else(|| self.unexpected("four hex digits"))?;
        self.at += 4;
        Ok(digits)
    }

    /// The character of a `\u` escape (after the `u`), a surrogate pair taken whole.
    fn unicode_escape(&mut self) -> std::result::Result<char, String> {
        let first = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&first) {
            if !self.text[self.at..].starts_with(b"\\u") {
                return Err("not valid JSON: a lone surrogate in a \\u escape".into());
            }
            self.at += 2;
            let second = self.hex4()?;
            if !(0xDC00..0xE000).contains(&second) {
                return Err("not valid JSON: a lone surrogate in a \\u escape".into());
            }
            0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
        } else {
            first
        };
        char::from_u32(code)
            .ok_or_else(|| "not valid JSON: a lone surrogate in a \\u escape".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &str) -> Result<Vec<Entry>> {
        let mut unpacker = Unpacker::new(text.as_bytes(), "ts.gz");
        let mut out = Vec::new();
        while let Some(entry) = unpacker.next_entry()? {
            out.push(entry);
        }
        Ok(out)
    }

    fn error(text: &str) -> String {
        match entries(text) {
            Err(Error::InvalidLayerData(message)) => message,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn reads_what_the_packer_writes() {
        let mut packer = crate::tarsplit::Packer::new(Vec::new());
        packer.add_segment(b"header").unwrap();
        packer.claim_name(b"dir/file").unwrap();
        packer
            .add_file(b"dir/file", 5, Some([1, 2, 3, 4, 5, 6, 7, 8]))
            .unwrap();
        packer.claim_name(b"caf\xe9").unwrap();
        packer.add_file(b"caf\xe9", 0, None).unwrap();
        packer.claim_name(b"<&>\"\\\n").unwrap();
        packer.add_file(b"<&>\"\\\n", 0, None).unwrap();
        packer.add_segment(b"").unwrap();
        let text = String::from_utf8(packer.into_inner()).unwrap();
        assert_eq!(
            entries(&text).unwrap(),
            [
                Entry::Segment(b"header".to_vec()),
                Entry::File {
                    name: b"dir/file".to_vec(),
                    size: 5,
                    crc: Some(vec![1, 2, 3, 4, 5, 6, 7, 8])
                },
                Entry::File {
                    name: b"caf\xe9".to_vec(),
                    size: 0,
                    crc: None
                },
                Entry::File {
                    name: b"<&>\"\\\n".to_vec(),
                    size: 0,
                    crc: None
                },
                Entry::Segment(Vec::new()),
            ]
        );
    }

    #[test]
    fn name_raw_wins_and_null_is_missing() {
        let text = "{\"type\":1,\"name\":\"shown\",\"name_raw\":\"/w==\",\"payload\":null}\n\
                    {\"type\":1,\"name\":null,\"size\":null,\"position\":\"anything\"}\n\
                    {\"type\":2,\"payload\":null,\"extra\":[1,{\"a\":[true,false,null,-1.5e3]}]}\n\
                    {\"size\":7,\"type\":1,\"type\":2,\"payload\":\"eA==\"}";
        assert_eq!(
            entries(text).unwrap(),
            [
                Entry::File {
                    name: b"\xff".to_vec(),
                    size: 0,
                    crc: None
                },
                Entry::File {
                    name: Vec::new(),
                    size: 0,
                    crc: None
                },
                Entry::Segment(Vec::new()),
                Entry::Segment(b"x".to_vec()),
            ]
        );
    }

    #[test]
    fn escapes_decode() {
        let text = r#"{"type":1,"name":"a\u00e9\ud83d\ude00\/\t\u0041","size":-3}"#;
        assert_eq!(
            entries(text).unwrap(),
            [Entry::File {
                name: "aé😀/\tA".as_bytes().to_vec(),
                size: -3,
                crc: None
            }]
        );
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let good = "{\"type\":2,\"payload\":\"\"}\n";
        let cases: &[(&str, &str)] = &[
            ("{\"type\":2,\"payload\":\"\"", "not valid JSON"),
            ("", "not valid JSON"),
            ("[]", "not valid JSON"),
            ("{\"type\":2} {}", "not valid JSON"),
            ("{\"type\":2,}", "not valid JSON"),
            ("{\"type\":2,\"payload\":\"a\u{1}\"}", "control characters"),
            ("{\"type\":2,\"x\":\"\\ud800\"}", "lone surrogate"),
            ("{\"type\":2,\"x\":01}", "not valid JSON"),
            ("{\"type\":3,\"payload\":\"\"}", "unknown entry type 3"),
            ("{\"payload\":\"\"}", "no type"),
            ("{\"type\":null}", "no type"),
            ("{\"type\":\"2\"}", "\"type\" is not an integer"),
            ("{\"type\":2.0}", "\"type\" is not an integer"),
            (
                "{\"type\":1,\"size\":99999999999999999999}",
                "\"size\" is out of range",
            ),
            (
                "{\"type\":2,\"payload\":\"abc\"}",
                "\"payload\" is not valid base64",
            ),
            (
                "{\"type\":2,\"payload\":\"a*==\"}",
                "\"payload\" is not valid base64",
            ),
            (
                "{\"type\":1,\"name_raw\":\"%%\"}",
                "\"name_raw\" is not valid base64",
            ),
            ("{\"type\":1,\"name\":5}", "\"name\" is not a string"),
        ];
        for (line, reason) in cases {
            let message = error(&format!("{good}{good}{line}\n{good}"));
            assert!(
                message.starts_with("ts.gz: line 3 is not a tar-split entry: "),
                "{line:?}: {message}"
            );
            assert!(message.contains(reason), "{line:?}: {message}");
        }
        let deep = format!(
            "{{\"type\":2,\"x\":{}{}}}",
            "[".repeat(300),
            "]".repeat(300)
        );
        assert!(error(&deep).contains("nested deeper"));
        let bytes = b"{\"type\":1,\"name\":\"\xff\"}".to_vec();
        let mut unpacker = Unpacker::new(&bytes[..], "ts.gz");
        assert!(
            matches!(unpacker.next_entry(), Err(Error::InvalidLayerData(m)) if m.contains("UTF-8"))
        );
    }

    #[test]
    fn crlf_and_a_last_line_without_newline_are_fine() {
        let text = "{\"type\":2,\"payload\":\"eA==\"}\r\n{\"type\":2,\"payload\":\"eQ==\"}";
        assert_eq!(
            entries(text).unwrap(),
            [Entry::Segment(b"x".to_vec()), Entry::Segment(b"y".to_vec())]
        );
        assert!(entries("").unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn mangled_lines_are_errors_or_entries_never_panics() {
        const ALPHABET: &[u8] = b"{}[]\":,0-e.\\u\x00\xff n";
        let line = br#"{"type":1,"name":"a\u00e9\"b","name_raw":"/w==","size":12,"payload":"AQIDBAUGBwg=","x":[1,{"y":null}],"position":3}"#;
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut mangled = line.to_vec();
            for _ in 0..=next() % 4 {
                let at = usize::try_from(next() % mangled.len() as u64).unwrap();
                match next() % 3 {
                    0 => {
                        let pick = usize::try_from(next() % ALPHABET.len() as u64).unwrap();
                        mangled[at] = ALPHABET[pick];
                    }
                    1 => {
                        mangled.remove(at);
                    }
                    _ => mangled.truncate(at),
                }
                if mangled.is_empty() {
                    break;
                }
            }
            let _ = parse_line(&mangled);
        }
    }
}
