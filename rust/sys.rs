//! The few system calls `nix` does not wrap, each behind a safe function.
//!
//! Everything else goes through `nix`; these are the extended-attribute calls and `fchmodat2`
//! (Linux 6.6), the one way to change a mode without following a symlink.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

fn check(status: libc::c_long) -> io::Result<()> {
    if status < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `setxattr` (following a final symlink) or `lsetxattr` (not) on `path`.
pub fn set_xattr(path: &CStr, name: &CStr, value: &[u8], follow: bool) -> io::Result<()> {
    // SAFETY: `path` and `name` are NUL-terminated; the pointer and length describe `value`,
    // which outlives the call; the kernel only reads them.
    let status = unsafe {
        if follow {
            libc::setxattr(
                path.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        } else {
            libc::lsetxattr(
                path.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        }
    };
    check(libc::c_long::from(status))
}

/// `fsetxattr` on the open file `fd`.
pub fn fset_xattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `fd` is open for the call (borrowed); `name` is NUL-terminated; the pointer and
    // length describe `value`, which the kernel only reads.
    let status = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    check(libc::c_long::from(status))
}

/// `fchmodat2(dir, name, mode, AT_SYMLINK_NOFOLLOW)`; ENOSYS on kernels before 6.6.
pub fn fchmodat2_nofollow(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: a raw system call with an open descriptor (borrowed for the call), a
    // NUL-terminated name and plain integers; it reads nothing else of ours.
    let status = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            dir.as_raw_fd(),
            name.as_ptr(),
            mode,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(status)
}

/// Call a size-then-fill xattr function until the buffer is large enough; a file system
/// without xattrs (ENOTSUP) has none.
fn read_sized(mut call: impl FnMut(*mut libc::c_char, usize) -> isize) -> io::Result<Vec<u8>> {
    loop {
        let size = call(std::ptr::null_mut(), 0);
        if size < 0 {
            let error = io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::ENOTSUP) => Ok(Vec::new()),
                _ => Err(error),
            };
        }
        if size == 0 {
            return Ok(Vec::new()); // none: no second call
        }
        let mut buffer = vec![0u8; size.unsigned_abs()];
        let filled = call(buffer.as_mut_ptr().cast(), buffer.len());
        if filled >= 0 {
            buffer.truncate(filled.unsigned_abs());
            return Ok(buffer);
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::ERANGE) {
            return Err(error); // ERANGE: it grew between the calls; ask again
        }
    }
}

/// `llistxattr`: the NUL-separated names of `path`'s extended attributes (not following a
/// final symlink).
pub fn list_xattrs_nofollow(path: &CStr) -> io::Result<Vec<u8>> {
    // SAFETY: `path` is NUL-terminated; the buffer pointer and length come from read_sized and
    // describe a live, writable buffer.
    read_sized(|buffer, size| unsafe { libc::llistxattr(path.as_ptr(), buffer, size) })
}

/// `flistxattr`: the NUL-separated names of the open file `fd`'s extended attributes.
pub fn flist_xattrs(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    // SAFETY: `fd` is open for the call (borrowed); the buffer pointer and length come from
    // read_sized and describe a live, writable buffer.
    read_sized(|buffer, size| unsafe { libc::flistxattr(fd.as_raw_fd(), buffer, size) })
}

/// `lgetxattr`: the value of `path`'s extended attribute `name` (not following a final
/// symlink).
pub fn get_xattr_nofollow(path: &CStr, name: &CStr) -> io::Result<Vec<u8>> {
    read_sized(|buffer, size| {
        // SAFETY: as above; `name` is NUL-terminated too.
        unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), buffer.cast(), size) }
    })
}

/// Whether this process runs in a user namespace other than the initial one, read as
/// containers/storage's `unshare.IsRootless`/`RunningInUserNS` reads it: the first line of
/// `/proc/self/uid_map` is anything but `0 0 4294967295`.
#[must_use]
pub fn running_in_user_namespace() -> bool {
    let Ok(map) = std::fs::read_to_string("/proc/self/uid_map") else {
        return false;
    };
    let first: Vec<&str> = map
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    first != ["0", "0", "4294967295"]
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_initial_namespace_is_not_a_user_namespace() {
        let map = std::fs::read_to_string("/proc/self/uid_map").unwrap();
        let initial = map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
        assert_eq!(super::running_in_user_namespace(), !initial);
    }
}
