//! Compression of layer blobs: detection from the first bytes, and multi-stream decoders.
//!
//! Detection follows Go's `archive.DetectCompression` (bzip2, gzip, xz, zstd, in that order).
//! gzip is inflated by ISA-L's igzip ([`crate::isal::GzipDecoder`]), bzip2 by libbz2-rs-sys, xz
//! by liblzma, zstd by libzstd.
//! Every decoder reads all the streams it is given back to back (gzip members, bzip2 streams, xz
//! streams with their padding, zstd frames); anything after the last stream that does not start
//! another one is corrupt data, like any other decoder error.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};

use crate::error::{Error, Result};

/// The compression of a layer blob, numbered as containers/storage records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None = 0,
    /// bzip2 (`BZh`).
    Bzip2 = 1,
    /// gzip (`1f 8b 08`).
    Gzip = 2,
    /// xz (`fd 37 7a 58 5a 00`).
    Xz = 3,
    /// zstd (`28 b5 2f fd`).
    Zstd = 4,
}

impl Compression {
    /// The compression numbered `code` (its discriminant), if there is one.
    #[must_use]
    pub fn from_code(code: i64) -> Option<Self> {
        [Self::None, Self::Bzip2, Self::Gzip, Self::Xz, Self::Zstd]
            .into_iter()
            .find(|compression| *compression as i64 == code)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "uncompressed",
            Compression::Bzip2 => "bzip2",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        })
    }
}

/// How many leading bytes [`detect`] needs to tell every format apart.
pub const MAGIC_LENGTH: usize = 6;

/// The compression whose magic number starts `prefix`.
#[must_use]
pub fn detect(prefix: &[u8]) -> Compression {
    if prefix.starts_with(&[0x42, 0x5A, 0x68]) {
        Compression::Bzip2
    } else if prefix.starts_with(&[0x1F, 0x8B, 0x08]) {
        Compression::Gzip
    } else if prefix.starts_with(&[0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]) {
        Compression::Xz
    } else if prefix.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Read up to [`MAGIC_LENGTH`] bytes from `reader` (fewer only at its end).
pub fn read_magic(reader: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut prefix = vec![0u8; MAGIC_LENGTH];
    let mut filled = 0;
    while filled < prefix.len() {
        match reader.read(&mut prefix[filled..]) {
            Ok(0) => break,
            Ok(count) => filled += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    prefix.truncate(filled);
    Ok(prefix)
}

/// Size of the buffer between the source and a decoder.
const INPUT_BUFFER: usize = 256 << 10;

/// A decoder for `compression` reading `input`, counting what it produces.
///
/// Its errors are `io::Error`s; [`Decompressor::describe`] turns one into our [`Error`].
pub fn decoder<R: Read + Send + 'static>(
    compression: Compression,
    input: R,
) -> Result<Decompressor> {
    let buffered = BufReader::with_capacity(INPUT_BUFFER, input);
    let inner: Box<dyn Read + Send> = match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(crate::isal::GzipDecoder::new(buffered)),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(buffered)),
        Compression::Xz => {
            let stream = liblzma::stream::Stream::new_stream_decoder(
                u64::MAX,
                liblzma::stream::CONCATENATED,
            )
            .map_err(|error| Error::InvalidLayerData(format!("xz decoder: {error}")))?;
            Box::new(liblzma::bufread::XzDecoder::new_stream(buffered, stream))
        }
        Compression::Zstd => Box::new(ZstdFrames::new(buffered)?),
    };
    Ok(Decompressor {
        inner,
        compression,
        produced: 0,
    })
}

/// A decoder with the count of bytes it produced, for error messages.
pub struct Decompressor {
    inner: Box<dyn Read + Send>,
    compression: Compression,
    produced: u64,
}

impl Decompressor {
    /// The compression being undone.
    #[must_use]
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Bytes produced so far.
    #[must_use]
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// Our error for a decoder failure that did not come from the source itself.
    #[must_use]
    pub fn describe(&self, error: &io::Error) -> Error {
        Error::InvalidLayerData(format!(
            "{} data is corrupt after {} uncompressed bytes: {error}",
            self.compression, self.produced
        ))
    }
}

impl Read for Decompressor {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let count = self.inner.read(buffer)?;
        self.produced += count as u64;
        Ok(count)
    }
}

