//! `ApplyDiff` in one pass (docs/apply.md): read the blob once, detect and undo its compression,
//! hash both streams, record tar-split and extract the entries.
//!
//! Two threads share the work. The reader thread reads the source, hashes it, decompresses it
//! and fills 1 MiB buffers; the calling thread hashes the decompressed stream, walks the tar,
//! writes tar-split and extracts. Buffers go back and forth over two bounded channels, so memory
//! stays flat whatever the size of the layer.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufWriter, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread;

use crate::compress::{self, Compression};
use crate::digest::Digester;
use crate::error::{Error, IoContext, Result};
use crate::extract::{is_whiteout_name, Extractor, Ownership, WhiteoutFormat};
use crate::tarsplit::{Packer, Walker};

/// Size of the buffers of decompressed data handed between the threads.
const CHUNK: usize = 1 << 20;
/// Buffers in flight between the threads (plus one at each end).
const IN_FLIGHT: usize = 4;

/// What to apply where.
pub struct Options {
    /// The layer's directory, which must exist.
    pub destination: PathBuf,
    /// Where the tar-split file goes when the whole blob was applied.
    pub tar_split_path: PathBuf,
    /// Where it is written until then (the caller names it: `layerstore.paths`).
    pub tar_split_temporary_path: PathBuf,
    /// How whiteouts land.
    pub whiteout_format: WhiteoutFormat,
    /// The blob's digest when the caller knows it already (not computed then).
    pub trusted_compressed_digest: Option<String>,
    /// The tar's digest when the caller knows it already.
    pub trusted_uncompressed_digest: Option<String>,
    /// `force_mask` and `ignore_chown_errors` (docs/rootless.md).
    pub ownership: Ownership,
}

/// What an apply found (docs/apply.md, section 6).
#[derive(Debug)]
pub struct Applied {
    /// `"sha256:<hex>"` of the blob as given.
    pub compressed_digest: String,
    /// Bytes of the blob as given.
    pub compressed_size: u64,
    /// `"sha256:<hex>"` of the decompressed stream.
    pub uncompressed_digest: String,
    /// Bytes of the decompressed stream.
    pub uncompressed_size: u64,
    /// The blob's compression.
    pub compression: Compression,
    /// Owners seen, sorted.
    pub uids: Vec<u32>,
    /// Groups seen, sorted.
    pub gids: Vec<u32>,
    /// Bytes of the files the layer adds.
    pub size: u64,
}

/// A source to read the blob from, with a name for error messages.
pub struct Source {
    /// The blob.
    pub reader: Box<dyn Read + Send>,
    /// What to call it in errors.
    pub name: PathBuf,
}

impl Source {
    /// The file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).at(path)?;
        Ok(Self {
            reader: Box::new(file),
            name: path.to_path_buf(),
        })
    }
}

/// Crash tests name a point in `LAYERSTORE_FAULT_POINT` for the process to die at, as a power
/// cut would (python/layerstore/faults.py has the same points on the Python side).
fn fault(point: &str) {
    if std::env::var_os("LAYERSTORE_FAULT_POINT").is_some_and(|wanted| wanted == point) {
        // SAFETY: raising a signal has no memory-safety preconditions.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
    }
}

/// Apply the layer blob `source` into `options.destination`.
pub fn apply_layer(source: Source, options: &Options) -> Result<Applied> {
    let extractor = Extractor::new(
        &options.destination,
        options.whiteout_format,
        options.ownership,
    )?;
    let temporary = &options.tar_split_temporary_path;
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(temporary)
        .at(temporary)?;
    match run(source, options, extractor, file, temporary) {
        Ok(applied) => Ok(applied),
        Err(error) => {
            let _ = fs::remove_file(temporary);
            Err(error)
        }
    }
}

/// What the reader thread sends.
enum Message {
    Data(Vec<u8>),
    End {
        compression: Compression,
        digest: String,
        size: u64,
    },
    Failed(Error),
}

