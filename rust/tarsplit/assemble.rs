//! Rebuilding a layer's tar from its tar-split and its files (Go's `asm.NewOutputTarStream`,
//! with the stricter checks of docs/diff.md).
//!
//! Segments are written as they are. A file entry with a size above 0 is looked up inside the
//! layer with the confinement of extraction ([`crate::confine`]), opened with `O_NOFOLLOW`, and
//! exactly `size` bytes of it are read with `pread` while their CRC-64 is computed. A file that
//! is missing, not a regular file, not exactly `size` bytes long or whose CRC differs is
//! [`Error::InvalidLayerData`] naming it.
//!
//! No byte of a file's last mebibyte leaves [`Assembler::read`] before the whole file has been
//! checked: that tail is read (into the caller's buffer when it fits, else into a buffer of our
//! own) and checked first, and the error comes from the read that reaches it. So a file of up to
//! 1 MiB is never given out changed, and a larger one stops at least a mebibyte before its end;
//! the bytes before the tail go straight from the file into the caller's buffer.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::confine::{c_string, confine, open_at, split_parent, Root};
use crate::crc64::Crc64;
use crate::error::{Error, IoContext, Result};
use crate::paths::shown;
use crate::tarsplit::unpacker::{Entry, Unpacker};

/// Size of the buffers that read the tar-split file and its decompressed lines.
const TAR_SPLIT_BUFFER: usize = 256 << 10;
/// The end of each file that is checked before any of it is given out.
const TAIL_LENGTH: usize = 1 << 20;
const TAIL: u64 = TAIL_LENGTH as u64;

/// A tar-split file as it is read: the gzip file, decompressed, buffered for lines.
pub type TarSplitReader = BufReader<flate2::bufread::MultiGzDecoder<BufReader<File>>>;

/// Produces a layer's tar, one buffer at a time.
pub struct Assembler<R: BufRead> {
    unpacker: Unpacker<R>,
    root: Root,
    state: State,
    /// A buffer for tails that do not fit in the caller's, kept between files.
    spare: Vec<u8>,
}

enum State {
    /// Between entries: the next line is read when bytes are wanted.
    Between,
    /// A segment, or a checked file tail, being written.
    Segment { data: Vec<u8>, written: usize },
    /// A file's content being read.
    File(Box<Content>),
    /// After the last line.
    End,
}

/// A file of the layer being read.
struct Content {
    file: File,
    /// The entry's name as tar-split has it, for messages.
    name: Vec<u8>,
    path: PathBuf,
    size: u64,
    /// Its size when it was opened.
    on_disk: u64,
    read: u64,
    crc: Crc64,
    expected: Option<Vec<u8>>,
}

impl Assembler<TarSplitReader> {
    /// An assembler reading the gzipped tar-split file `tar_split` and the files of
    /// `layer_dir`. Both are opened now; the first line is read by the first [`Self::read`].
    pub fn open(tar_split: &Path, layer_dir: &Path) -> Result<Self> {
        let file = File::open(tar_split).at(tar_split)?;
        let root = Root::open(layer_dir)?;
        let decoder =
            flate2::bufread::MultiGzDecoder::new(BufReader::with_capacity(TAR_SPLIT_BUFFER, file));
        let input = BufReader::with_capacity(TAR_SPLIT_BUFFER, decoder);
        Ok(Self::new(input, &tar_split.display().to_string(), root))
    }
}

impl<R: BufRead> Assembler<R> {
    /// An assembler over decompressed tar-split lines from `input` (called `source` in messages)
    /// and the layer directory `root`.
    pub fn new(input: R, source: &str, root: Root) -> Self {
        Self {
            unpacker: Unpacker::new(input, source),
            root,
            state: State::Between,
            spare: Vec::new(),
        }
    }