/// zstd frames back to back (skippable frames included), erroring on trailing data.
struct ZstdFrames<R: BufRead> {
    decoder: zstd::stream::read::Decoder<'static, R>,
}

impl<R: BufRead> ZstdFrames<R> {
    fn new(input: R) -> Result<Self> {
        let decoder = zstd::stream::read::Decoder::with_buffer(input)
            .map_err(|error| Error::InvalidLayerData(format!("zstd decoder: {error}")))?;
        Ok(Self { decoder })
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.decoder.read(buffer)
    }
}

#[cfg(test)]
// Test data is made of bytes from wrapping arithmetic.
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use std::io::Write;

    fn decode(compression: Compression, data: &[u8]) -> std::result::Result<Vec<u8>, String> {
        let mut decoder = decoder(compression, io::Cursor::new(data.to_vec())).unwrap();
        let mut out = Vec::new();
        match decoder.read_to_end(&mut out) {
            Ok(_) => Ok(out),
            Err(error) => Err(decoder.describe(&error).to_string()),
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn bzip2(data: &[u8]) -> Vec<u8> {
        let mut encoder = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut encoder = liblzma::write::XzEncoder::new(Vec::new(), 1);
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::encode_all(data, 1).unwrap()
    }

    #[test]
    fn detects_magic_numbers() {
        assert_eq!(detect(&gzip(b"x")), Compression::Gzip);
        assert_eq!(detect(&bzip2(b"x")), Compression::Bzip2);
        assert_eq!(detect(&xz(b"x")), Compression::Xz);
        assert_eq!(detect(&zstd(b"x")), Compression::Zstd);
        assert_eq!(detect(b"\x1f\x8b"), Compression::None);
        assert_eq!(detect(b""), Compression::None);
        assert_eq!(detect(b"ustar"), Compression::None);
    }

    #[test]
    fn reads_every_stream() {
        type Encode = fn(&[u8]) -> Vec<u8>;
        let formats: [(Compression, Encode); 4] = [
            (Compression::Gzip, gzip),
            (Compression::Bzip2, bzip2),
            (Compression::Xz, xz),
            (Compression::Zstd, zstd),
        ];
        for (compression, encode) in formats {
            let mut blob = encode(b"first ");
            blob.extend(encode(b""));
            blob.extend(encode(b"second"));
            assert_eq!(
                decode(compression, &blob).unwrap(),
                b"first second",
                "{compression}"
            );
        }
    }

    #[test]
    fn xz_stream_padding_is_allowed_in_fours() {
        let mut blob = xz(b"one");
        blob.extend([0; 8]);
        blob.extend(xz(b"two"));
        blob.extend([0; 4]);
        assert_eq!(decode(Compression::Xz, &blob).unwrap(), b"onetwo");
        blob.extend([0; 3]);
        assert!(decode(Compression::Xz, &blob).is_err());
    }

    #[test]
    fn trailing_garbage_is_corrupt_data() {
        type Encode = fn(&[u8]) -> Vec<u8>;
        let formats: [(Compression, Encode); 4] = [
            (Compression::Gzip, gzip),
            (Compression::Bzip2, bzip2),
            (Compression::Xz, xz),
            (Compression::Zstd, zstd),
        ];
        for (compression, encode) in formats {
            for garbage in [&b"garbage!"[..], &b"\0"[..], &[0u8; 512][..]] {
                let mut blob = encode(b"payload");
                blob.extend(garbage);
                if compression == Compression::Xz && garbage.len() % 4 == 0 && garbage[0] == 0 {
                    // NUL bytes in fours are xz stream padding, not garbage.
                    assert_eq!(decode(compression, &blob).unwrap(), b"payload");
                    continue;
                }
                let error = decode(compression, &blob).unwrap_err();
                assert!(
                    error.starts_with(&format!(
                        "{compression} data is corrupt after 7 uncompressed bytes: "
                    )),
                    "{compression} + {garbage:?}: {error}"
                );
            }
        }
    }

    #[test]
    fn truncation_is_corrupt_data() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for (compression, mut blob) in [
            (Compression::Gzip, gzip(&data)),
            (Compression::Bzip2, bzip2(&data)),
            (Compression::Xz, xz(&data)),
            (Compression::Zstd, zstd(&data)),
        ] {
            blob.truncate(blob.len() - 3);
            let error = decode(compression, &blob).unwrap_err();
            assert!(error.contains("data is corrupt after"), "{error}");
        }
    }
}