fn run(
    source: Source,
    options: &Options,
    mut extractor: Extractor,
    file: File,
    temporary: &Path,
) -> Result<Applied> {
    let (data_sender, data_receiver) = mpsc::sync_channel::<Message>(IN_FLIGHT);
    let (free_sender, free_receiver) = mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT + 2);
    let stop = Arc::new(AtomicBool::new(false));
    let reader_stop = Arc::clone(&stop);
    let trusted = options.trusted_compressed_digest.clone();
    let reader = thread::Builder::new()
        .name("layerstore-read".into())
        .spawn(move || read_blob(source, trusted, &data_sender, &free_receiver, &reader_stop))
        .map_err(|error| Error::Io {
            source: error,
            path: options.destination.clone(),
        })?;

    let mut stream = ChannelReader {
        receiver: data_receiver,
        free: free_sender,
        current: Vec::new(),
        position: 0,
        digester: Digester::new(options.trusted_uncompressed_digest.clone()),
        end: None,
        failure: None,
    };
    let outcome = walk_and_extract(&mut stream, &mut extractor, file, temporary);
    // Whatever happened, the reader thread stops and is joined before we return.
    stop.store(true, Ordering::Relaxed);
    let failure = stream.failure.take();
    let end = stream.end.take();
    let uncompressed = std::mem::replace(&mut stream.digester, Digester::new(Some(String::new())));
    drop(stream);
    let joined = reader.join();
    if let Some(error) = failure {
        return Err(error);
    }
    if joined.is_err() {
        return Err(Error::Internal("the layer reader thread panicked".into()));
    }
    let (uids, gids, file) = outcome?;
    let Some((compression, compressed_digest, compressed_size)) = end else {
        return Err(Error::Internal(
            "the layer stream ended without its digest".into(),
        ));
    };
    let size = extractor.finish()?;
    file.sync_all().at(temporary)?;
    drop(file);
    fault("apply:before-tar-split");
    fs::rename(temporary, &options.tar_split_path).at(&options.tar_split_path)?;
    let (uncompressed_digest, uncompressed_size) = uncompressed.finish();
    Ok(Applied {
        compressed_digest,
        compressed_size,
        uncompressed_digest,
        uncompressed_size,
        compression,
        uids,
        gids,
        size,
    })
}

type Outcome = (Vec<u32>, Vec<u32>, File);

fn walk_and_extract(
    stream: &mut ChannelReader,
    extractor: &mut Extractor,
    file: File,
    temporary: &Path,
) -> Result<Outcome> {
    let gzip = flate2::write::GzEncoder::new(
        BufWriter::with_capacity(256 << 10, file),
        flate2::Compression::fast(),
    );
    let mut walker = Walker::new(&mut *stream, Packer::new(gzip));
    let mut uids = BTreeSet::new();
    let mut gids = BTreeSet::new();
    while let Some(header) = walker.next_entry()? {
        if !is_whiteout_name(&header.name) {
            uids.insert(crate::extract::owner_id(header.uid));
            gids.insert(crate::extract::owner_id(header.gid));
        }
        extractor.extract(&header, &mut |sink| walker.read_content(sink))?;
    }
    let (mut packer, short_last) = walker.finish_trailing()?;
    // Go's zstd and xz readers return the last bytes together with the end of the stream, so
    // Go writes no empty segment after a short last one there (docs/apply.md step 8).
    let eof_with_data = matches!(
        stream.end,
        Some((Compression::Zstd | Compression::Xz, _, _))
    );
    if !(eof_with_data && short_last) {
        packer.add_segment(&[])?;
    }
    let buffered = packer.into_inner().finish().at(temporary)?;
    let file = buffered
        .into_inner()
        .map_err(io::IntoInnerError::into_error)
        .at(temporary)?;
    Ok((uids.into_iter().collect(), gids.into_iter().collect(), file))
}

/// The decompressed stream as the calling thread sees it: buffers from the reader thread,
/// hashed as they arrive and handed back once read.
struct ChannelReader {
    receiver: Receiver<Message>,
    free: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    position: usize,
    digester: Digester,
    end: Option<(Compression, String, u64)>,
    failure: Option<Error>,
}

impl Read for ChannelReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let count = available.len().min(buffer.len());
        buffer[..count].copy_from_slice(&available[..count]);
        self.consume(count);
        Ok(count)
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.position >= self.current.len() {
            if self.end.is_some() {
                return Ok(&[]);
            }
            if self.failure.is_some() {
                return Err(io::Error::other("the layer stream failed"));
            }
            let spent = std::mem::take(&mut self.current);
            if spent.capacity() > 0 {
                // The reader makes new buffers if this one cannot go back.
                let _ = self.free.try_send(spent);
            }
            self.position = 0;
            match self.receiver.recv() {
                Ok(Message::Data(data)) => {
                    self.digester.update(&data);
                    self.current = data;
                }
                Ok(Message::End {
                    compression,
                    digest,
                    size,
                }) => self.end = Some((compression, digest, size)),
                Ok(Message::Failed(error)) => self.failure = Some(error),
                Err(mpsc::RecvError) => {
                    self.failure = Some(Error::Internal("the layer reader stopped".into()));
                }
            }
        }
        Ok(&self.current[self.position..])
    }

    fn consume(&mut self, amount: usize) {
        self.position = (self.position + amount).min(self.current.len());
    }
}

