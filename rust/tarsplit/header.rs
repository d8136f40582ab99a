//! One tar header block, parsed as tar-split's fork of Go's `archive/tar` parses it
//! (`reader.go` `readHeader`, `format.go`, `strconv.go`), and PAX records.

use std::collections::BTreeMap;

/// Size of a tar block.
pub const BLOCK: usize = 512;

/// A point in time: seconds since the epoch and nanoseconds (0..1e9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time {
    /// Seconds since 1970-01-01 UTC (negative before).
    pub seconds: i64,
    /// Nanoseconds within the second.
    pub nanoseconds: u32,
}

impl Time {
    /// A whole second.
    #[must_use]
    pub fn from_seconds(seconds: i64) -> Self {
        Self {
            seconds,
            nanoseconds: 0,
        }
    }
}

/// Header formats, as far as the fields we read differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Unix V7: no magic.
    V7,
    /// USTAR (and PAX): magic `ustar\0`.
    Ustar,
    /// GNU: magic `ustar ` and version ` \0`.
    Gnu,
    /// STAR: USTAR magic with `tar\0` at 508.
    Star,
}

/// What one tar entry says (after PAX records and GNU long names are applied).
#[derive(Clone, Debug, Default)]
pub struct Header {
    /// The type flag byte (`b'0'`, `b'5'`...).
    pub typeflag: u8,
    /// The name, as stored (not cleaned).
    pub name: Vec<u8>,
    /// The link target of hard and symbolic links.
    pub linkname: Vec<u8>,
    /// Size of the content as the header states it.
    pub size: i64,
    /// Permission and special bits.
    pub mode: i64,
    /// Owner.
    pub uid: i64,
    /// Group.
    pub gid: i64,
    /// Modification time.
    pub mtime: Time,
    /// Access time, when the archive has one.
    pub atime: Option<Time>,
    /// Device numbers of character and block devices.
    pub devmajor: i64,
    /// See `devmajor`.
    pub devminor: i64,
    /// Extended attributes from `SCHILY.xattr.*` PAX records, by name.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Offset of the entry's own header block in the decompressed stream (after its PAX and
    /// GNU long-name blocks), for messages.
    pub offset: u64,
}

/// Whether entries of this type have no content whatever their size says (Go's
/// `isHeaderOnlyType`): hard link, symlink, char and block device, directory, fifo.
#[must_use]
pub fn is_header_only(typeflag: u8) -> bool {
    matches!(typeflag, b'1'..=b'6')
}

/// A field failed to parse (Go's `ErrHeader`).
#[derive(Debug, PartialEq, Eq)]
pub struct BadField;

/// A string field: up to the first NUL.
#[must_use]
pub fn parse_string(field: &[u8]) -> &[u8] {
    match field.iter().position(|&byte| byte == 0) {
        Some(nul) => &field[..nul],
        None => field,
    }
}

/// Go's `strconv.ParseUint(text, 8, 64)`: octal digits only, no sign, no overflow.
fn parse_octal_digits(text: &[u8]) -> Result<u64, BadField> {
    if text.is_empty() {
        return Err(BadField);
    }
    let mut value: u64 = 0;
    for &byte in text {
        if !(b'0'..=b'7').contains(&byte) {
            return Err(BadField);
        }
        value = value
            .checked_mul(8)
            .and_then(|shifted| shifted.checked_add(u64::from(byte - b'0')))
            .ok_or(BadField)?;
    }
    Ok(value)
}

/// Go's `parser.parseOctal`: trim spaces and NULs from both ends, cut at the first NUL.
pub fn parse_octal(field: &[u8]) -> Result<i64, BadField> {
    let start = field.iter().position(|&byte| byte != b' ' && byte != 0);
    let Some(start) = start else { return Ok(0) };
    let end = field
        .iter()
        .rposition(|&byte| byte != b' ' && byte != 0)
        .map_or(start, |last| last + 1);
    let value = parse_octal_digits(parse_string(&field[start..end]))?;
    // Go converts with int64(x): values above i64::MAX wrap.
    Ok(i64::from_ne_bytes(value.to_ne_bytes()))
}

