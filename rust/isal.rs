//! deflate and gzip through ISA-L's igzip (Intel's Intelligent Storage Acceleration Library,
//! built from source by the `isal-sys` crate), behind a safe face: [`BlockDeflater`] for the
//! blocks of gzip diffs, [`GzipDecoder`] for gzip blobs.
//!
//! Why igzip and not zlib-rs for the deflate of gzip diffs: the blocks of a parallel gzip diff
//! must end in a sync flush, so that they join into one deflate stream (docs/diff.md), which
//! libdeflate cannot do; of the libraries that can, igzip's level 1 measured 1.8x zlib-rs's level
//! 1 per core on the benchmark's rootfs layer, with 27% smaller output (docs/diff.md).

use std::io::{self, BufRead, Read};

use isal_sys::igzip_lib as ffi;

use crate::error::{Error, Result};

/// igzip's fastest level that still looks for matches (level 0 only does static Huffman).
const LEVEL: u32 = 1;
/// The work buffer igzip's documentation suggests for level 1.
const LEVEL_BUFFER: usize = ffi::ISAL_DEF_LVL1_DEFAULT as usize;

/// Compresses blocks into raw deflate that ends in a sync flush: byte-aligned and not final, so
/// that blocks compressed apart join into one deflate stream. A block refers to nothing before
/// it, so any number of these may work on the blocks of one stream at once.
pub struct BlockDeflater {
    /// igzip's state (80 KiB, so boxed).
    stream: Box<ffi::isal_zstream>,
    /// The hash tables of level 1, which the stream points to during a call.
    level_buffer: Box<[u8]>,
}

// SAFETY: the raw pointers in `stream` point into `level_buffer` (owned alongside it) or are
// reset before every use; nothing is shared with another thread.
unsafe impl Send for BlockDeflater {}

impl Default for BlockDeflater {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockDeflater {
    /// A deflater, ready for its first block.
    #[must_use]
    pub fn new() -> Self {
        // SAFETY: `isal_zstream` is a plain C struct of integers, arrays and raw pointers, for
        // which all zeros is a valid value; `isal_deflate_init` sets it up before every block.
        let stream = Box::new(unsafe { std::mem::zeroed::<ffi::isal_zstream>() });
        Self {
            stream,
            level_buffer: vec![0u8; LEVEL_BUFFER].into_boxed_slice(),
        }
    }