/// Size of the buffers of the blob as given, read ahead of the decoder.
const SOURCE_CHUNK: usize = 256 << 10;

/// The blob as given, read and hashed ahead on a thread of its own: the decoder is the slowest
/// stage of the pipeline, so hashing the blob must not run on its thread.
struct Prefetched {
    receiver: Receiver<io::Result<Vec<u8>>>,
    free: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    position: usize,
}

/// The read-ahead thread's handle: joined, it gives the blob's digester.
struct Prefetcher {
    thread: thread::JoinHandle<Digester>,
    failed: Arc<AtomicBool>,
}

fn prefetch(
    mut reader: Box<dyn Read + Send>,
    mut digester: Digester,
) -> io::Result<(Prefetched, Prefetcher)> {
    let (sender, receiver) = mpsc::sync_channel::<io::Result<Vec<u8>>>(IN_FLIGHT);
    let (free, free_receiver) = mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT + 2);
    let failed = Arc::new(AtomicBool::new(false));
    let failed_here = Arc::clone(&failed);
    let thread = thread::Builder::new()
        .name("layerstore-source".into())
        .spawn(move || {
            loop {
                let mut buffer = free_receiver
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(SOURCE_CHUNK));
                buffer.resize(SOURCE_CHUNK, 0);
                match reader.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(count) => {
                        digester.update(&buffer[..count]);
                        buffer.truncate(count);
                        // A closed channel: the decoder stopped early, so do we.
                        if sender.send(Ok(buffer)).is_err() {
                            break;
                        }
                    }
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => {
                        failed_here.store(true, Ordering::Relaxed);
                        let _ = sender.send(Err(error));
                        break;
                    }
                }
            }
            digester
        })?;
    let prefetched = Prefetched {
        receiver,
        free,
        current: Vec::new(),
        position: 0,
    };
    Ok((prefetched, Prefetcher { thread, failed }))
}

impl Read for Prefetched {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if self.position == self.current.len() {
            let used = std::mem::take(&mut self.current);
            let _ = self.free.try_send(used);
            self.position = 0;
            match self.receiver.recv() {
                Ok(Ok(data)) => self.current = data,
                Ok(Err(error)) => return Err(error),
                Err(mpsc::RecvError) => return Ok(0), // the source ended
            }
        }
        let count = buffer.len().min(self.current.len() - self.position);
        buffer[..count].copy_from_slice(&self.current[self.position..self.position + count]);
        self.position += count;
        Ok(count)
    }
}

/// The reader thread: source -> sha256 -> decoder -> buffers.
fn read_blob(
    source: Source,
    trusted: Option<String>,
    sender: &SyncSender<Message>,
    free: &Receiver<Vec<u8>>,
    stop: &AtomicBool,
) {
    let message = match decode_blob(source, trusted, sender, free, stop) {
        Ok(Some((compression, digest, size))) => Message::End {
            compression,
            digest,
            size,
        },
        Ok(None) => return, // the walker stopped listening
        Err(error) => Message::Failed(error),
    };
    let _ = sender.send(message);
}

type End = (Compression, String, u64);

fn decode_blob(
    source: Source,
    trusted: Option<String>,
    sender: &SyncSender<Message>,
    free: &Receiver<Vec<u8>>,
    stop: &AtomicBool,
) -> Result<Option<End>> {
    let name = source.name;
    let source_error = |error: io::Error| Error::Io {
        source: error,
        path: name.clone(),
    };
    let (prefetched, source_thread) =
        prefetch(source.reader, Digester::new(trusted)).map_err(source_error)?;
    let decoded = decode(
        prefetched,
        &source_thread.failed,
        sender,
        free,
        stop,
        &source_error,
    );
    // The decoder (and with it the channel from the source thread) is gone: the thread ends
    // after its current read, and is joined on every path.
    let digester = source_thread
        .thread
        .join()
        .map_err(|_| Error::Internal("the layer source thread panicked".into()))?;
    match decoded? {
        Some(compression) => {
            let (digest, size) = digester.finish();
            Ok(Some((compression, digest, size)))
        }
        None => Ok(None),
    }
}