/// Go's `parser.parseNumeric`: base-256 when the high bit of the first byte is set, else octal.
pub fn parse_numeric(field: &[u8]) -> Result<i64, BadField> {
    let Some(&first) = field.first() else {
        return Ok(0);
    };
    if first & 0x80 == 0 {
        return parse_octal(field);
    }
    let invert: u8 = if first & 0x40 != 0 { 0xFF } else { 0 };
    let mut value: u64 = 0;
    for (index, &byte) in field.iter().enumerate() {
        let mut byte = byte ^ invert;
        if index == 0 {
            byte &= 0x7F;
        }
        if value >> 56 > 0 {
            return Err(BadField);
        }
        value = (value << 8) | u64::from(byte);
    }
    if value >> 63 > 0 {
        return Err(BadField);
    }
    let value = i64::try_from(value).map_err(|_| BadField)?;
    Ok(if invert == 0xFF { !value } else { value })
}

/// The unsigned and signed sums of the block with the checksum field read as spaces.
fn checksums(block: &[u8; BLOCK]) -> (i64, i64) {
    let mut unsigned = 0i64;
    let mut signed = 0i64;
    for (index, &byte) in block.iter().enumerate() {
        let byte = if (148..156).contains(&index) {
            b' '
        } else {
            byte
        };
        unsigned += i64::from(byte);
        signed += i64::from(i8::from_ne_bytes([byte]));
    }
    (unsigned, signed)
}

/// The block's format, or `None` when its checksum does not match (Go's `GetFormat`).
#[must_use]
pub fn format_of(block: &[u8; BLOCK]) -> Option<Format> {
    let stored = parse_octal(&block[148..156]).ok()?;
    let (unsigned, signed) = checksums(block);
    if stored != unsigned && stored != signed {
        return None;
    }
    let magic = &block[257..263];
    let version = &block[263..265];
    Some(if magic == b"ustar\0" && &block[508..512] == b"tar\0" {
        Format::Star
    } else if magic == b"ustar\0" {
        Format::Ustar
    } else if magic == b"ustar " && version == b" \0" {
        Format::Gnu
    } else {
        Format::V7
    })
}

/// Parse a header block whose checksum was verified (Go's `readHeader` after `GetFormat`).
pub fn parse_block(block: &[u8; BLOCK], format: Format) -> Result<Header, BadField> {
    let mut failed = false;
    let mut numeric = |field: &[u8]| -> i64 {
        parse_numeric(field).unwrap_or_else(|BadField| {
            failed = true;
            0
        })
    };
    let mut header = Header {
        typeflag: block[156],
        name: parse_string(&block[0..100]).to_vec(),
        linkname: parse_string(&block[157..257]).to_vec(),
        size: numeric(&block[124..136]),
        mode: numeric(&block[100..108]),
        uid: numeric(&block[108..116]),
        gid: numeric(&block[116..124]),
        mtime: Time::from_seconds(numeric(&block[136..148])),
        ..Header::default()
    };
    if format != Format::V7 {
        header.devmajor = numeric(&block[329..337]);
        header.devminor = numeric(&block[337..345]);
        let mut prefix: &[u8] = &[];
        match format {
            Format::Ustar => prefix = parse_string(&block[345..500]),
            Format::Star => {
                prefix = parse_string(&block[345..476]);
                header.atime = Some(Time::from_seconds(numeric(&block[476..488])));
                // ctime is parsed (its errors count) but not used.
                numeric(&block[488..500]);
            }
            Format::Gnu => {
                // Parsed apart: when these do not parse, they are taken for a prefix written
                // by Go before 1.8 (golang.org/issue/12594), not for an error.
                let mut gnu_failed = false;
                let mut atime = None;
                if block[345] != 0 {
                    match parse_numeric(&block[345..357]) {
                        Ok(seconds) => atime = Some(Time::from_seconds(seconds)),
                        Err(BadField) => gnu_failed = true,
                    }
                }
                if block[357] != 0 && parse_numeric(&block[357..369]).is_err() {
                    gnu_failed = true;
                }
                if gnu_failed {
                    let candidate = parse_string(&block[345..500]);
                    if candidate.is_ascii() {
                        prefix = candidate;
                    }
                } else {
                    header.atime = atime;
                }
            }
            Format::V7 => {}
        }
        if !prefix.is_empty() {
            let mut name = Vec::with_capacity(prefix.len() + 1 + header.name.len());
            name.extend_from_slice(prefix);
            name.push(b'/');
            name.extend_from_slice(&header.name);
            header.name = name;
        }
    }
    if failed {
        Err(BadField)
    } else {
        Ok(header)
    }
}

/// PAX records of one extended header, by key (a later record replaces an earlier one).
pub type PaxRecords = BTreeMap<Vec<u8>, Vec<u8>>;

/// Key of the sparse map that `GNU.sparse.offset`/`numbytes` pairs form (PAX sparse 0.0).
pub const SPARSE_MAP: &[u8] = b"GNU.sparse.map";

