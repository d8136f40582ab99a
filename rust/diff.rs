//! `Diff` of a layer as a stream (docs/diff.md): rebuilt from tar-split against its parent, or
//! written from the trees ([`TreeTar`]) for a layer without tar-split.
//!
//! Uncompressed, nothing runs behind the caller's back: each [`DiffStream::read`] fills the
//! caller's buffer straight from the tar source: the tar-split segments and the layer's files
//! ([`Assembler`], one copy of each byte, with its CRC computed on the spot), or the tree's files.
//!
//! Compressed, a producer thread reads the tar in blocks of 1 MiB and hands them round-robin
//! to one compressor thread per core (at most four); the reader takes the compressed blocks back
//! in order. gzip is one member, as containers/storage (pgzip) and pigz write it, because many
//! readers stop after a first member without an error: each block is raw deflate (igzip level 1,
//! [`BlockDeflater`]) ended with a sync flush, so the blocks join into one deflate stream; the
//! reader puts the gzip header before the first and the final empty block, the CRC-32 (computed
//! by the producer, in order) and the length after the last. A block does not refer back into
//! the one before it, as pigz's `--independent` blocks: measured, a 32 KiB dictionary made the
//! output no smaller and igzip slower. zstd is one frame per block, a valid multi-frame stream (zstd readers
//! all read every frame). Bounded channels keep at most a few blocks in flight, so memory stays flat
//! whatever the layer's size, and an error reaches the reader in its place in the stream, after
//! the blocks before it and instead of anything after it. Dropping the stream stops and joins
//! every thread and closes every file.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};

use crate::compress::Compression;
use crate::error::{Error, Result};
use crate::isal::BlockDeflater;
use crate::tarsplit::assemble::{Assembler, TarSplitReader};
use crate::tree_tar::TreeTar;

/// What a diff can be written as: the compressions containers/storage writes diffs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiffCompression {
    /// A plain tar.
    None,
    /// gzip members, one per block.
    Gzip,
    /// zstd frames, one per block.
    Zstd,
}

impl DiffCompression {
    /// The diff compression with `Compression`'s number `code`; `NotSupported` for any number
    /// diffs cannot be written with (`layerstore.engines` has refused those already).
    pub fn from_code(code: i64) -> Result<Self> {
        match Compression::from_code(code) {
            Some(Compression::None) => Ok(Self::None),
            Some(Compression::Gzip) => Ok(Self::Gzip),
            Some(Compression::Zstd) => Ok(Self::Zstd),
            Some(other @ (Compression::Bzip2 | Compression::Xz)) => Err(Error::NotSupported(
                format!("diffs cannot be compressed as {other}: ask for none, gzip or zstd"),
            )),
            None => Err(Error::NotSupported(format!(
                "diffs cannot be compressed as compression {code}: ask for none, gzip or zstd"
            ))),
        }
    }
}

impl std::fmt::Display for DiffCompression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "uncompressed",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        })
    }
}

/// Uncompressed bytes per compressed block.
const BLOCK: usize = 1 << 20;
/// Most compressor threads, whatever the number of cores.
const MAX_WORKERS: usize = 4;
/// zstd level: the library's default.
const ZSTD_LEVEL: i32 = 3;

/// Where a diff's uncompressed tar comes from.
pub trait TarSource: Send {
    /// Fill `buffer` with the next bytes of the tar; fewer only at its end (0 after it).
    fn read(&mut self, buffer: &mut [u8]) -> Result<usize>;
}

impl TarSource for Assembler<TarSplitReader> {
    fn read(&mut self, buffer: &mut [u8]) -> Result<usize> {
        Assembler::read(self, buffer)
    }
}

impl TarSource for TreeTar {
    fn read(&mut self, buffer: &mut [u8]) -> Result<usize> {
        TreeTar::read(self, buffer)
    }
}

/// The layer's tar, uncompressed or compressed, read in order.
pub struct DiffStream {
    inner: Inner,
    /// The error that ended the stream, raised again by every later read.
    failure: Option<Error>,
}

enum Inner {
    Plain(Box<dyn TarSource>),
    Compressed(Pipeline),
    /// Everything was read, or it failed, or it was closed: nothing is held any more.
    Released,
}

impl DiffStream {
    /// Start the diff of the layer whose tar-split file is `tar_split` and whose files are in
    /// `layer_dir`, compressed with `compression` (none, gzip or zstd).
    pub fn open(tar_split: &Path, layer_dir: &Path, compression: DiffCompression) -> Result<Self> {
        Self::of(
            Box::new(Assembler::open(tar_split, layer_dir)?),
            compression,
        )
    }