    /// Replace `output` with `input` as raw deflate ending in a sync flush. `input` must be
    /// under 4 GiB (a diff's blocks are 1 MiB).
    pub fn deflate(&mut self, input: &[u8], output: &mut Vec<u8>) -> Result<()> {
        let avail_in = u32::try_from(input.len())
            .map_err(|_| Error::Internal("a deflate block of 4 GiB or more".into()))?;
        output.clear();
        // Incompressible input grows by a few bytes per stored block of 64 KiB.
        output.reserve(input.len() + input.len() / 64 + 1024);
        let stream = &mut *self.stream;
        // SAFETY: `isal_deflate_init` only writes the struct it is given.
        unsafe { ffi::isal_deflate_init(stream) };
        stream.level = LEVEL;
        stream.level_buf = self.level_buffer.as_mut_ptr();
        stream.level_buf_size = u32::try_from(self.level_buffer.len()).unwrap_or(u32::MAX);
        #[allow(clippy::cast_possible_truncation)] // the constant is 1
        {
            stream.flush = ffi::SYNC_FLUSH as u16;
        }
        stream.end_of_stream = 0;
        // igzip reads through `next_in` only; the pointer is `*mut` in its C declaration.
        stream.next_in = input.as_ptr().cast_mut();
        stream.avail_in = avail_in;
        loop {
            let used = output.len();
            if output.capacity() - used < 64 {
                output.reserve(64 << 10);
            }
            let room = output.capacity() - used;
            // SAFETY: `used <= capacity`, so the pointer stays inside (or one past) the buffer.
            stream.next_out = unsafe { output.as_mut_ptr().add(used) };
            stream.avail_out = u32::try_from(room).unwrap_or(u32::MAX);
            let given = stream.avail_out;
            // SAFETY: `next_in`/`avail_in` describe `input`, which outlives the call;
            // `next_out`/`avail_out` describe the unused capacity of `output`; `level_buf` is
            // `self.level_buffer`, of `level_buf_size` bytes. igzip writes nowhere else.
            let status = unsafe { ffi::isal_deflate(stream) };
            let written = (given - stream.avail_out) as usize;
            // SAFETY: igzip initialised the `written` bytes after `used`.
            unsafe { output.set_len(used + written) };
            if status != ffi::COMP_OK.cast_signed() {
                stream.next_in = std::ptr::null_mut();
                return Err(Error::Internal(format!("igzip deflate failed ({status})")));
            }
            // The flush is complete once all input is taken and the stream is back at the
            // start of a block (igzip's own test for a finished sync flush).
            if stream.avail_in == 0
                && stream.internal_state.state == ffi::isal_zstate_state_ZSTATE_NEW_HDR
            {
                break;
            }
        }
        stream.next_in = std::ptr::null_mut();
        stream.next_out = std::ptr::null_mut();
        Ok(())
    }
}

/// gzip members back to back, inflated: what `flate2::bufread::MultiGzDecoder` and zlib give,
/// at igzip's speed (docs/apply.md). Each member's header is read here, as zlib reads it (method
/// 8, no reserved flag, its CRC-16 checked when it has one), because igzip's own header parser
/// fails on optional fields that arrive split across reads; igzip inflates the deflate data and
/// checks the CRC-32 and the length of the trailer. After a member, the input ends or another
/// member starts: anything else is an error, as a stream cut short is.
pub struct GzipDecoder<R: BufRead> {
    input: R,
    /// igzip's state (85 KiB, so boxed).
    state: Box<ffi::inflate_state>,
    /// Whether a member's deflate data is being read (its header is behind us).
    in_member: bool,
    /// Members started so far.
    members: u64,
    /// Whether the input ended where a member did (then reads give 0).
    ended: bool,
}

// SAFETY: the raw pointers in `state` are set before every call and cleared after it; nothing
// is shared with another thread.
unsafe impl<R: BufRead + Send> Send for GzipDecoder<R> {}

/// The flags of a gzip header (RFC 1952, 2.3.1).
const FLAG_HEADER_CRC: u8 = 1 << 1;
const FLAG_EXTRA: u8 = 1 << 2;
const FLAG_NAME: u8 = 1 << 3;
const FLAG_COMMENT: u8 = 1 << 4;
const FLAGS_RESERVED: u8 = 0xe0;

impl<R: BufRead> GzipDecoder<R> {
    /// A decoder of the gzip members `input` holds.
    pub fn new(input: R) -> Self {
        // SAFETY: `inflate_state` is a plain C struct of integers, arrays and raw pointers, for
        // which all zeros is a valid value; `isal_inflate_init` sets it up.
        let mut state = Box::new(unsafe { std::mem::zeroed::<ffi::inflate_state>() });
        // SAFETY: `isal_inflate_init` only writes the struct it is given.
        unsafe { ffi::isal_inflate_init(&raw mut *state) };
        Self {
            input,
            state,
            in_member: false,
            members: 0,
            ended: false,
        }
    }

    /// Read a member's header and get igzip ready for its deflate data and trailer.
    fn start_member(&mut self) -> io::Result<()> {
        read_member_header(&mut self.input)?;
        // SAFETY: `isal_inflate_reset` only writes the struct it is given.
        unsafe { ffi::isal_inflate_reset(&raw mut *self.state) };
        // Raw deflate, then the trailer checked against the CRC-32 and length of the output.
        self.state.crc_flag = ffi::ISAL_GZIP_NO_HDR_VER;
        self.in_member = true;
        self.members += 1;
        Ok(())
    }
}

fn invalid_header(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("invalid gzip header: {what}"),
    )
}