    /// Fill `buffer` with the next bytes of the tar; fewer only at the end (0 once it is
    /// reached). On an error the bytes put in `buffer` by this call are not part of the tar.
    pub fn read(&mut self, buffer: &mut [u8]) -> Result<usize> {
        let mut filled = 0;
        while filled < buffer.len() {
            let space = &mut buffer[filled..];
            match &mut self.state {
                State::Segment { data, written } => {
                    let count = (data.len() - *written).min(space.len());
                    space[..count].copy_from_slice(&data[*written..*written + count]);
                    filled += count;
                    *written += count;
                    if *written == data.len() {
                        // Kept for the next tail if it can hold more than the spare has.
                        if data.capacity() > self.spare.capacity() && data.len() <= TAIL_LENGTH {
                            self.spare = std::mem::take(data);
                        }
                        self.state = State::Between;
                    }
                }
                State::File(content) => {
                    let tail_start = content.size.saturating_sub(TAIL);
                    if content.read < tail_start {
                        // Before the tail: straight into the caller's buffer.
                        let before_tail = usize::try_from(tail_start - content.read)
                            .unwrap_or(usize::MAX)
                            .min(space.len());
                        filled += content.read_some(&mut space[..before_tail])?;
                        continue;
                    }
                    let tail = usize::try_from(content.size - content.read)
                        .map_err(|_| Error::Internal("a file tail above 1 MiB".into()))?;
                    if tail <= space.len() {
                        content.read_all(&mut space[..tail])?;
                        content.verify()?;
                        filled += tail;
                        self.state = State::Between;
                    } else {
                        let mut data = std::mem::take(&mut self.spare);
                        data.resize(tail, 0);
                        content.read_all(&mut data)?;
                        content.verify()?;
                        self.state = State::Segment { data, written: 0 };
                    }
                }
                State::Between => self.next_entry()?,
                State::End => break,
            }
        }
        Ok(filled)
    }

    fn next_entry(&mut self) -> Result<()> {
        self.state = match self.unpacker.next_entry()? {
            None => State::End,
            Some(Entry::Segment(data)) if data.is_empty() => State::Between,
            Some(Entry::Segment(data)) => State::Segment { data, written: 0 },
            Some(Entry::File { name, size, crc }) => match u64::try_from(size) {
                Ok(size) if size > 0 => State::File(Box::new(self.open_file(name, size, crc)?)),
                // Directories, links, empty files: nothing to write.
                _ => State::Between,
            },
        };
        Ok(())
    }

    /// Open the file `name` inside the layer, never following it nor leaving the layer.
    fn open_file(
        &mut self,
        name: Vec<u8>,
        size: u64,
        expected: Option<Vec<u8>>,
    ) -> Result<Content> {
        let relative = confine(&name, "path")?;
        let missing =
            || Error::InvalidLayerData(format!("the layer's file {} is missing", shown(&name)));
        // The root, or a name no file can have.
        if relative == b"." || relative.contains(&0) {
            return Err(missing());
        }
        let path = self.root.path_of(&relative);
        let (parent, base) = split_parent(&relative);
        // Lookups that fail because of what the layer holds (nothing there, a file or a
        // symlink loop on the way, a symlink at the end) find no file; others are the system's.
        let not_there = |error: &io::Error| {
            matches!(
                error.raw_os_error(),
                Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::ENXIO | libc::ENAMETOOLONG)
            )
        };
        let dir = match self.root.parent(parent, false) {
            Ok(dir) => dir,
            Err(error) if not_there(&error) => return Err(missing()),
            Err(error) => return Err(error).at(&path),
        };
        let base = c_string(base).at(&path)?;
        // O_NONBLOCK: a fifo put where the file was must not hang the open.
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
        let file = match open_at(dir.as_fd(), &base, flags, 0) {
            Ok(fd) => File::from(fd),
            Err(error) if not_there(&error) => return Err(missing()),
            Err(error) => return Err(error).at(&path),
        };
        let metadata = file.metadata().at(&path)?;
        if !metadata.file_type().is_file() {
            return Err(missing());
        }
        Ok(Content {
            file,
            name,
            path,
            size,
            on_disk: metadata.size(),
            read: 0,
            crc: Crc64::new(),
            expected,
        })
    }
}

