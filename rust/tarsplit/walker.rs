//! Walking a tar stream as tar-split's fork of Go's `archive/tar` does with `RawAccounting`,
//! and recording it as tar-split entries (Go's `asm.NewInputTarStream`).
//!
//! For each entry the bytes that are not file content (the previous entry's padding, header
//! blocks, PAX and GNU long-name data) become one segment; the content becomes a file entry with
//! its CRC-64. After the end-of-archive blocks, everything left in the stream is kept in
//! segments of 1 MiB, then one empty segment ends the list.

use std::io::{BufRead, Write};

use crate::crc64::Crc64;
use crate::error::{Error, Result};
use crate::paths::shown;
use crate::tarsplit::header::{
    format_of, is_header_only, is_sparse_pax, merge_pax, parse_block, parse_pax, parse_string,
    Header, PaxRecords, BLOCK,
};
use crate::tarsplit::packer::Packer;

/// Largest PAX or GNU long-name data we read (Go's upstream `maxSpecialFileSize`).
pub const MAX_SPECIAL_FILE: u64 = 1 << 20;
/// Largest run of non-content bytes before one entry (headers, PAX and long-name data). No real
/// archive comes near it; it keeps memory flat against endless chains of meta headers.
pub const MAX_RAW: usize = 64 << 20;
/// Size of the segments that hold what follows the archive.
pub const TRAILING_CHUNK: usize = 1 << 20;

/// Reads a tar stream from `R` and writes its tar-split entries through a [`Packer`].
pub struct Walker<R: BufRead, W: Write> {
    input: R,
    packer: Packer<W>,
    /// Decompressed bytes consumed so far.
    offset: u64,
    /// Non-content bytes of the entry being read.
    raw: Vec<u8>,
    /// Padding owed by the current entry, read before the next header.
    pad: usize,
    /// Content bytes of the current entry not read yet.
    remaining: u64,
    crc: Crc64,
    /// The file entry to write once the current entry's content is read.
    pending: Option<Pending>,
    ended: bool,
}

struct Pending {
    name: Vec<u8>,
    size: i64,
    with_crc: bool,
}

/// How a read of up to `n` bytes ended.
enum Filled {
    Full,
    Short(usize),
}

impl<R: BufRead, W: Write> Walker<R, W> {
    /// A walker over `input`, recording to `packer`.
    pub fn new(input: R, packer: Packer<W>) -> Self {
        Self {
            input,
            packer,
            offset: 0,
            raw: Vec::with_capacity(4 * BLOCK),
            pad: 0,
            remaining: 0,
            crc: Crc64::new(),
            pending: None,
            ended: false,
        }
    }

    /// Decompressed bytes consumed so far.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Append up to `count` bytes of input to `self.raw`.
    fn read_raw(&mut self, count: usize) -> Result<Filled> {
        let mut left = count;
        while left > 0 {
            let available = self.input.fill_buf().map_err(input_error)?;
            if available.is_empty() {
                return Ok(Filled::Short(count - left));
            }
            let take = available.len().min(left);
            self.raw.extend_from_slice(&available[..take]);
            self.input.consume(take);
            self.offset += take as u64;
            left -= take;
        }
        Ok(Filled::Full)
    }

    /// The next entry, with its non-content bytes recorded; `None` at the end of the archive.
    ///
    /// Whatever is left of the previous entry's content is read (and checksummed) first.
    pub fn next_entry(&mut self) -> Result<Option<Header>> {
        if self.ended {
            return Ok(None);
        }
        self.finish_content()?;
        self.raw.clear();
        let Some(header) = self.read_entry()? else {
            self.ended = true;
            return Ok(None);
        };
        if !self.raw.is_empty() {
            self.packer.add_segment(&self.raw)?;
        }
        if self.packer.claim_name(&header.name).is_err() {
            return Err(tar_error(
                header.offset,
                &format!("duplicate path {}", shown(&header.name)),
            ));
        }
        self.pending = Some(Pending {
            name: header.name.clone(),
            size: header.size,
            with_crc: header.size > 0,
        });
        Ok(Some(header))
    }