fn cut_short(error: io::Error) -> io::Error {
    if error.kind() == io::ErrorKind::UnexpectedEof {
        io::Error::new(io::ErrorKind::UnexpectedEof, "the gzip stream is cut short")
    } else {
        error
    }
}

/// Read `buffer.len()` bytes of a header into `buffer`, adding them to `crc`.
fn header_bytes(
    input: &mut impl BufRead,
    crc: &mut flate2::Crc,
    buffer: &mut [u8],
) -> io::Result<()> {
    input.read_exact(buffer).map_err(cut_short)?;
    crc.update(buffer);
    Ok(())
}

/// Skip `count` bytes of a header (its extra field), or through its next zero byte (its name or
/// comment) when `count` is `None`, adding them to `crc`; nothing is kept, however long.
fn skip_header_field(
    input: &mut impl BufRead,
    crc: &mut flate2::Crc,
    count: Option<usize>,
) -> io::Result<()> {
    let mut left = count.unwrap_or(usize::MAX);
    loop {
        let available = input.fill_buf()?;
        if available.is_empty() {
            return Err(cut_short(io::ErrorKind::UnexpectedEof.into()));
        }
        let (take, done) = match count {
            Some(_) => (available.len().min(left), available.len() >= left),
            None => match available.iter().position(|&byte| byte == 0) {
                Some(zero) => (zero + 1, true),
                None => (available.len(), false),
            },
        };
        crc.update(&available[..take]);
        input.consume(take);
        left -= take.min(left);
        if done {
            return Ok(());
        }
    }
}

/// Read a gzip member's header (RFC 1952, 2.3), checking it as zlib does.
fn read_member_header(input: &mut impl BufRead) -> io::Result<()> {
    let mut crc = flate2::Crc::new();
    let mut fixed = [0u8; 10];
    header_bytes(input, &mut crc, &mut fixed)?;
    if fixed[..2] != [0x1f, 0x8b] {
        return Err(invalid_header("no gzip magic number"));
    }
    if fixed[2] != 8 {
        return Err(invalid_header("compression method is not deflate"));
    }
    let flags = fixed[3];
    if flags & FLAGS_RESERVED != 0 {
        return Err(invalid_header("reserved flags are set"));
    }
    if flags & FLAG_EXTRA != 0 {
        let mut length = [0u8; 2];
        header_bytes(input, &mut crc, &mut length)?;
        skip_header_field(
            input,
            &mut crc,
            Some(usize::from(u16::from_le_bytes(length))),
        )?;
    }
    if flags & FLAG_NAME != 0 {
        skip_header_field(input, &mut crc, None)?;
    }
    if flags & FLAG_COMMENT != 0 {
        skip_header_field(input, &mut crc, None)?;
    }
    if flags & FLAG_HEADER_CRC != 0 {
        let expected = crc.sum().to_le_bytes();
        let mut found = [0u8; 2];
        input.read_exact(&mut found).map_err(cut_short)?;
        if found != expected[..2] {
            return Err(invalid_header("header checksum mismatch"));
        }
    }
    Ok(())
}