fn decode(
    mut prefetched: Prefetched,
    source_failed: &AtomicBool,
    sender: &SyncSender<Message>,
    free: &Receiver<Vec<u8>>,
    stop: &AtomicBool,
    source_error: &dyn Fn(io::Error) -> Error,
) -> Result<Option<Compression>> {
    let magic = compress::read_magic(&mut prefetched).map_err(source_error)?;
    let compression = compress::detect(&magic);
    let mut decoder = compress::decoder(compression, io::Cursor::new(magic).chain(prefetched))?;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let mut buffer = free
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        buffer.clear();
        buffer.resize(CHUNK, 0);
        let mut filled = 0;
        while filled < CHUNK {
            match decoder.read(&mut buffer[filled..]) {
                Ok(0) => break,
                Ok(count) => filled += count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    return Err(if source_failed.load(Ordering::Relaxed) {
                        source_error(error)
                    } else {
                        decoder.describe(&error)
                    });
                }
            }
        }
        buffer.truncate(filled);
        if filled > 0 && sender.send(Message::Data(buffer)).is_err() {
            return Ok(None);
        }
        if filled < CHUNK {
            return Ok(Some(compression));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn header(name: &[u8], typeflag: u8, size: usize) -> Vec<u8> {
        let mut block = vec![0u8; 512];
        block[..name.len()].copy_from_slice(name);
        block[100..108].copy_from_slice(b"0000644\0");
        block[108..116].copy_from_slice(b"0001750\0");
        block[116..124].copy_from_slice(b"0001751\0");
        block[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        block[136..148].copy_from_slice(b"14000000000\0");
        block[156] = typeflag;
        block[257..265].copy_from_slice(b"ustar\x0000");
        block[148..156].copy_from_slice(b"        ");
        let sum: u32 = block.iter().map(|&byte| u32::from(byte)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        block
    }

    fn layer() -> Vec<u8> {
        let mut tar = header(b"dir/", b'5', 0);
        tar.extend(header(b"dir/file", b'0', 5));
        tar.extend(b"hello");
        tar.extend([0u8; 507]);
        tar.extend(header(b"dir/.wh.old", b'0', 0));
        tar.extend([0u8; 1024]);
        tar
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn options(scratch: &Path) -> Options {
        Options {
            destination: scratch.join("tree"),
            tar_split_path: scratch.join("layer.tar-split.gz"),
            tar_split_temporary_path: scratch.join("layer.tar-split.gz.tmp"),
            whiteout_format: WhiteoutFormat::Vfs,
            ownership: Ownership::default(),
            trusted_compressed_digest: None,
            trusted_uncompressed_digest: None,
        }
    }

    fn source(blob: Vec<u8>) -> Source {
        Source {
            reader: Box::new(io::Cursor::new(blob)),
            name: PathBuf::from("<test>"),
        }
    }

    #[test]
    fn applies_a_gzip_layer_in_one_pass() {
        let scratch = tempfile::tempdir().unwrap();
        let options = options(scratch.path());
        fs::create_dir(&options.destination).unwrap();
        let tar = layer();
        let blob = gzip(&tar);
        let applied = apply_layer(source(blob.clone()), &options).unwrap();
        assert_eq!(applied.compression, Compression::Gzip);
        assert_eq!(applied.compressed_size, blob.len() as u64);
        assert_eq!(applied.uncompressed_size, tar.len() as u64);
        let mut digester = Digester::new(None);
        digester.update(&tar);
        assert_eq!(applied.uncompressed_digest, digester.finish().0);
        assert_eq!(
            (applied.uids, applied.gids, applied.size),
            (vec![1000], vec![1001], 5)
        );
        assert_eq!(
            fs::read(options.destination.join("dir/file")).unwrap(),
            b"hello"
        );
        let mut lines = String::new();
        flate2::read::GzDecoder::new(File::open(&options.tar_split_path).unwrap())
            .read_to_string(&mut lines)
            .unwrap();
        assert_eq!(lines.lines().count(), 8);
        assert!(!options.tar_split_temporary_path.exists());
    }

    #[test]
    fn a_failure_leaves_no_tar_split() {
        let scratch = tempfile::tempdir().unwrap();
        let options = options(scratch.path());
        fs::create_dir(&options.destination).unwrap();
        let mut blob = gzip(&layer());
        blob.extend(b"trailing garbage");
        let error = apply_layer(source(blob), &options).unwrap_err();
        assert!(matches!(error, Error::InvalidLayerData(_)), "{error}");
        assert!(!options.tar_split_path.exists());
        assert!(!options.tar_split_temporary_path.exists());
    }
}
