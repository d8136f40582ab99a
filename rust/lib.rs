//! `layerstore._native`: the byte work of layerstore, called from `layerstore.engines.native`.
//!
//! This file is glue only: it extracts arguments while attached to the interpreter, runs the
//! job detached (other Python threads keep running), and maps errors onto `layerstore.errors`.
//! The work itself lives in the modules below, which know nothing of Python.

pub mod apply;
pub mod compress;
pub mod confine;
pub mod copy;
pub mod crc64;
pub mod diff;
pub mod digest;
pub mod error;
pub mod extract;
pub mod mount;
pub mod paths;
pub mod tarsplit;

#[pyo3::pymodule]
mod _native {
    use std::io::{self, Read};
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, PoisonError};

    use pyo3::buffer::PyUntypedBuffer;
    use pyo3::exceptions::{PyTypeError, PyValueError};
    use pyo3::prelude::*;
    use pyo3::pybacked::PyBackedBytes;
    use pyo3::types::{PyByteArray, PyBytes, PyMemoryView, PyString};

    use crate::apply::{Options, Source};
    use crate::compress::Compression;
    use crate::diff::DiffStream;
    use crate::error::{Error, NotSupported};
    use crate::extract::WhiteoutFormat;
    use crate::tarsplit::packer::{FILE_TYPE, SEGMENT_TYPE};
    use crate::tarsplit::unpacker::Entry;

    /// What `apply_layer` returns: compressed digest and size, uncompressed digest and size,
    /// compression (0 none, 1 bzip2, 2 gzip, 3 xz, 4 zstd), uids, gids, size of the files.
    type Applied = (String, u64, String, u64, u8, Vec<u32>, Vec<u32>, u64);

    /// Apply a layer blob (`ApplyDiff`, docs/apply.md): detect and undo its compression, compute
    /// both digests, write tar-split to `tar_split_path` and extract into `destination`.
    #[pyfunction]
    #[pyo3(signature = (
        source,
        destination,
        tar_split_path,
        whiteout_format,
        trusted_compressed_digest,
        trusted_uncompressed_digest,
    ))]
    fn apply_layer(
        py: Python<'_>,
        source: Bound<'_, PyAny>,
        destination: PathBuf,
        tar_split_path: PathBuf,
        whiteout_format: &str,
        trusted_compressed_digest: Option<String>,
        trusted_uncompressed_digest: Option<String>,
    ) -> PyResult<Applied> {
        let whiteout_format = match whiteout_format {
            "overlay" => WhiteoutFormat::Overlay,
            "vfs" => WhiteoutFormat::Vfs,
            other => {
                return Err(PyValueError::new_err(format!(
                    "whiteout_format must be \"overlay\" or \"vfs\", not {other:?}"
                )))
            }
        };
        for digest in [&trusted_compressed_digest, &trusted_uncompressed_digest]
            .into_iter()
            .flatten()
        {
            if !crate::digest::is_valid_sha256(digest) {
                return Err(PyValueError::new_err(format!(
                    "a trusted digest must be \"sha256:\" and 64 lowercase hex digits, not {digest:?}"
                )));
            }
        }
        let python_error = Arc::new(Mutex::new(None));
        let source = blob_source(&source, &python_error)?;
        let options = Options {
            destination,
            tar_split_path,
            whiteout_format,
            trusted_compressed_digest,
            trusted_uncompressed_digest,
        };
        let result = py.detach(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let source = match source {
                    BlobSource::Path(path) => Source::open(&path)?,
                    BlobSource::Reader(source) => source,
                };
                crate::apply::apply_layer(source, &options)
            }))
            .unwrap_or_else(|_| Err(Error::Internal("apply_layer panicked".into())))
        });
        match result {
            Ok(applied) => Ok((
                applied.compressed_digest,
                applied.compressed_size,
                applied.uncompressed_digest,
                applied.uncompressed_size,
                applied.compression as u8,
                applied.uids,
                applied.gids,
                applied.size,
            )),
            Err(error) => {
                // The exception raised by the source's own read() wins over our report of it.
                let raised = python_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                Err(raised.unwrap_or_else(|| error.into()))
            }
        }
    }

    enum BlobSource {
        Path(PathBuf),
        Reader(Source),
    }

    /// A path (`str` or `os.PathLike`), a bytes-like object, or a file object with `readinto`
    /// or `read`.
    fn blob_source(
        source: &Bound<'_, PyAny>,
        python_error: &Arc<Mutex<Option<PyErr>>>,
    ) -> PyResult<BlobSource> {
        if source.is_instance_of::<PyString>() || source.hasattr("__fspath__")? {
            return Ok(BlobSource::Path(source.extract::<PathBuf>()?));
        }
        let bytes = if source.is_instance_of::<PyMemoryView>() {
            Some(source.call_method0("tobytes")?.extract::<PyBackedBytes>()?)
        } else {
            source.extract::<PyBackedBytes>().ok()
        };
        if let Some(bytes) = bytes {
            return Ok(BlobSource::Reader(Source {
                reader: Box::new(BytesReader { bytes, position: 0 }),
                name: PathBuf::from("<bytes>"),
            }));
        }
        let use_readinto = source.hasattr("readinto")?;
        if !use_readinto && !source.hasattr("read")? {
            return Err(PyValueError::new_err(
                "source must be a path, a bytes-like object or a file object with read()",
            ));
        }
        Ok(BlobSource::Reader(Source {
            reader: Box::new(PythonReader {
                object: source.clone().unbind(),
                use_readinto,
                scratch: None,
                error: Arc::clone(python_error),
            }),
            name: PathBuf::from(format!("<{}>", source.get_type().name()?)),
        }))
    }

    /// A `bytes` object read without the interpreter: its buffer is immutable and kept alive.
    struct BytesReader {
        bytes: PyBackedBytes,
        position: usize,
    }

    impl Read for BytesReader {
        fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
            let rest = self.bytes.get(self.position..).unwrap_or_default();
            let count = rest.len().min(buffer.len());
            buffer[..count].copy_from_slice(&rest[..count]);
            self.position += count;
            Ok(count)
        }
    }

    /// A Python file object, read in chunks, attached to the interpreter only for each call.
    struct PythonReader {
        object: Py<PyAny>,
        use_readinto: bool,
        scratch: Option<Py<PyByteArray>>,
        error: Arc<Mutex<Option<PyErr>>>,
    }

    impl PythonReader {
        fn read_attached(&mut self, py: Python<'_>, buffer: &mut [u8]) -> PyResult<usize> {
            let object = self.object.bind(py);
            if self.use_readinto {
                let scratch = match &self.scratch {
                    Some(scratch) if scratch.bind(py).len() == buffer.len() => {
                        scratch.clone_ref(py)
                    }
                    _ => {
                        let fresh = PyByteArray::new(py, &vec![0u8; buffer.len()]).unbind();
                        self.scratch = Some(fresh.clone_ref(py));
                        fresh
                    }
                };
                let scratch = scratch.bind(py);
                let result = object.call_method1("readinto", (scratch,))?;
                if result.is_none() {
                    return Err(PyValueError::new_err(
                        "readinto() returned None: non-blocking sources are not supported",
                    ));
                }
                let count: usize = result.extract()?;
                if count > buffer.len() {
                    return Err(PyValueError::new_err(
                        "readinto() reported more than it was given",
                    ));
                }
                // SAFETY: no Python code runs while the bytearray's contents are copied, so
                // nothing can resize or free them meanwhile.
                let filled = unsafe { scratch.as_bytes() };
                buffer[..count].copy_from_slice(&filled[..count]);
                Ok(count)
            } else {
                let data = object.call_method1("read", (buffer.len(),))?;
                let data: PyBackedBytes = data.extract()?;
                if data.len() > buffer.len() {
                    return Err(PyValueError::new_err("read(n) returned more than n bytes"));
                }
                buffer[..data.len()].copy_from_slice(&data);
                Ok(data.len())
            }
        }
    }

    impl Read for PythonReader {
        fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
            if buffer.is_empty() {
                return Ok(0);
            }
            let buffer_length = buffer.len().min(1 << 20);
            let buffer = &mut buffer[..buffer_length];
            Python::attach(|py| match self.read_attached(py, buffer) {
                Ok(count) => Ok(count),
                Err(error) => {
                    let message = error.to_string();
                    *self.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
                    Err(io::Error::other(message))
                }
            })
        }
    }

    /// Copy the directory tree `source` to `destination` (which must not exist), preserving
    /// owners, modes, times, xattrs, hard links and special files.
    /// Mount an overlay of `lowers` (topmost first) on `target`; writable when `upper` and
    /// `work` are given. Raises `layerstore.errors.MountError` with the errno and mount data.
    #[pyfunction]
    #[pyo3(signature = (lowers, upper, work, target, options))]
    fn mount_overlay(
        py: Python<'_>,
        lowers: Vec<String>,
        upper: Option<String>,
        work: Option<String>,
        target: String,
        options: Vec<String>,
    ) -> PyResult<()> {
        let overlay = crate::mount::Overlay {
            lowers: &lowers,
            upper: upper.as_deref(),
            work: work.as_deref(),
            options: &options,
        };
        py.detach(|| crate::mount::mount_overlay(&overlay, &target))?;
        Ok(())
    }

    /// Unmount `target`; `detach` leaves the last users to finish (`MNT_DETACH`).
    #[pyfunction]
    fn unmount(py: Python<'_>, target: String, detach: bool) -> PyResult<()> {
        py.detach(|| crate::mount::unmount(&target, detach))?;
        Ok(())
    }

    /// Make the mount at `path` private, bind-mounting it onto itself first when `bind`;
    /// raises `layerstore.errors.MountError`.
    #[pyfunction]
    fn make_private_mount(py: Python<'_>, path: String, bind: bool) -> PyResult<()> {
        py.detach(|| crate::mount::make_private_mount(&path, bind))?;
        Ok(())
    }

    #[pyfunction]
    fn copy_tree(py: Python<'_>, source: PathBuf, destination: PathBuf) -> PyResult<()> {
        py.detach(|| crate::copy::copy_tree(&source, &destination))?;
        Ok(())
    }

    // The four functions below expose single stages of apply and diff, for the micro
    // benchmarks (benches/bench_kernels.py) and the parity tests of the engines' pieces.

    /// CRC-64/GO-ISO of `data`, as tar-split records it for each file.
    #[pyfunction]
    #[pyo3(signature = (data, /))]
    fn crc64(py: Python<'_>, data: PyBackedBytes) -> u64 {
        py.detach(|| crate::crc64::checksum(&data))
    }

    /// `"sha256:<hex>"` of `data`.
    #[pyfunction]
    #[pyo3(signature = (data, /))]
    fn sha256_digest(py: Python<'_>, data: PyBackedBytes) -> String {
        py.detach(|| {
            let mut digester = crate::digest::Digester::new(None);
            digester.update(&data);
            digester.finish().0
        })
    }

    /// The tar-split of the tar archive `tar`: its JSON lines, uncompressed, exactly as an apply
    /// records them.
    #[pyfunction]
    #[pyo3(signature = (tar, /))]
    fn tar_split_encode(py: Python<'_>, tar: PyBackedBytes) -> PyResult<Bound<'_, PyBytes>> {
        let lines = py.detach(|| crate::tarsplit::encode(&tar))?;
        Ok(PyBytes::new(py, &lines))
    }

    /// One decoded tar-split entry: (type, name, size, payload); type 1 is a file (payload: its
    /// CRC-64, or None), type 2 a segment (name empty, size 0, payload: its bytes).
    type Decoded = (u8, Vec<u8>, i64, Option<Vec<u8>>);

    /// The entries of tar-split JSON lines (uncompressed), in order.
    #[pyfunction]
    #[pyo3(signature = (tar_split, /))]
    fn tar_split_decode(py: Python<'_>, tar_split: PyBackedBytes) -> PyResult<Vec<Decoded>> {
        let entries = py.detach(|| crate::tarsplit::decode(&tar_split))?;
        Ok(entries
            .into_iter()
            .map(|entry| match entry {
                Entry::Segment(payload) => (SEGMENT_TYPE, Vec::new(), 0, Some(payload)),
                Entry::File { name, size, crc } => (FILE_TYPE, name, size, crc),
            })
            .collect())
    }

    /// Start the diff of a layer against its parent from its tar-split (docs/diff.md): the
    /// layer's tar rebuilt from `tar_split_path` and the files in `layer_dir`, each file's size
    /// and CRC-64 checked as it is read, compressed with `compression` (0 none, 2 gzip, 4 zstd).
    #[pyfunction]
    fn open_diff(
        py: Python<'_>,
        tar_split_path: PathBuf,
        layer_dir: PathBuf,
        compression: i64,
    ) -> PyResult<DiffReader> {
        let Some(compression) = Compression::from_code(compression) else {
            return Err(NotSupported::new_err(format!(
                "diffs cannot be compressed as compression {compression}: ask for none, gzip or \
                 zstd"
            )));
        };
        let stream = py.detach(|| {
            catch_unwind(|| DiffStream::open(&tar_split_path, &layer_dir, compression))
                .unwrap_or_else(|_| Err(Error::Internal("open_diff panicked".into())))
        })?;
        Ok(DiffReader {
            stream: Mutex::new(Some(stream)),
            closed: AtomicBool::new(false),
        })
    }

    /// Size of the pieces `read()` without a size gathers.
    const READ_ALL_CHUNK: usize = 1 << 20;

    /// A layer's diff as a readable binary file (what `open_diff` returns).
    ///
    /// Every read runs detached from the interpreter. Closing it, leaving its `with` block or
    /// dropping it releases the tar-split file, any open layer file and every thread.
    #[pyclass(module = "layerstore._native", frozen)]
    struct DiffReader {
        /// `None` once closed.
        stream: Mutex<Option<DiffStream>>,
        closed: AtomicBool,
    }

    fn closed_error() -> PyErr {
        PyValueError::new_err("I/O operation on closed file.")
    }

    impl DiffReader {
        fn check_open(&self) -> PyResult<()> {
            if self.closed.load(Ordering::Acquire) {
                return Err(closed_error());
            }
            Ok(())
        }

        /// Fill `target` from the stream (detached); `None` if it was closed meanwhile.
        fn fill(&self, target: &mut [u8]) -> Result<Option<usize>, Error> {
            let mut guard = self.stream.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(stream) = guard.as_mut() else {
                return Ok(None);
            };
            if let Ok(result) = catch_unwind(AssertUnwindSafe(|| stream.read(target))) {
                result.map(Some)
            } else {
                // Whatever state a panic left is not read from again.
                *guard = None;
                Err(Error::Internal("the diff reader panicked".into()))
            }
        }

        fn fill_detached(&self, py: Python<'_>, target: &mut [u8]) -> PyResult<usize> {
            match py.detach(|| self.fill(target))? {
                Some(count) => Ok(count),
                None => Err(closed_error()),
            }
        }

        fn read_all<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
            let mut data = Vec::new();
            loop {
                let start = data.len();
                data.resize(start + READ_ALL_CHUNK, 0);
                let count = self.fill_detached(py, &mut data[start..])?;
                data.truncate(start + count);
                if count < READ_ALL_CHUNK {
                    return Ok(PyBytes::new(py, &data));
                }
            }
        }
    }

    #[pymethods]
    impl DiffReader {
        /// Read up to `size` bytes (fewer only at the end); all that is left if `size` is
        /// negative or None.
        #[pyo3(signature = (size = -1, /), text_signature = "($self, size=-1, /)")]
        fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
            self.check_open()?;
            let Some(size) = size.and_then(|size| usize::try_from(size).ok()) else {
                return self.read_all(py);
            };
            let mut count = 0;
            let bytes = PyBytes::new_with(py, size, |target| {
                count = self.fill_detached(py, target)?;
                Ok(())
            })?;
            if count == size {
                Ok(bytes)
            } else {
                Ok(PyBytes::new(py, &bytes.as_bytes()[..count]))
            }
        }

        /// Read all that is left.
        fn readall<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
            self.check_open()?;
            self.read_all(py)
        }

        /// Fill `buffer` (any writable, C-contiguous buffer) in place; fewer bytes only at the
        /// end. Returns how many bytes were written.
        #[pyo3(signature = (buffer, /))]
        fn readinto(&self, py: Python<'_>, buffer: &Bound<'_, PyAny>) -> PyResult<usize> {
            self.check_open()?;
            let view = PyUntypedBuffer::get(buffer)?;
            if view.readonly() {
                return Err(PyTypeError::new_err(
                    "readinto() argument must be a writable bytes-like object",
                ));
            }
            if !view.is_c_contiguous() {
                return Err(PyTypeError::new_err(
                    "readinto() argument must be a contiguous buffer",
                ));
            }
            let length = view.len_bytes();
            if length == 0 {
                return Ok(0);
            }
            // SAFETY: the view keeps the exporter's memory alive and unresized until it is
            // released below (a bytearray refuses to resize while exported); it is writable,
            // C-contiguous and `length` bytes long. As with the standard library's readinto,
            // Python code that writes the same buffer from another thread meanwhile gets
            // whichever bytes land last; it cannot make this code unsound.
            let target =
                unsafe { std::slice::from_raw_parts_mut(view.buf_ptr().cast::<u8>(), length) };
            let result = self.fill_detached(py, target);
            view.release(py);
            result
        }

        /// True: the diff is read from start to end.
        fn readable(&self) -> PyResult<bool> {
            self.check_open()?;
            Ok(true)
        }

        /// False: the diff is a stream.
        fn seekable(&self) -> PyResult<bool> {
            self.check_open()?;
            Ok(false)
        }

        /// False: the diff is read, not written.
        fn writable(&self) -> PyResult<bool> {
            self.check_open()?;
            Ok(false)
        }

        /// Release the tar-split file, any open layer file and every thread. Closing twice is
        /// allowed.
        fn close(&self, py: Python<'_>) {
            self.closed.store(true, Ordering::Release);
            // Threads are joined detached: a read in progress on another thread finishes first.
            py.detach(|| {
                let stream = self
                    .stream
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                drop(stream);
            });
        }

        /// Whether `close()` was called.
        #[getter]
        fn closed(&self) -> bool {
            self.closed.load(Ordering::Acquire)
        }

        fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
            slf.get().check_open()?;
            Ok(slf)
        }

        #[pyo3(signature = (_exc_type, _exc_value, _traceback, /))]
        fn __exit__(
            &self,
            py: Python<'_>,
            _exc_type: Option<Bound<'_, PyAny>>,
            _exc_value: Option<Bound<'_, PyAny>>,
            _traceback: Option<Bound<'_, PyAny>>,
        ) -> bool {
            self.close(py);
            false
        }
    }
}
