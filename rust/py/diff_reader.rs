//! `DiffReader`: a layer's diff as a readable binary file object (what `open_diff` returns).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::diff::DiffStream;
use crate::error::Error;

/// Size of the pieces `read()` without a size gathers.
const READ_ALL_CHUNK: usize = 1 << 20;

/// A layer's diff as a readable binary file (what `open_diff` returns).
///
/// Every read runs detached from the interpreter. Closing it, leaving its `with` block or
/// dropping it releases the tar-split file, any open layer file and every thread.
#[pyclass(module = "layerstore._native", frozen)]
pub struct DiffReader {
    /// `None` once closed.
    stream: Mutex<Option<DiffStream>>,
    closed: AtomicBool,
}

fn closed_error() -> PyErr {
    PyValueError::new_err("I/O operation on closed file.")
}

impl DiffReader {
    /// A reader of `stream`.
    #[must_use]
    pub fn new(stream: DiffStream) -> Self {
        Self {
            stream: Mutex::new(Some(stream)),
            closed: AtomicBool::new(false),
        }
    }

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
        let target = unsafe { std::slice::from_raw_parts_mut(view.buf_ptr().cast::<u8>(), length) };
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