    /// The diff that `tar` writes (a [`TreeTar`]), compressed with `compression`.
    pub fn of_tree(tar: TreeTar, compression: DiffCompression) -> Result<Self> {
        Self::of(Box::new(tar), compression)
    }

    fn of(source: Box<dyn TarSource>, compression: DiffCompression) -> Result<Self> {
        let inner = match compression {
            DiffCompression::None => Inner::Plain(source),
            _ => Inner::Compressed(Pipeline::start(source, compression)?),
        };
        Ok(Self {
            inner,
            failure: None,
        })
    }

    /// Fill `buffer` with the next bytes; fewer only at the end of the stream (0 after it).
    /// After an error, every read fails the same way.
    pub fn read(&mut self, buffer: &mut [u8]) -> Result<usize> {
        if let Some(failure) = &self.failure {
            return Err(failure.replay());
        }
        let result = match &mut self.inner {
            Inner::Plain(source) => source.read(buffer),
            Inner::Compressed(pipeline) => pipeline.read(buffer),
            Inner::Released => Ok(0),
        };
        match result {
            Ok(count) => {
                if count < buffer.len() {
                    self.close();
                }
                Ok(count)
            }
            Err(error) => {
                self.failure = Some(error.replay());
                self.close();
                Err(error)
            }
        }
    }

    /// Release the tar-split file, any open layer file and every thread now.
    pub fn close(&mut self) {
        self.inner = Inner::Released;
    }

    /// Whether files or threads are still held.
    #[must_use]
    pub fn holds_resources(&self) -> bool {
        !matches!(self.inner, Inner::Released)
    }

    /// A handle that each thread of this stream holds until it returns (`None` uncompressed):
    /// its strong count is the number of threads still running.
    #[must_use]
    pub fn threads(&self) -> Option<Weak<()>> {
        match &self.inner {
            Inner::Compressed(pipeline) => Some(Weak::clone(&pipeline.alive)),
            _ => None,
        }
    }
}

/// What the producer gives a compressor.
enum Job {
    /// A block of the tar.
    Block(Vec<u8>),
    /// The end, with the CRC-32 and the length of the whole tar.
    End(u32, u64),
    Failed(Error),
}

/// What a compressor gives the reader.
enum Message {
    Data(Vec<u8>),
    /// The end, with the stream's last bytes (gzip's trailer).
    End(Vec<u8>),
    Failed(Error),
}

/// A gzip header without a name, time or flags, as Go's gzip.Writer writes it (OS unknown).
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// The compressing threads and the reader's end of them.
struct Pipeline {
    /// One channel per compressor; message `k` of the stream comes from `results[k % len]`.
    results: Vec<Receiver<Message>>,
    /// Compressed buffers going back to the compressor they came from.
    spent: Vec<Sender<Vec<u8>>>,
    next: usize,
    current: Vec<u8>,
    current_from: usize,
    position: usize,
    ended: bool,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Each thread holds the value until it returns.
    alive: Weak<()>,
}

impl Pipeline {
    fn start(source: Box<dyn TarSource>, compression: DiffCompression) -> Result<Self> {
        let workers = thread::available_parallelism()
            .map_or(1, std::num::NonZero::get)
            .clamp(1, MAX_WORKERS);
        let stop = Arc::new(AtomicBool::new(false));
        let alive = Arc::new(());
        let (free_sender, free_receiver) = mpsc::channel::<Vec<u8>>();
        let header = match compression {
            DiffCompression::Gzip => GZIP_HEADER.to_vec(),
            _ => Vec::new(),
        };
        let mut pipeline = Self {
            results: Vec::with_capacity(workers),
            spent: Vec::with_capacity(workers),
            next: 0,
            current: header,
            current_from: 0,
            position: 0,
            ended: false,
            stop: Arc::clone(&stop),
            threads: Vec::with_capacity(workers + 1),
            alive: Arc::downgrade(&alive),
        };
        let mut jobs = Vec::with_capacity(workers);
        for index in 0..workers {
            let (job_sender, job_receiver) = mpsc::sync_channel::<Job>(1);
            let (result_sender, result_receiver) = mpsc::sync_channel::<Message>(1);
            let (spent_sender, spent_receiver) = mpsc::channel::<Vec<u8>>();
            let compressor = BlockCompressor::new(compression)?;
            let free = free_sender.clone();
            let alive = Arc::clone(&alive);
            let handle = thread::Builder::new()
                .name(format!("layerstore-diff-compress-{index}"))
                .spawn(move || {
                    compress_blocks(
                        compressor,
                        &job_receiver,
                        &result_sender,
                        &free,
                        &spent_receiver,
                    );
                    drop(alive);
                })
                .map_err(|error| Error::Internal(format!("cannot start a thread: {error}")))?;
            pipeline.threads.push(handle);
            jobs.push(job_sender);
            pipeline.results.push(result_receiver);
            pipeline.spent.push(spent_sender);
        }
        drop(free_sender);
        let handle = thread::Builder::new()
            .name("layerstore-diff-assemble".into())
            .spawn(move || {
                produce(source, &jobs, &free_receiver, &stop);
                drop(alive);
            })
            .map_err(|error| Error::Internal(format!("cannot start a thread: {error}")))?;
        pipeline.threads.push(handle);
        Ok(pipeline)
    }