/// What igzip's inflate status `status` means.
fn inflate_failure(status: i32) -> io::Error {
    let what = match status {
        ffi::ISAL_INVALID_BLOCK => "invalid deflate block",
        ffi::ISAL_INVALID_SYMBOL => "invalid deflate symbol",
        ffi::ISAL_INVALID_LOOKBACK => "a match refers back before the start of the data",
        ffi::ISAL_INCORRECT_CHECKSUM => "the trailer's CRC-32 or length does not match the data",
        _ => return io::Error::other(format!("igzip inflate failed ({status})")),
    };
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl<R: BufRead> Read for GzipDecoder<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if buffer.is_empty() || self.ended {
            return Ok(0);
        }
        loop {
            if !self.in_member {
                // The input may end only after a whole member.
                if self.members > 0 && self.input.fill_buf()?.is_empty() {
                    self.ended = true;
                    return Ok(0);
                }
                self.start_member()?;
            }
            let available = self.input.fill_buf()?;
            if available.is_empty() {
                return Err(cut_short(io::ErrorKind::UnexpectedEof.into()));
            }
            let given_in = u32::try_from(available.len()).unwrap_or(u32::MAX);
            let given_out = u32::try_from(buffer.len()).unwrap_or(u32::MAX);
            let state = &mut *self.state;
            // igzip reads through `next_in` only; the pointer is `*mut` in its C declaration.
            state.next_in = available.as_ptr().cast_mut();
            state.avail_in = given_in;
            state.next_out = buffer.as_mut_ptr();
            state.avail_out = given_out;
            // SAFETY: `next_in`/`avail_in` describe the reader's buffered bytes and
            // `next_out`/`avail_out` the caller's buffer, both alive for the call; igzip keeps
            // what it must carry over in its own state, not in either buffer.
            let status = unsafe { ffi::isal_inflate(state) };
            let consumed = given_in.checked_sub(state.avail_in);
            let produced = (given_out - state.avail_out) as usize;
            state.next_in = std::ptr::null_mut();
            state.next_out = std::ptr::null_mut();
            let finished = state.block_state == ffi::isal_block_state_ISAL_BLOCK_FINISH;
            // On some corrupt streams igzip hands back more input than it was given (bytes it
            // had kept from earlier calls, at a trailer it then finds wrong).
            let Some(consumed) = consumed else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "corrupt data before the trailer",
                ));
            };
            self.input.consume(consumed as usize);
            if status != ffi::ISAL_DECOMP_OK.cast_signed() {
                return Err(inflate_failure(status));
            }
            if finished {
                self.in_member = false;
            }
            if produced > 0 {
                return Ok(produced);
            }
            if consumed == 0 && !finished {
                return Err(io::Error::other("igzip inflate made no progress"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Bytes that compress somewhat, like text.
    fn text(length: usize, seed: u32) -> Vec<u8> {
        let words: [&[u8]; 6] = [
            b"layer ", b"store ", b"diff ", b"tar ", b"gzip\n", b"block ",
        ];
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        let mut out = Vec::with_capacity(length + 8);
        while out.len() < length {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            out.extend_from_slice(words[(state % 6) as usize]);
            if state.is_multiple_of(7) {
                out.push(state.to_le_bytes()[1]);
            }
        }
        out.truncate(length);
        out
    }

    /// Blocks deflated apart and joined, with an empty final block: raw deflate of them all.
    fn joined(deflater: &mut BlockDeflater, blocks: &[Vec<u8>]) -> Vec<u8> {
        let mut stream = Vec::new();
        let mut output = Vec::new();
        for block in blocks {
            deflater.deflate(block, &mut output).unwrap();
            stream.extend_from_slice(&output);
        }
        stream.extend_from_slice(&[0x03, 0x00]);
        stream
    }

    fn gzip_member(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut encoder, data).unwrap();
        encoder.finish().unwrap()
    }

    /// `data` through a [`GzipDecoder`] over a reader that hands out `step` bytes at a time,
    /// read into buffers of `chunk` bytes.
    fn gunzip(data: &[u8], step: usize, chunk: usize) -> io::Result<Vec<u8>> {
        let reader = io::BufReader::with_capacity(step, data);
        let mut decoder = GzipDecoder::new(reader);
        let mut out = Vec::new();
        let mut buffer = vec![0u8; chunk];
        loop {
            match decoder.read(&mut buffer)? {
                0 => return Ok(out),
                count => out.extend_from_slice(&buffer[..count]),
            }
        }
    }

    #[test]
    fn members_back_to_back_inflate_whole_whatever_the_reads() {
        let first = text(300_000, 4);
        let second = text(70_000, 5);
        let mut data = gzip_member(&first);
        data.extend(gzip_member(b""));
        data.extend(gzip_member(&second));
        let whole = [first, second].concat();
        for (step, chunk) in [(1, 1), (7, 4096), (1 << 16, 1 << 20), (data.len(), 3)] {
            assert!(
                gunzip(&data, step, chunk).unwrap() == whole,
                "{step} {chunk}"
            );
        }
    }

    #[test]
    fn a_header_with_every_field_is_read() {
        let mut header = vec![0x1f, 0x8b, 8, 0x1e, 1, 2, 3, 4, 0, 3];
        header.extend([3, 0, b'a', b'b', b'c']); // FEXTRA
        header.extend(b"name\0comment\0"); // FNAME, FCOMMENT
        let mut crc = flate2::Crc::new();
        crc.update(&header);
        header.extend(&crc.sum().to_le_bytes()[..2]); // FHCRC: the CRC-32's low 16 bits
        let member = gzip_member(b"payload");
        let data = [header, member[10..].to_vec()].concat();
        for step in [200, 30, 20, 13, 12, 5, 1] {
            assert_eq!(
                gunzip(&data, step, 100)
                    .map_err(|e| format!("{step}: {e}"))
                    .unwrap(),
                b"payload"
            );
        }
    }

    #[test]
    fn bad_streams_are_errors() {
        let member = gzip_member(&text(50_000, 6));
        let mut bad_crc = member.clone();
        let at = bad_crc.len() - 8;
        bad_crc[at] ^= 1;
        let mut bad_length = member.clone();
        let at = bad_length.len() - 4;
        bad_length[at] ^= 1;
        let mut bad_method = member.clone();
        bad_method[2] = 7;
        let mut reserved_flag = member.clone();
        reserved_flag[3] |= 0x20;
        let mut header_crc = member[..10].to_vec();
        header_crc[3] |= FLAG_HEADER_CRC;
        header_crc.extend([0x12, 0x34]);
        header_crc.extend(&member[10..]);
        let cases: [(&str, Vec<u8>); 9] = [
            ("reserved flag", reserved_flag),
            ("bad header crc", header_crc),
            (
                "half a second header",
                [member.clone(), member[..5].to_vec()].concat(),
            ),
            ("cut short", member[..member.len() / 2].to_vec()),
            ("cut in the trailer", member[..member.len() - 3].to_vec()),
            ("trailing junk", [member.clone(), b"junk".to_vec()].concat()),
            ("bad crc", bad_crc),
            ("bad length", bad_length),
            ("bad method", bad_method),
        ];
        for (label, data) in cases {
            assert!(gunzip(&data, 1 << 16, 1 << 16).is_err(), "{label}");
            assert!(gunzip(&data, 3, 5).is_err(), "{label}");
        }
    }

    fn inflate(raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(raw)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn blocks_deflated_apart_join_into_one_stream() {
        let random: Vec<u8> = (0..300_000u32)
            .map(|n| n.wrapping_mul(2_654_435_761).to_le_bytes()[2])
            .collect();
        let blocks = vec![
            text(1 << 20, 1),
            Vec::new(),
            random,
            text(5, 2),
            vec![0u8; 700_000],
        ];
        let mut deflater = BlockDeflater::new();
        let stream = joined(&mut deflater, &blocks);
        assert_eq!(inflate(&stream), blocks.concat());
    }

    #[test]
    fn a_deflater_is_reused_and_compresses() {
        let mut deflater = BlockDeflater::new();
        let block = text(1 << 20, 3);
        let mut first = Vec::new();
        deflater.deflate(&block, &mut first).unwrap();
        let mut again = Vec::new();
        deflater.deflate(&block, &mut again).unwrap();
        assert_eq!(first, again, "each block starts afresh");
        assert!(first.len() < block.len() / 2, "{} bytes", first.len());
        // A sync flush ends with an empty stored block: 00 00 ff ff.
        assert!(first.ends_with(&[0x00, 0x00, 0xff, 0xff]));
    }
}