    /// Go's `Reader.next`: headers until one that is an entry of its own.
    fn read_entry(&mut self) -> Result<Option<Header>> {
        let mut pax: Option<PaxRecords> = None;
        let mut long_name: Vec<u8> = Vec::new();
        let mut long_link: Vec<u8> = Vec::new();
        loop {
            if self.pad > 0 {
                let start = self.raw.len();
                let pad = std::mem::take(&mut self.pad);
                match self.read_raw(pad)? {
                    // The stream ends right after the content: the archive ends there (Go too).
                    Filled::Short(0) => {
                        self.raw.truncate(start);
                        return Ok(None);
                    }
                    // Go ends here too but drops the partial padding from tar-split, so its diff
                    // would differ from the blob: refuse the truncated archive instead.
                    Filled::Short(_) => {
                        return Err(tar_error(
                            self.offset,
                            "the archive is truncated inside the padding of an entry",
                        ));
                    }
                    Filled::Full => {}
                }
            }
            if self.raw.len() > MAX_RAW {
                return Err(tar_error(
                    self.offset,
                    "too many meta headers before one entry",
                ));
            }
            let offset = self.offset;
            let Some(mut header) = self.read_header()? else {
                return Ok(None);
            };
            let datasize = Self::datasize(&header, offset)?;
            self.pad = padding(datasize);
            match header.typeflag {
                b'x' | b'g' => {
                    let data = self.special_data(datasize, offset, "PAX header")?;
                    let records = parse_pax(&self.raw[data..])
                        .map_err(|_| tar_error(offset, "invalid PAX header"))?;
                    if header.typeflag == b'g' {
                        // The global header is an entry of its own; Go merges its records into
                        // it only for the name, and ignores their errors.
                        if let Some(path) = records.get(&b"path"[..]).filter(|p| !p.is_empty()) {
                            header.name.clone_from(path);
                        }
                        return Ok(Some(Header {
                            typeflag: b'g',
                            name: header.name,
                            offset,
                            ..Header::default()
                        }));
                    }
                    pax = Some(records);
                }
                b'L' | b'K' => {
                    let data = self.special_data(datasize, offset, "GNU long name")?;
                    let name = parse_string(&self.raw[data..]).to_vec();
                    if header.typeflag == b'L' {
                        long_name = name;
                    } else {
                        long_link = name;
                    }
                }
                _ => {
                    if let Some(records) = &pax {
                        merge_pax(&mut header, records)
                            .map_err(|_| tar_error(offset, "invalid PAX record"))?;
                    }
                    if !long_name.is_empty() {
                        header.name = long_name;
                    }
                    if !long_link.is_empty() {
                        header.linkname = long_link;
                    }
                    if header.typeflag == 0 {
                        header.typeflag = if header.name.ends_with(b"/") {
                            b'5'
                        } else {
                            b'0'
                        };
                    }
                    let datasize = Self::datasize(&header, offset)?;
                    if header.typeflag == b'S' || pax.as_ref().is_some_and(is_sparse_pax) {
                        return Err(tar_error(
                            offset,
                            &format!(
                                "entry {} is a sparse file: sparse files cannot be stored \
                                 byte-exactly and are not supported",
                                shown(&header.name)
                            ),
                        ));
                    }
                    self.pad = padding(datasize);
                    self.remaining = datasize;
                    self.crc = Crc64::new();
                    header.offset = offset;
                    return Ok(Some(header));
                }
            }
        }
    }

    /// Go's `readHeader`: one header block into `raw`, parsed; `None` at the end of the archive.
    fn read_header(&mut self) -> Result<Option<Header>> {
        let offset = self.offset;
        let start = self.raw.len();
        match self.read_raw(BLOCK)? {
            Filled::Full => {}
            Filled::Short(0) => return Ok(None),
            Filled::Short(_) => return Err(tar_error(offset, "truncated header")),
        }
        let mut block = [0u8; BLOCK];
        block.copy_from_slice(&self.raw[start..]);
        if block.iter().all(|&byte| byte == 0) {
            let second = self.raw.len();
            return match self.read_raw(BLOCK)? {
                Filled::Short(0) => Ok(None),
                Filled::Short(_) => Err(tar_error(
                    offset + BLOCK as u64,
                    "truncated end-of-archive block",
                )),
                Filled::Full if self.raw[second..].iter().all(|&byte| byte == 0) => Ok(None),
                Filled::Full => Err(tar_error(
                    offset,
                    "a zero block followed by a non-zero block",
                )),
            };
        }
        let Some(format) = format_of(&block) else {
            return Err(tar_error(offset, "invalid tar header checksum"));
        };
        parse_block(&block, format)
            .map(Some)
            .map_err(|_| tar_error(offset, "invalid tar header"))
    }

    /// Go's `handleRegularFile`: the content length, 0 for header-only types.
    fn datasize(header: &Header, offset: u64) -> Result<u64> {
        if is_header_only(header.typeflag) {
            return Ok(0);
        }
        u64::try_from(header.size).map_err(|_| tar_error(offset, "negative size"))
    }

    /// Read PAX or long-name data into `raw`; returns where it starts there.
    fn special_data(&mut self, size: u64, offset: u64, what: &str) -> Result<usize> {
        if size > MAX_SPECIAL_FILE {
            return Err(tar_error(
                offset,
                &format!("{what} of {size} bytes is larger than 1 MiB"),
            ));
        }
        let start = self.raw.len();
        // At most 1 MiB: fits any usize.
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        match self.read_raw(size)? {
            Filled::Full => Ok(start),
            Filled::Short(_) => Err(tar_error(offset, &format!("{what} is truncated"))),
        }
    }