    fn read(&mut self, buffer: &mut [u8]) -> Result<usize> {
        let mut filled = 0;
        while filled < buffer.len() {
            if self.position < self.current.len() {
                let count = (self.current.len() - self.position).min(buffer.len() - filled);
                buffer[filled..filled + count]
                    .copy_from_slice(&self.current[self.position..self.position + count]);
                filled += count;
                self.position += count;
                continue;
            }
            if self.ended {
                break;
            }
            let spent = std::mem::take(&mut self.current);
            if spent.capacity() > 0 {
                // A compressor that has ended makes no more blocks: then the buffer just goes.
                let _ = self.spent[self.current_from].send(spent);
            }
            self.position = 0;
            let from = self.next % self.results.len();
            match self.results[from].recv() {
                Ok(Message::Data(data)) => {
                    self.current = data;
                    self.current_from = from;
                    self.next += 1;
                }
                Ok(Message::End(trailer)) => {
                    self.current = trailer;
                    self.ended = true;
                }
                Ok(Message::Failed(error)) => return Err(error),
                Err(mpsc::RecvError) => {
                    return Err(Error::Internal("a diff thread stopped early".into()))
                }
            }
        }
        Ok(filled)
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // With the reader's ends gone every send fails, so each thread returns at its next step
        // (the producer at the latest after the block it is filling).
        self.results.clear();
        self.spent.clear();
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

/// The producer: fill blocks from the tar source and deal them round-robin to the compressors.
fn produce(
    mut source: Box<dyn TarSource>,
    jobs: &[SyncSender<Job>],
    free: &Receiver<Vec<u8>>,
    stop: &AtomicBool,
) {
    let mut index = 0;
    let mut crc = flate2::Crc::new();
    let mut length: u64 = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let mut block = free.try_recv().unwrap_or_default();
        block.resize(BLOCK, 0);
        let (job, last) = match source.read(&mut block) {
            Ok(count) => {
                block.truncate(count);
                crc.update(&block);
                length += count as u64;
                if count == BLOCK {
                    (Job::Block(block), false)
                } else {
                    // The last block; an empty one only if it is the only one, so that even an
                    // empty tar compresses to a valid stream.
                    if count > 0 || index == 0 {
                        let job = Job::Block(block);
                        if jobs[index % jobs.len()].send(job).is_err() {
                            return;
                        }
                        index += 1;
                    }
                    (Job::End(crc.sum(), length), true)
                }
            }
            Err(error) => (Job::Failed(error), true),
        };
        if jobs[index % jobs.len()].send(job).is_err() || last {
            return;
        }
        index += 1;
    }
}

/// A compressor thread: compress each block it is given, pass the end or an error along.
fn compress_blocks(
    mut compressor: BlockCompressor,
    jobs: &Receiver<Job>,
    results: &SyncSender<Message>,
    free: &Sender<Vec<u8>>,
    spent: &Receiver<Vec<u8>>,
) {
    while let Ok(job) = jobs.recv() {
        let message = match job {
            Job::Block(block) => {
                let mut output = spent.try_recv().unwrap_or_default();
                let message = match compressor.compress(&block, &mut output) {
                    Ok(()) => Message::Data(output),
                    Err(error) => Message::Failed(error),
                };
                // The producer may have ended: then the buffer just goes.
                let _ = free.send(block);
                message
            }
            Job::End(crc, length) => Message::End(compressor.trailer(crc, length)),
            Job::Failed(error) => Message::Failed(error),
        };
        if results.send(message).is_err() {
            return;
        }
    }
}

/// Compresses one block: into raw deflate that joins the blocks before and after it (gzip), or
/// into a self-contained zstd frame.
enum BlockCompressor {
    Gzip(BlockDeflater),
    Zstd(zstd::bulk::Compressor<'static>),
}

impl BlockCompressor {
    fn new(compression: DiffCompression) -> Result<Self> {
        match compression {
            DiffCompression::Gzip => Ok(Self::Gzip(BlockDeflater::new())),
            DiffCompression::Zstd => zstd::bulk::Compressor::new(ZSTD_LEVEL)
                .map(Self::Zstd)
                .map_err(|error| Error::Internal(format!("zstd compressor: {error}"))),
            DiffCompression::None => Err(Error::Internal(
                "no block compressor for a plain tar".into(),
            )),
        }
    }