impl Content {
    fn changed_size(&self) -> Error {
        Error::InvalidLayerData(format!(
            "file integrity checksum failed for {}: it changed size",
            shown(&self.name)
        ))
    }

    /// Read the next bytes of the file into `buffer` (no more than are left of it).
    fn read_some(&mut self, buffer: &mut [u8]) -> Result<usize> {
        let count = loop {
            match self.file.read_at(buffer, self.read) {
                Ok(0) => return Err(self.changed_size()),
                Ok(count) => break count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error).at(&self.path),
            }
        };
        self.crc.update(&buffer[..count]);
        self.read += count as u64;
        Ok(count)
    }

    /// Fill `buffer` with the next bytes of the file (no more than are left of it).
    fn read_all(&mut self, buffer: &mut [u8]) -> Result<()> {
        let mut filled = 0;
        while filled < buffer.len() {
            filled += self.read_some(&mut buffer[filled..])?;
        }
        Ok(())
    }

    /// All `size` bytes are read: the file must end there and have the recorded CRC.
    fn verify(&self) -> Result<()> {
        if self.on_disk != self.size {
            return Err(self.changed_size());
        }
        if self.expected.as_deref() != Some(&self.crc.finish()[..]) {
            return Err(Error::InvalidLayerData(format!(
                "file integrity checksum failed for {}",
                shown(&self.name)
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;
    use std::os::unix::fs::symlink;

    use crate::apply::{apply_layer, Options, Source};
    use crate::extract::WhiteoutFormat;
    use crate::tarsplit::Packer;

    /// A USTAR header block with a valid checksum.
    pub(crate) fn header(name: &[u8], typeflag: u8, size: u64, linkname: &[u8]) -> Vec<u8> {
        let mut block = vec![0u8; 512];
        block[..name.len()].copy_from_slice(name);
        block[100..108].copy_from_slice(b"0000644\0");
        block[108..116].copy_from_slice(b"0000000\0");
        block[116..124].copy_from_slice(b"0000000\0");
        block[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        block[136..148].copy_from_slice(b"14000000000\0");
        block[156] = typeflag;
        block[157..157 + linkname.len()].copy_from_slice(linkname);
        block[257..265].copy_from_slice(b"ustar\x0000");
        block[148..156].copy_from_slice(b"        ");
        let sum: u32 = block.iter().map(|&byte| u32::from(byte)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        block
    }

    /// A regular file entry with its content and padding.
    pub(crate) fn file(name: &[u8], content: &[u8]) -> Vec<u8> {
        let mut entry = header(name, b'0', content.len() as u64, b"");
        entry.extend_from_slice(content);
        entry.resize(entry.len().div_ceil(512) * 512, 0);
        entry
    }

    /// Content that differs from block to block.
    pub(crate) fn content(length: usize, seed: u32) -> Vec<u8> {
        (0..length)
            .map(|index| {
                let index = u32::try_from(index).unwrap_or(u32::MAX);
                u8::try_from(index.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 24)
                    .unwrap_or(0)
            })
            .collect()
    }

    /// Apply `tar` into `<scratch>/tree` (vfs), writing `<scratch>/layer.tar-split.gz`.
    pub(crate) fn applied(tar: &[u8]) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let scratch = tempfile::tempdir().unwrap();
        let tree = scratch.path().join("tree");
        fs::create_dir(&tree).unwrap();
        let tar_split = scratch.path().join("layer.tar-split.gz");
        let options = Options {
            destination: tree.clone(),
            tar_split_path: tar_split.clone(),
            tar_split_temporary_path: scratch.path().join("layer.tar-split.gz.tmp"),
            whiteout_format: WhiteoutFormat::Vfs,
            trusted_compressed_digest: None,
            trusted_uncompressed_digest: None,
            ownership: crate::extract::Ownership::default(),
        };
        let source = Source {
            reader: Box::new(io::Cursor::new(tar.to_vec())),
            name: PathBuf::from("<test>"),
        };
        apply_layer(source, &options).unwrap();
        (scratch, tree, tar_split)
    }

    /// Everything an assembler gives in reads of `chunk` bytes, and the error that ended it.
    fn read_all(assembler: &mut Assembler<impl BufRead>, chunk: usize) -> (Vec<u8>, Option<Error>) {
        let mut out = Vec::new();
        let mut buffer = vec![0u8; chunk];
        loop {
            match assembler.read(&mut buffer) {
                Ok(0) => return (out, None),
                Ok(count) => {
                    // Only the last read may come short.
                    assert!(count == chunk || assembler.read(&mut buffer).unwrap() == 0);
                    out.extend_from_slice(&buffer[..count]);
                }
                Err(error) => return (out, Some(error)),
            }
        }
    }

    fn sample() -> (Vec<u8>, usize) {
        let mut tar = header(b"dir/", b'5', 0, b"");
        tar.extend(file(b"dir/a", b"hello"));
        tar.extend(file(b"dir/big", &content(100_000, 1)));
        let big_end = tar.len() - (512 - 100_000 % 512);
        assert_eq!(big_end, BIG_START + 100_000);
        tar.extend(file(b"dir/empty", b""));
        tar.extend(file(b"caf\xe9", b"raw name"));
        tar.extend(header(b"dir/link", b'2', 0, b"a"));
        tar.extend(header(b"dir/hard", b'1', 0, b"dir/a"));
        tar.extend(file(b"last", &content(513, 2)));
        tar.extend([0u8; 1024]);
        tar.extend(b"trailing bytes");
        (tar, big_end)
    }

    #[test]
    fn rebuilds_the_tar_byte_for_byte() {
        let (tar, _) = sample();
        let (_scratch, tree, tar_split) = applied(&tar);
        for chunk in [1, 511, 4096, 1 << 20] {
            let mut assembler = Assembler::open(&tar_split, &tree).unwrap();
            let (out, error) = read_all(&mut assembler, chunk);
            assert!(error.is_none(), "{error:?}");
            assert!(out == tar, "chunk {chunk}");
        }
    }

    fn failure(tar_split: &Path, tree: &Path) -> (Vec<u8>, String) {
        let mut assembler = Assembler::open(tar_split, tree).unwrap();
        let (out, error) = read_all(&mut assembler, 1000);
        match error {
            Some(Error::InvalidLayerData(message)) => (out, message),
            other => panic!("{other:?}"),
        }
    }

    /// Where the content of `dir/big` starts in the sample.
    const BIG_START: usize = 2048;

    #[test]
    fn a_changed_file_is_named_before_any_of_it_leaves() {
        let (tar, _) = sample();
        let (_scratch, tree, tar_split) = applied(&tar);
        let mut changed = content(100_000, 1);
        changed[50_000] ^= 1;
        fs::write(tree.join("dir/big"), &changed).unwrap();
        let (out, message) = failure(&tar_split, &tree);
        assert_eq!(message, "file integrity checksum failed for 'dir/big'");
        // The read that reached the file failed: none of its bytes came out.
        assert!(tar.starts_with(&out));
        assert!(out.len() <= BIG_START && out.len() + 1000 > BIG_START);
    }

    #[test]
    fn a_large_file_is_checked_before_its_last_mebibyte_leaves() {
        let size = 3 << 20;
        let mut tar = file(b"large", &content(size, 4));
        tar.extend([0u8; 1024]);
        let (_scratch, tree, tar_split) = applied(&tar);
        let tail_start = 512 + size - (1 << 20);
        for (offset, seen) in [(10, true), (size - 10, false)] {
            let mut changed = content(size, 4);
            changed[offset] ^= 1;
            fs::write(tree.join("large"), &changed).unwrap();
            let (out, message) = failure(&tar_split, &tree);
            assert_eq!(message, "file integrity checksum failed for 'large'");
            assert!(out.len() <= tail_start && out.len() + 1000 > tail_start);
            // A change before the tail went out before it could be known; none in the tail.
            assert_eq!(!tar.starts_with(&out), seen, "{offset}");
        }
    }

    #[test]
    fn a_file_of_another_size_or_missing_is_named() {
        let (tar, _) = sample();
        let (_scratch, tree, tar_split) = applied(&tar);
        let original = content(100_000, 1);
        let mut longer = original.clone();
        longer.push(0);
        for changed in [&longer[..], &original[..99_999]] {
            fs::write(tree.join("dir/big"), changed).unwrap();
            let (out, message) = failure(&tar_split, &tree);
            assert_eq!(
                message,
                "file integrity checksum failed for 'dir/big': it changed size"
            );
            assert!(tar.starts_with(&out) && out.len() <= BIG_START);
        }
        fs::remove_file(tree.join("dir/big")).unwrap();
        let (_, message) = failure(&tar_split, &tree);
        assert_eq!(message, "the layer's file 'dir/big' is missing");
        fs::create_dir(tree.join("dir/big")).unwrap();
        let (_, message) = failure(&tar_split, &tree);
        assert_eq!(message, "the layer's file 'dir/big' is missing");
        // Names no file can have.
        let long = vec![b'n'; 300];
        for name in [&b"dir/a\0b"[..], &long, &[&long[..], b"/x"].concat(), b"/"] {
            let mut packer = Packer::new(Vec::new());
            packer.claim_name(name).unwrap();
            packer.add_file(name, 1, None).unwrap();
            let lines = packer.into_inner();
            let mut assembler = Assembler::new(&lines[..], "ts", Root::open(&tree).unwrap());
            let (_, error) = read_all(&mut assembler, 10);
            let message = error.unwrap().to_string();
            assert!(message.ends_with("is missing"), "{message}");
        }
    }

    #[test]
    fn names_are_confined_to_the_layer() {
        let (tar, _) = sample();
        let (scratch, tree, tar_split) = applied(&tar);
        // The same bytes outside the layer, reached through a symlinked parent: not read.
        let outside = scratch.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("a"), b"hello").unwrap();
        fs::write(outside.join("big"), content(100_000, 1)).unwrap();
        fs::rename(tree.join("dir"), tree.join("moved")).unwrap();
        symlink(&outside, tree.join("dir")).unwrap();
        let (_, message) = failure(&tar_split, &tree);
        assert_eq!(message, "the layer's file 'dir/a' is missing");
        // A symlinked parent resolves inside the layer: absolute targets from its root.
        fs::remove_file(tree.join("dir")).unwrap();
        symlink("/moved", tree.join("dir")).unwrap();
        let mut assembler = Assembler::open(&tar_split, &tree).unwrap();
        assert!(read_all(&mut assembler, 4096).0 == tar);
        // The file itself is never followed, even to the right bytes.
        fs::remove_file(tree.join("dir")).unwrap();
        fs::rename(tree.join("moved"), tree.join("dir")).unwrap();
        fs::rename(tree.join("dir/a"), tree.join("a-copy")).unwrap();
        symlink("../a-copy", tree.join("dir/a")).unwrap();
        let (_, message) = failure(&tar_split, &tree);
        assert_eq!(message, "the layer's file 'dir/a' is missing");
        // A name that climbs out is refused before anything is opened.
        let mut packer = Packer::new(Vec::new());
        packer.add_segment(b"header").unwrap();
        packer.claim_name(b"../outside/a").unwrap();
        let crc = crate::crc64::checksum(b"hello").to_be_bytes();
        packer.add_file(b"../outside/a", 5, Some(crc)).unwrap();
        let lines = packer.into_inner();
        let mut assembler = Assembler::new(&lines[..], "ts", Root::open(&tree).unwrap());
        let (out, error) = read_all(&mut assembler, 4);
        assert_eq!(out, b"head");
        let message = error.unwrap().to_string();
        assert_eq!(message, "path '../outside/a' escapes the layer");
    }

    #[test]
    fn sizes_not_above_zero_read_nothing_and_payloads_must_match() {
        let scratch = tempfile::tempdir().unwrap();
        fs::write(scratch.path().join("f"), b"data").unwrap();
        let mut packer = Packer::new(Vec::new());
        for (name, size) in [(&b"gone"[..], 0), (b"gone2", -5)] {
            packer.claim_name(name).unwrap();
            packer.add_file(name, size, None).unwrap();
        }
        packer.claim_name(b"f").unwrap();
        packer.add_file(b"f", 4, None).unwrap();
        let lines = packer.into_inner();
        let mut assembler = Assembler::new(&lines[..], "ts", Root::open(scratch.path()).unwrap());
        let (out, error) = read_all(&mut assembler, 64);
        assert!(out.is_empty());
        assert_eq!(
            error.unwrap().to_string(),
            "file integrity checksum failed for 'f'"
        );
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn a_corrupt_tar_split_file_names_itself_and_the_line() {
        let scratch = tempfile::tempdir().unwrap();
        let path = scratch.path().join("ts.gz");
        let good = "{\"type\":2,\"payload\":\"eA==\",\"position\":0}\n";
        let whole = gzip(good.repeat(100_000).as_bytes());
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                b"{\"type\":2}\n".to_vec(),
                "cannot read tar-split after line 0: ",
            ),
            (
                whole[..whole.len() / 2].to_vec(),
                "cannot read tar-split after line ",
            ),
            (
                gzip(format!("{good}{{\"type\":2,}}\n").as_bytes()),
                "line 2 is not a tar-split entry: not valid JSON",
            ),
            (
                gzip(format!("{good}{good}{{\"type\":9}}").as_bytes()),
                "line 3 is not a tar-split entry: unknown entry type 9",
            ),
            (
                gzip(format!("{good}{{\"type\":2,\"payload\":\"e\"}}").as_bytes()),
                "line 2 is not a tar-split entry: \"payload\" is not valid base64",
            ),
        ];
        for (data, wanted) in cases {
            fs::write(&path, &data).unwrap();
            let mut assembler = Assembler::open(&path, scratch.path()).unwrap();
            let (_, error) = read_all(&mut assembler, 4096);
            let message = match error {
                Some(Error::InvalidLayerData(message)) => message,
                other => panic!("{wanted}: {other:?}"),
            };
            assert!(
                message.starts_with(&format!("{}: ", path.display())),
                "{message}"
            );
            assert!(message.contains(wanted), "{wanted}: {message}");
        }
        // Several gzip members are one stream, as Go's reader takes them.
        let mut members = gzip(good.as_bytes());
        members.extend(gzip(good.as_bytes()));
        fs::write(&path, &members).unwrap();
        let mut assembler = Assembler::open(&path, scratch.path()).unwrap();
        assert_eq!(read_all(&mut assembler, 7).0, b"xx");
    }

    #[test]
    fn missing_inputs_are_os_errors() {
        let scratch = tempfile::tempdir().unwrap();
        let missing = scratch.path().join("nothing");
        assert!(matches!(
            Assembler::open(&missing, scratch.path()),
            Err(Error::Io { ref source, .. }) if source.raw_os_error() == Some(libc::ENOENT)
        ));
        fs::write(scratch.path().join("ts.gz"), gzip(b"")).unwrap();
        assert!(matches!(
            Assembler::open(&scratch.path().join("ts.gz"), &missing),
            Err(Error::Io { ref source, .. }) if source.raw_os_error() == Some(libc::ENOENT)
        ));
        // An empty file is not even a gzip header (Go's reader refuses it too).
        fs::write(scratch.path().join("ts.gz"), b"").unwrap();
        let mut assembler = Assembler::open(&scratch.path().join("ts.gz"), scratch.path()).unwrap();
        let error = assembler.read(&mut [0u8; 16]).unwrap_err().to_string();
        assert!(
            error.ends_with("cannot read tar-split after line 0: unexpected end of file"),
            "{error}"
        );
    }
}