/// Parse the records of a PAX header's data (Go's `parsePAX` and `parsePAXRecord`).
pub fn parse_pax(mut data: &[u8]) -> Result<PaxRecords, BadField> {
    let mut records = PaxRecords::new();
    let mut sparse_map: Vec<&[u8]> = Vec::new();
    while !data.is_empty() {
        let space = data.iter().position(|&byte| byte == b' ').ok_or(BadField)?;
        let length = parse_decimal(&data[..space]).ok_or(BadField)?;
        let length = usize::try_from(length).map_err(|_| BadField)?;
        if length < 5 || data.len() < length || space + 1 > length - 1 {
            return Err(BadField);
        }
        let record = &data[space + 1..length - 1];
        if data[length - 1] != b'\n' {
            return Err(BadField);
        }
        data = &data[length..];
        let equals = record
            .iter()
            .position(|&byte| byte == b'=')
            .ok_or(BadField)?;
        let (key, value) = (&record[..equals], &record[equals + 1..]);
        let valid = !key.is_empty()
            && match key {
                b"path" | b"linkpath" | b"uname" | b"gname" => !value.contains(&0),
                _ => !key.contains(&0),
            };
        if !valid {
            return Err(BadField);
        }
        match key {
            b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                let expected: &[u8] = if sparse_map.len().is_multiple_of(2) {
                    b"GNU.sparse.offset"
                } else {
                    b"GNU.sparse.numbytes"
                };
                if key != expected || value.contains(&b',') {
                    return Err(BadField);
                }
                sparse_map.push(value);
            }
            _ => {
                records.insert(key.to_vec(), value.to_vec());
            }
        }
    }
    if !sparse_map.is_empty() {
        records.insert(SPARSE_MAP.to_vec(), sparse_map.join(&b","[..]));
    }
    Ok(records)
}

/// Go's `strconv.ParseInt(text, 10, 64)`: optional sign, decimal digits, no overflow.
#[must_use]
pub fn parse_decimal(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: i64 = 0;
    for &byte in digits {
        if !byte.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(byte - b'0');
        value = value.checked_mul(10)?;
        value = if negative {
            value.checked_sub(digit)?
        } else {
            value.checked_add(digit)?
        };
    }
    Some(value)
}

/// Go's `parsePAXTime`: `seconds[.fraction]`, the fraction cut or padded to nine digits.
pub fn parse_pax_time(text: &[u8]) -> Result<Time, BadField> {
    let (whole, fraction) = match text.iter().position(|&byte| byte == b'.') {
        Some(dot) => (&text[..dot], &text[dot + 1..]),
        None => (text, &b""[..]),
    };
    let seconds = parse_decimal(whole).ok_or(BadField)?;
    if fraction.is_empty() {
        return Ok(Time::from_seconds(seconds));
    }
    if !fraction.iter().all(u8::is_ascii_digit) {
        return Err(BadField);
    }
    let mut nanoseconds: i64 = 0;
    for index in 0..9 {
        nanoseconds = nanoseconds * 10 + fraction.get(index).map_or(0, |&d| i64::from(d - b'0'));
    }
    if whole.first() == Some(&b'-') {
        nanoseconds = -nanoseconds;
    }
    // time.Unix(seconds, nanoseconds) normalises the nanoseconds into 0..1e9.
    let total_seconds = seconds
        .checked_add(nanoseconds.div_euclid(1_000_000_000))
        .ok_or(BadField)?;
    let nanoseconds = u32::try_from(nanoseconds.rem_euclid(1_000_000_000)).map_err(|_| BadField)?;
    Ok(Time {
        seconds: total_seconds,
        nanoseconds,
    })
}

/// Apply an extended header's records to the header of the entry they precede (Go's
/// `mergePAX`): an empty value keeps the header's own.
pub fn merge_pax(header: &mut Header, records: &PaxRecords) -> Result<(), BadField> {
    for (key, value) in records {
        if value.is_empty() {
            continue;
        }
        match key.as_slice() {
            b"path" => header.name.clone_from(value),
            b"linkpath" => header.linkname.clone_from(value),
            b"uname" | b"gname" => {}
            b"uid" => header.uid = parse_decimal(value).ok_or(BadField)?,
            b"gid" => header.gid = parse_decimal(value).ok_or(BadField)?,
            b"size" => header.size = parse_decimal(value).ok_or(BadField)?,
            b"mtime" => header.mtime = parse_pax_time(value)?,
            b"atime" => header.atime = Some(parse_pax_time(value)?),
            b"ctime" => {
                parse_pax_time(value)?;
            }
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    header.xattrs.insert(name.to_vec(), value.clone());
                }
            }
        }
    }
    Ok(())
}