    fn compress(&mut self, input: &[u8], output: &mut Vec<u8>) -> Result<()> {
        match self {
            Self::Gzip(deflater) => deflater.deflate(input, output)?,
            Self::Zstd(compressor) => {
                output.clear();
                output.reserve(zstd::zstd_safe::compress_bound(input.len()));
                compressor
                    .compress_to_buffer(input, output)
                    .map_err(|error| Error::Internal(format!("zstd: {error}")))?;
            }
        }
        Ok(())
    }

    /// What ends the stream after the last block.
    fn trailer(&self, crc: u32, length: u64) -> Vec<u8> {
        match self {
            Self::Gzip(_) => {
                // The final block (fixed Huffman, empty), then CRC-32 and length mod 2^32.
                let mut trailer = vec![0x03, 0x00];
                trailer.extend_from_slice(&crc.to_le_bytes());
                #[allow(clippy::cast_possible_truncation)] // gzip keeps the length mod 2^32
                trailer.extend_from_slice(&(length as u32).to_le_bytes());
                trailer
            }
            Self::Zstd(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Read;
    use std::path::PathBuf;

    use crate::tarsplit::assemble::tests::{applied, content, file, header};

    /// A tar of a little more than 3 MiB: several compressed blocks.
    fn sample() -> Vec<u8> {
        let mut tar = header(b"d/", b'5', 0, b"");
        tar.extend(file(b"d/one", &content(1_500_000, 1)));
        tar.extend(file(b"d/small", b"small"));
        tar.extend(file(b"d/two", &content(1_700_000, 2)));
        tar.extend(file(b"d/last", b"last"));
        tar.extend([0u8; 1024]);
        tar
    }

    /// The decompressed bytes, and whether the compressed stream was complete.
    fn decompress(compression: DiffCompression, data: &[u8]) -> (Vec<u8>, bool) {
        let mut decoder: Box<dyn Read + '_> = match compression {
            DiffCompression::None => return (data.to_vec(), true),
            // One member: a reader that stops after the first one must get the whole tar.
            DiffCompression::Gzip => Box::new(flate2::read::GzDecoder::new(data)),
            DiffCompression::Zstd => Box::new(zstd::stream::read::Decoder::new(data).unwrap()),
        };
        let mut out = Vec::new();
        let mut buffer = vec![0u8; 4096];
        loop {
            match decoder.read(&mut buffer) {
                Ok(0) => return (out, true),
                Ok(count) => out.extend_from_slice(&buffer[..count]),
                Err(_) => return (out, false),
            }
        }
    }

    fn read_all(stream: &mut DiffStream, chunk: usize) -> (Vec<u8>, Option<Error>) {
        let mut out = Vec::new();
        let mut buffer = vec![0u8; chunk];
        loop {
            match stream.read(&mut buffer) {
                Ok(0) => return (out, None),
                Ok(count) => out.extend_from_slice(&buffer[..count]),
                Err(error) => return (out, Some(error)),
            }
        }
    }

    const ALL: [DiffCompression; 3] = [
        DiffCompression::None,
        DiffCompression::Gzip,
        DiffCompression::Zstd,
    ];

    #[test]
    fn every_compression_decompresses_to_the_tar() {
        let tar = sample();
        let (_scratch, tree, tar_split) = applied(&tar);
        for compression in ALL {
            for chunk in [1000, 1 << 20] {
                let mut stream = DiffStream::open(&tar_split, &tree, compression).unwrap();
                let (out, error) = read_all(&mut stream, chunk);
                assert!(error.is_none(), "{compression}: {error:?}");
                assert!(
                    decompress(compression, &out) == (tar.clone(), true),
                    "{compression} {chunk}"
                );
                assert!(!stream.holds_resources());
            }
        }
    }

    #[test]
    fn gzip_is_one_member_over_many_blocks() {
        let tar = sample();
        let (_scratch, tree, tar_split) = applied(&tar);
        let mut stream = DiffStream::open(&tar_split, &tree, DiffCompression::Gzip).unwrap();
        let (out, error) = read_all(&mut stream, 1 << 16);
        assert!(error.is_none());
        let mut rest: &[u8] = &out;
        let mut decoder = flate2::bufread::GzDecoder::new(&mut rest);
        let mut whole = Vec::new();
        decoder.read_to_end(&mut whole).unwrap();
        drop(decoder);
        assert!(whole == tar, "the first member holds all of the tar");
        assert!(
            rest.is_empty(),
            "{} bytes after the first member",
            rest.len()
        );
    }

    #[test]
    fn an_empty_tar_still_compresses_to_a_valid_stream() {
        let scratch = tempfile::tempdir().unwrap();
        let tar_split = scratch.path().join("ts.gz");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        // What an apply of an empty stream writes: the final empty segment alone.
        std::io::Write::write_all(
            &mut encoder,
            b"{\"type\":2,\"payload\":\"\",\"position\":0}\n",
        )
        .unwrap();
        fs::write(&tar_split, encoder.finish().unwrap()).unwrap();
        for compression in [DiffCompression::Gzip, DiffCompression::Zstd] {
            let mut stream = DiffStream::open(&tar_split, scratch.path(), compression).unwrap();
            let (out, error) = read_all(&mut stream, 100);
            assert!(error.is_none() && !out.is_empty(), "{compression}");
            assert_eq!(decompress(compression, &out), (Vec::new(), true));
        }
    }

    #[test]
    fn an_error_comes_in_its_place_and_stays() {
        let tar = sample();
        let (_scratch, tree, tar_split) = applied(&tar);
        // The second big file's last mebibyte starts a little after 2 MiB: blocks 0 and 1 come
        // before the error (the failing read drops what it had taken of the last one).
        let mut changed = content(1_700_000, 2);
        changed[0] ^= 1;
        fs::write(tree.join("d/two"), &changed).unwrap();
        let two_end = 512 + 512 + 1_500_160 + 1024 + 512 + 1_700_000;
        for compression in ALL {
            let mut stream = DiffStream::open(&tar_split, &tree, compression).unwrap();
            let (out, error) = read_all(&mut stream, 4096);
            assert_eq!(
                error.unwrap().to_string(),
                "file integrity checksum failed for 'd/two'",
                "{compression}"
            );
            // The compressed stream stops where the error is: what came is a prefix of it.
            let (out, _) = decompress(compression, &out);
            assert!(out.len() < two_end, "{compression}");
            assert!(out.len() >= 1 << 20, "{compression}");
            assert!(!stream.holds_resources());
            let again = stream.read(&mut [0u8; 10]).unwrap_err().to_string();
            assert_eq!(again, "file integrity checksum failed for 'd/two'");
        }
    }

    /// Whether this process has a descriptor open on `path`.
    fn is_open(path: &Path) -> bool {
        fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|entry| fs::read_link(entry.unwrap().path()).ok())
            .any(|target| target == path)
    }

    #[test]
    fn dropping_or_closing_early_releases_files_and_threads() {
        // Larger than all the blocks the threads may hold, so they are still at it.
        let mut tar = file(b"big", &content(40 << 20, 3));
        tar.extend([0u8; 1024]);
        let (_scratch, tree, tar_split) = applied(&tar);
        let big: PathBuf = tree.join("big");
        for compression in ALL {
            for close in [false, true] {
                let mut stream = DiffStream::open(&tar_split, &tree, compression).unwrap();
                let mut buffer = vec![0u8; 4096];
                stream.read(&mut buffer).unwrap();
                assert!(is_open(&tar_split) && is_open(&big), "{compression}");
                let threads = stream.threads();
                if compression == DiffCompression::None {
                    assert!(threads.is_none());
                } else {
                    assert!(threads.as_ref().unwrap().strong_count() > 0);
                }
                if close {
                    stream.close();
                    assert!(!stream.holds_resources());
                    assert_eq!(stream.read(&mut buffer).unwrap(), 0);
                } else {
                    drop(stream);
                }
                assert!(!is_open(&tar_split) && !is_open(&big), "{compression}");
                assert!(threads.is_none_or(|threads| threads.strong_count() == 0));
            }
        }
    }

    #[test]
    fn only_none_gzip_and_zstd_are_offered() {
        for code in [Compression::Bzip2 as i64, Compression::Xz as i64, 5, -1] {
            let refused = DiffCompression::from_code(code);
            assert!(matches!(refused, Err(Error::NotSupported(_))), "{code}");
        }
        for compression in ALL {
            let code = match compression {
                DiffCompression::None => Compression::None,
                DiffCompression::Gzip => Compression::Gzip,
                DiffCompression::Zstd => Compression::Zstd,
            } as i64;
            assert_eq!(DiffCompression::from_code(code).ok(), Some(compression));
        }
    }
}
