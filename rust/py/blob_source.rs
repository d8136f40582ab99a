//! The blob `apply_layer` reads: a path, a buffer, or a Python file object read in chunks.
//!
//! `layerstore.engines` has already turned whatever the caller gave into one of those three
//! (a `str` path, `bytes` or `bytearray`, an object with `read`): this file only tells them
//! apart and reads them.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyByteArray, PyBytes, PyString};

use crate::apply::Source;

/// Where the blob comes from.
pub enum BlobSource {
    /// A file the Rust side opens itself (no copy through Python).
    Path(PathBuf),
    /// Bytes in memory or a Python stream.
    Reader(Source),
}

/// The Python exception a stream's own `read()` raised, kept to be raised again in its place.
pub type RaisedSlot = Arc<Mutex<Option<PyErr>>>;

/// `source` as a path (`str`), a buffer (`bytes`, `bytearray`) or a stream (anything else,
/// read with `readinto` when it has one, else `read`).
pub fn blob_source(source: &Bound<'_, PyAny>, raised: &RaisedSlot) -> PyResult<BlobSource> {
    if source.is_instance_of::<PyString>() {
        return Ok(BlobSource::Path(source.extract::<PathBuf>()?));
    }
    if source.is_instance_of::<PyBytes>() || source.is_instance_of::<PyByteArray>() {
        let bytes = source.extract::<PyBackedBytes>()?;
        return Ok(BlobSource::Reader(Source {
            reader: Box::new(BytesReader { bytes, position: 0 }),
            name: PathBuf::from("<bytes>"),
        }));
    }
    Ok(BlobSource::Reader(Source {
        reader: Box::new(PythonReader {
            object: source.clone().unbind(),
            use_readinto: source.hasattr("readinto")?,
            scratch: None,
            raised: Arc::clone(raised),
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
    raised: RaisedSlot,
}

impl PythonReader {
    fn read_attached(&mut self, py: Python<'_>, buffer: &mut [u8]) -> PyResult<usize> {
        let object = self.object.bind(py);
        if self.use_readinto {
            let scratch = match &self.scratch {
                Some(scratch) if scratch.bind(py).len() == buffer.len() => scratch.clone_ref(py),
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
                *self.raised.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
                Err(io::Error::other(message))
            }
        })
    }
}