    /// Content bytes of the current entry not read yet.
    #[must_use]
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Stream the rest of the current entry's content to `sink`, in the pieces the input holds.
    pub fn read_content(&mut self, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        while self.remaining > 0 {
            let available = self.input.fill_buf().map_err(input_error)?;
            if available.is_empty() {
                let name = self
                    .pending
                    .as_ref()
                    .map(|p| shown(&p.name))
                    .unwrap_or_default();
                return Err(tar_error(
                    self.offset,
                    &format!(
                        "entry {name} is truncated ({} bytes of content missing)",
                        self.remaining
                    ),
                ));
            }
            let take = usize::try_from(self.remaining)
                .unwrap_or(usize::MAX)
                .min(available.len());
            let chunk = &available[..take];
            self.crc.update(chunk);
            sink(chunk)?;
            self.input.consume(take);
            self.offset += take as u64;
            self.remaining -= take as u64;
        }
        Ok(())
    }

    /// Read what the consumer left of the content, then write the file entry.
    fn finish_content(&mut self) -> Result<()> {
        if self.pending.is_none() {
            return Ok(());
        }
        self.read_content(&mut |_| Ok(()))?;
        if let Some(pending) = self.pending.take() {
            let crc = pending.with_crc.then(|| self.crc.finish());
            self.packer.add_file(&pending.name, pending.size, crc)?;
        }
        Ok(())
    }

    /// After [`Walker::next_entry`] gave `None`: record the end blocks and everything after them,
    /// then the empty segment that ends the list, and return the packer.
    pub fn finish(self) -> Result<Packer<W>> {
        let (mut packer, _) = self.finish_trailing()?;
        packer.add_segment(&[])?;
        Ok(packer)
    }

    /// Like [`Walker::finish`] without the final empty segment; also says whether the last
    /// trailing segment was a short, non-empty one. Go writes the empty segment when its last
    /// read of the stream returned nothing, which depends on the decompressor: its zstd reader
    /// returns the last bytes together with the end of the stream, so no empty segment follows.
    pub fn finish_trailing(mut self) -> Result<(Packer<W>, bool)> {
        while self.next_entry()?.is_some() {}
        if !self.raw.is_empty() {
            self.packer.add_segment(&self.raw)?;
        }
        let mut chunk = std::mem::take(&mut self.raw);
        chunk.clear();
        chunk.reserve(TRAILING_CHUNK);
        loop {
            let available = self.input.fill_buf().map_err(input_error)?;
            if available.is_empty() {
                break;
            }
            let take = available.len().min(TRAILING_CHUNK - chunk.len());
            chunk.extend_from_slice(&available[..take]);
            self.input.consume(take);
            self.offset += take as u64;
            if chunk.len() == TRAILING_CHUNK {
                self.packer.add_segment(&chunk)?;
                chunk.clear();
            }
        }
        let short_last = !chunk.is_empty();
        if short_last {
            self.packer.add_segment(&chunk)?;
        }
        Ok((self.packer, short_last))
    }
}

fn tar_error(offset: u64, message: &str) -> Error {
    Error::InvalidLayerData(format!("invalid tar archive at offset {offset}: {message}"))
}

/// A failure of the stream under the walker (its source or its decompressor).
fn input_error(source: std::io::Error) -> Error {
    Error::Io {
        source,
        path: "layer stream".into(),
    }
}