/// Whether the records describe a GNU sparse file (Go's `readGNUSparsePAXHeaders`): a known
/// `GNU.sparse.major`/`minor` version, or a sparse map (formats 0.0 and 0.1).
#[must_use]
pub fn is_sparse_pax(records: &PaxRecords) -> bool {
    let get = |key: &[u8]| records.get(key).map_or(&b""[..], Vec::as_slice);
    match (get(b"GNU.sparse.major"), get(b"GNU.sparse.minor")) {
        (b"0", b"0" | b"1") | (b"1", b"0") => true,
        // An unknown version: Go reads the entry as a plain file.
        (major, minor) if !major.is_empty() || !minor.is_empty() => false,
        _ => !get(SPARSE_MAP).is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_like_go() {
        assert_eq!(parse_numeric(b"0000644\0"), Ok(0o644));
        assert_eq!(parse_numeric(b"  644  \0"), Ok(0o644));
        assert_eq!(parse_numeric(b"\0\0\0\0"), Ok(0));
        assert_eq!(parse_numeric(b"        "), Ok(0));
        assert_eq!(parse_numeric(b"12\x0034"), Ok(0o12));
        assert_eq!(parse_numeric(b"0008"), Err(BadField));
        assert_eq!(parse_numeric(b"1 2"), Err(BadField));
        assert_eq!(parse_numeric(b"+12"), Err(BadField));
        assert_eq!(parse_numeric(&[0x80, 0, 0, 0, 0, 0, 0, 1, 0]), Ok(256));
        assert_eq!(parse_numeric(&[0xFF; 8]), Ok(-1));
        assert_eq!(parse_numeric(&[0xFF, 0xFF, 0xFF, 0xFE]), Ok(-2));
        assert_eq!(
            parse_numeric(&[0x80, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
            Ok(i64::MAX)
        );
        assert_eq!(
            parse_numeric(&[0x80, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(BadField)
        );
        assert_eq!(
            parse_numeric(&[0x80, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(BadField)
        );
        assert_eq!(parse_octal(b"77777777777777777777777"), Err(BadField));
    }

    #[test]
    fn pax_records_parse_like_go() {
        let records = parse_pax(b"19 path=dir/a name\n12 uid=1000\n").unwrap();
        assert_eq!(records[&b"path"[..]], b"dir/a name");
        assert_eq!(records[&b"uid"[..]], b"1000");
        for bad in [
            &b"4 a=\n"[..],
            b"7 a=bc\n9",
            b"7 a=bcd",
            b"6 =bc\n",
            b"x a=b\n",
            b"9 path=\0\n",
            b"0000005 \n",
        ] {
            assert_eq!(parse_pax(bad), Err(BadField), "{bad:?}");
        }
        // A NUL may sit in the value of other keys.
        assert!(parse_pax(b"8 key=\0\n").is_ok());
        let sparse = parse_pax(
            b"23 GNU.sparse.offset=0\n25 GNU.sparse.numbytes=5\n23 GNU.sparse.offset=9\n25 GNU.sparse.numbytes=1\n",
        )
        .unwrap();
        assert_eq!(sparse[SPARSE_MAP], b"0,5,9,1");
        assert!(is_sparse_pax(&sparse));
        assert_eq!(parse_pax(b"25 GNU.sparse.numbytes=5\n"), Err(BadField));
    }

    #[test]
    fn pax_times_parse_like_go() {
        assert_eq!(
            parse_pax_time(b"1350244992"),
            Ok(Time::from_seconds(1_350_244_992))
        );
        assert_eq!(
            parse_pax_time(b"1350244992.02396"),
            Ok(Time {
                seconds: 1_350_244_992,
                nanoseconds: 23_960_000
            })
        );
        assert_eq!(
            parse_pax_time(b"1.0000000019"),
            Ok(Time {
                seconds: 1,
                nanoseconds: 1
            })
        );
        assert_eq!(
            parse_pax_time(b"-1.5"),
            Ok(Time {
                seconds: -2,
                nanoseconds: 500_000_000
            })
        );
        assert_eq!(parse_pax_time(b"5."), Ok(Time::from_seconds(5)));
        assert_eq!(parse_pax_time(b".5"), Err(BadField));
        assert_eq!(parse_pax_time(b"1.x"), Err(BadField));
        assert_eq!(parse_pax_time(b""), Err(BadField));
    }
}