/// Go's `blockPadding`: bytes from `size` to the next block boundary.
fn padding(size: u64) -> usize {
    // Always below 512.
    usize::try_from(size.wrapping_neg() & (BLOCK as u64 - 1)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crc64;
    // A USTAR header block with a valid checksum, as the assembler's tests build them.
    use crate::tarsplit::assemble::tests::header as block;
    use base64::Engine as _;

    fn padded(data: &[u8]) -> Vec<u8> {
        let mut out = data.to_vec();
        out.resize(data.len().div_ceil(BLOCK) * BLOCK, 0);
        out
    }

    fn b64(data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(data)
    }

    /// The tar-split lines of `archive`, or the error.
    fn lines(archive: &[u8]) -> std::result::Result<Vec<String>, String> {
        let mut walker = Walker::new(archive, Packer::new(Vec::new()));
        let run = || -> Result<Vec<u8>> {
            while walker.next_entry()?.is_some() {}
            Ok(walker.finish()?.into_inner())
        };
        run()
            .map(|out| {
                String::from_utf8(out)
                    .unwrap()
                    .lines()
                    .map(String::from)
                    .collect()
            })
            .map_err(|error| error.to_string())
    }

    #[test]
    fn file_padding_end_blocks_and_trailing_bytes() {
        let header = block(b"a", b'0', 5, b"");
        let mut archive = header.clone();
        archive.extend(padded(b"hello"));
        archive.extend([0u8; 1024]);
        archive.extend(b"xyz");
        let crc = crc64::checksum(b"hello").to_be_bytes();
        let end = vec![0u8; 507 + 1024];
        assert_eq!(
            lines(&archive).unwrap(),
            [
                format!(
                    "{{\"type\":2,\"payload\":\"{}\",\"position\":0}}",
                    b64(&header)
                ),
                format!(
                    "{{\"type\":1,\"name\":\"a\",\"size\":5,\"payload\":\"{}\",\"position\":1}}",
                    b64(&crc)
                ),
                format!(
                    "{{\"type\":2,\"payload\":\"{}\",\"position\":2}}",
                    b64(&end)
                ),
                format!(
                    "{{\"type\":2,\"payload\":\"{}\",\"position\":3}}",
                    b64(b"xyz")
                ),
                "{\"type\":2,\"payload\":\"\",\"position\":4}".to_string(),
            ]
        );
    }

    #[test]
    fn long_names_and_pax_records_replace_the_header_name() {
        let long = vec![b'n'; 300];
        let mut archive = block(b"././@LongLink", b'L', 301, b"");
        let mut data = long.clone();
        data.push(0);
        archive.extend(padded(&data));
        archive.extend(block(b"short", b'0', 0, b""));
        let record = b"16 path=paxname\n";
        archive.extend(block(b"PaxHeaders/x", b'x', record.len() as u64, b""));
        archive.extend(padded(record));
        archive.extend(block(b"ignored", b'2', 0, b"target"));
        archive.extend([0u8; 1024]);
        let lines = lines(&archive).unwrap();
        assert_eq!(lines.len(), 6, "{lines:?}");
        assert!(lines[1].starts_with(&format!(
            "{{\"type\":1,\"name\":\"{}\",\"payload\":null",
            "n".repeat(300)
        )));
        assert_eq!(
            lines[3],
            "{\"type\":1,\"name\":\"paxname\",\"payload\":null,\"position\":3}"
        );
    }

    #[test]
    fn a_partial_padding_at_the_end_is_refused() {
        let mut archive = block(b"f", b'0', 3, b"");
        archive.extend(b"abc");
        archive.extend([0u8; 100]);
        assert!(lines(&archive)
            .unwrap_err()
            .contains("truncated inside the padding"));
    }

    #[test]
    fn an_archive_may_end_right_after_the_content() {
        let mut archive = block(b"f", b'0', 3, b"");
        archive.extend(b"abc");
        let lines = lines(&archive).unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2], "{\"type\":2,\"payload\":\"\",\"position\":2}");
    }

    #[test]
    fn malformed_archives_are_refused_with_their_offset() {
        let file = block(b"f", b'0', 3, b"");
        let mut truncated = file.clone();
        truncated.extend(b"ab");
        assert!(lines(&truncated).unwrap_err().contains("offset 514"));
        let mut bad = file.clone();
        bad[0] = b'g';
        assert!(lines(&bad).unwrap_err().contains("checksum"));
        assert!(lines(&file[..100])
            .unwrap_err()
            .contains("truncated header"));
        let mut zero_then_header = vec![0u8; BLOCK];
        zero_then_header.extend(&file);
        assert!(lines(&zero_then_header).unwrap_err().contains("zero block"));
        let mut duplicate = block(b"a/b", b'5', 0, b"");
        duplicate.extend(block(b"./a//b/", b'5', 0, b""));
        assert!(lines(&duplicate).unwrap_err().contains("duplicate path"));
        let mut big_pax = block(b"x", b'x', (1 << 20) + 1, b"");
        big_pax.extend(vec![0u8; (1 << 20) + 512]);
        assert!(lines(&big_pax).unwrap_err().contains("larger than 1 MiB"));
        let sparse = block(b"s", b'S', 0, b"");
        assert!(lines(&sparse).unwrap_err().contains("sparse"));
    }

    #[test]
    fn header_only_types_keep_their_size_and_an_empty_crc() {
        let mut archive = block(b"d/", b'5', 700, b"");
        archive.extend([0u8; 1024]);
        let lines = lines(&archive).unwrap();
        assert_eq!(
            lines[1],
            "{\"type\":1,\"name\":\"d/\",\"size\":700,\"payload\":\"AAAAAAAAAAA=\",\"position\":1}"
        );
    }

    #[test]
    fn trailing_bytes_go_in_one_mebibyte_segments() {
        let mut archive = vec![0u8; 1024];
        archive.extend(vec![7u8; (2 << 20) + 5]);
        let lines = lines(&archive).unwrap();
        // end blocks, 1 MiB, 1 MiB, 5 bytes, empty
        assert_eq!(lines.len(), 5);
        assert!(lines[3].contains(&b64(&[7u8; 5])));
    }
}
