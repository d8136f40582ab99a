//! Overlay mounts through the kernel, and unmounting.
//!
//! Mounts use the new mount API (`fsopen`, `fsconfig`, `fsmount`, `move_mount`): each lower
//! directory is passed on its own as `lowerdir+` (Linux 6.8 and later), so a chain of hundreds
//! of layers is not limited by the one page that `mount(2)` allows for its data. Where the new
//! API is missing, `mount(2)` is used with the classic data string, which must fit in a page.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::{strerror, Error, Result};

/// What to mount: an overlay of `lowers` (topmost first), writable when `upper` and `work`
/// are given, with extra `options` (`ro`, `nodev`, `nosuid`, `noexec`, `key=value`, flags).
pub struct Overlay<'a> {
    /// Lower directories, topmost first.
    pub lowers: &'a [String],
    /// The upper (writable) directory, if any.
    pub upper: Option<&'a str>,
    /// overlay's work directory, with `upper`.
    pub work: Option<&'a str>,
    /// Extra options.
    pub options: &'a [String],
}

impl Overlay<'_> {
    /// The classic `mount(2)` data string, also shown in errors.
    #[must_use]
    pub fn data(&self) -> String {
        let mut parts = vec![format!("lowerdir={}", self.lowers.join(":"))];
        if let (Some(upper), Some(work)) = (self.upper, self.work) {
            parts.push(format!("upperdir={upper}"));
            parts.push(format!("workdir={work}"));
        }
        parts.extend(
            self.options
                .iter()
                .filter(|option| mount_attribute(option).is_none())
                .cloned(),
        );
        parts.join(",")
    }
}

// The new mount API's constants (linux/mount.h); the libc crate has only the syscall numbers.
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOUNT_ATTR_RDONLY: libc::c_uint = 0x1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
const MOUNT_ATTR_NOEXEC: libc::c_uint = 0x8;

/// Options that are attributes of the mount rather than of the overlay file system.
fn mount_attribute(option: &str) -> Option<libc::c_uint> {
    match option {
        "ro" => Some(MOUNT_ATTR_RDONLY),
        "nosuid" => Some(MOUNT_ATTR_NOSUID),
        "nodev" => Some(MOUNT_ATTR_NODEV),
        "noexec" => Some(MOUNT_ATTR_NOEXEC),
        _ => None,
    }
}

/// A `&str` for a system call, through confine's one rule for inner NULs.
fn c_string(text: &str) -> std::result::Result<CString, io::Error> {
    crate::confine::c_string(text.as_bytes())
}

/// The kernel's messages about a file-system context ("e overlay: ..."), read from its fd.
fn kernel_messages(context: &OwnedFd) -> String {
    let mut messages = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        // SAFETY: the buffer is valid for its length; the descriptor is open.
        let count = unsafe {
            libc::read(
                context.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
            )
        };
        let Ok(count) = usize::try_from(count) else {
            break; // ENODATA: no more messages
        };
        if count == 0 {
            break;
        }
        messages.push(String::from_utf8_lossy(&buffer[..count]).trim().to_string());
    }
    messages.join("; ")
}

fn fsconfig(
    context: &OwnedFd,
    command: libc::c_uint,
    key: Option<&CStr>,
    value: Option<&CStr>,
) -> io::Result<()> {
    let key_pointer = key.map_or(std::ptr::null(), CStr::as_ptr);
    let value_pointer = value.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: the strings are NUL-terminated (or null where the command takes none) and live
    // through the call; the descriptor is open.
    let status = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            context.as_raw_fd(),
            command,
            key_pointer,
            value_pointer,
            0,
        )
    };
    if status < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// One `fsconfig` call: a command, a key and maybe a value.
type Setting = (libc::c_uint, CString, Option<CString>);

/// The `fsconfig` calls for `overlay`, and the mount attributes its options ask for.
fn settings(overlay: &Overlay<'_>) -> io::Result<(Vec<Setting>, libc::c_uint)> {
    let mut attributes = 0;
    let mut settings = Vec::new();
    for lower in overlay.lowers {
        settings.push((
            FSCONFIG_SET_STRING,
            c"lowerdir+".to_owned(),
            Some(c_string(lower)?),
        ));
    }
    if let (Some(upper), Some(work)) = (overlay.upper, overlay.work) {
        settings.push((
            FSCONFIG_SET_STRING,
            c"upperdir".to_owned(),
            Some(c_string(upper)?),
        ));
        settings.push((
            FSCONFIG_SET_STRING,
            c"workdir".to_owned(),
            Some(c_string(work)?),
        ));
    }
    for option in overlay.options {
        if let Some(attribute) = mount_attribute(option) {
            attributes |= attribute;
        } else if let Some((key, value)) = option.split_once('=') {
            settings.push((FSCONFIG_SET_STRING, c_string(key)?, Some(c_string(value)?)));
        } else {
            settings.push((FSCONFIG_SET_FLAG, c_string(option)?, None));
        }
    }
    Ok((settings, attributes))
}

/// A descriptor a syscall returned, owned.
fn owned(result: libc::c_long) -> io::Result<OwnedFd> {
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    let raw = i32::try_from(result).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just gave us this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Mount `overlay` on `target`.
pub fn mount_overlay(overlay: &Overlay<'_>, target: &str) -> Result<()> {
    let failure = |error: &io::Error, message: String| Error::Mount {
        errno: error.raw_os_error().unwrap_or(libc::EIO),
        message,
        target: target.to_string(),
        data: overlay.data(),
    };
    // SAFETY: a NUL-terminated literal; fsopen returns a new descriptor or -1.
    let context = match owned(unsafe {
        libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC)
    }) {
        Ok(context) => context,
        Err(error) if error.raw_os_error() == Some(libc::ENOSYS) => {
            return legacy_mount(overlay, target);
        }
        Err(error) => {
            return Err(failure(
                &error,
                format!("opening an overlay file system: {}", strerror(&error)),
            ));
        }
    };
    let (settings, attributes) =
        settings(overlay).map_err(|error| failure(&error, "a NUL in a path or option".into()))?;
    for (command, key, value) in &settings {
        if let Err(error) = fsconfig(&context, *command, Some(key), value.as_deref()) {
            if key.as_bytes() == b"lowerdir+" && error.raw_os_error() == Some(libc::EINVAL) {
                // A kernel before 6.8 knows no lowerdir+: the classic data string instead.
                return legacy_mount(overlay, target);
            }
            let detail = kernel_messages(&context);
            return Err(failure(
                &error,
                format!(
                    "setting {} for overlay: {} {detail}",
                    key.to_string_lossy(),
                    strerror(&error)
                )
                .trim_end()
                .to_string(),
            ));
        }
    }
    if let Err(error) = fsconfig(&context, FSCONFIG_CMD_CREATE, None, None) {
        let detail = kernel_messages(&context);
        return Err(failure(
            &error,
            format!("creating the overlay: {} {detail}", strerror(&error))
                .trim_end()
                .to_string(),
        ));
    }
    attach(&context, attributes, target).map_err(|error| {
        failure(
            &error,
            format!(
                "attaching the overlay at its mount point: {}",
                strerror(&error)
            ),
        )
    })
}

/// Make a mount of the file-system `context` and attach it at `target`.
fn attach(context: &OwnedFd, attributes: libc::c_uint, target: &str) -> io::Result<()> {
    // SAFETY: the context descriptor is open; fsmount returns a new descriptor or -1.
    let mount = owned(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            context.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            attributes,
        )
    })?;
    let target = c_string(target)?;
    // SAFETY: the strings are NUL-terminated; the descriptors are open.
    let moved = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if moved < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `mount(2)` with the classic data string, for kernels without the new mount API.
fn legacy_mount(overlay: &Overlay<'_>, target: &str) -> Result<()> {
    let data = overlay.data();
    let failure = |error: &io::Error, message: String| Error::Mount {
        errno: error.raw_os_error().unwrap_or(libc::EIO),
        message,
        target: target.to_string(),
        data: data.clone(),
    };
    if data.len() >= 4096 {
        let error = io::Error::from_raw_os_error(libc::E2BIG);
        return Err(failure(
            &error,
            format!(
                "the mount data of {} layers is longer than a page, and this kernel has no \
                 lowerdir+ to pass them one by one",
                overlay.lowers.len()
            ),
        ));
    }
    let mut flags = nix::mount::MsFlags::empty();
    for option in overlay.options {
        match mount_attribute(option) {
            Some(MOUNT_ATTR_RDONLY) => flags |= nix::mount::MsFlags::MS_RDONLY,
            Some(MOUNT_ATTR_NOSUID) => flags |= nix::mount::MsFlags::MS_NOSUID,
            Some(MOUNT_ATTR_NODEV) => flags |= nix::mount::MsFlags::MS_NODEV,
            Some(MOUNT_ATTR_NOEXEC) => flags |= nix::mount::MsFlags::MS_NOEXEC,
            _ => {}
        }
    }
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        flags,
        Some(data.as_str()),
    )
    .map_err(|errno| {
        let error = io::Error::from(errno);
        failure(&error, format!("mounting overlay: {}", strerror(&error)))
    })
}

/// Unmount `target`; `detach` lets the kernel finish once the last user is gone.
pub fn unmount(target: &str, detach: bool) -> Result<()> {
    let flags = if detach {
        nix::mount::MntFlags::MNT_DETACH
    } else {
        nix::mount::MntFlags::empty()
    };
    nix::mount::umount2(target, flags).map_err(|errno| failure(errno, "unmounting", target))
}

/// A failed call that had no mount data (an unmount, a change of propagation).
fn failure(errno: nix::errno::Errno, what: &str, target: &str) -> Error {
    Error::Mount {
        errno: errno as i32,
        message: format!("{what}: {}", strerror(&io::Error::from(errno))),
        target: target.to_string(),
        data: String::new(),
    }
}

/// Make the mount at `path` private, bind-mounting the directory onto itself first when `bind`
/// (not recursive), as Go's `mount.MakePrivate` prepares the overlay driver's home.
pub fn make_private_mount(path: &str, bind: bool) -> Result<()> {
    if bind {
        nix::mount::mount(
            Some(path),
            path,
            Some("none"),
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|errno| failure(errno, "bind-mounting onto itself", path))?;
    }
    nix::mount::mount(
        None::<&str>,
        path,
        Some("none"),
        nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|errno| failure(errno, "making the mount private", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_lists_lowers_upper_work_and_plain_options() {
        let lowers = vec!["/a".to_string(), "/b".to_string()];
        let options = vec![
            "ro".to_string(),
            "metacopy=on".to_string(),
            "nodev".to_string(),
        ];
        let overlay = Overlay {
            lowers: &lowers,
            upper: Some("/u"),
            work: Some("/w"),
            options: &options,
        };
        assert_eq!(
            overlay.data(),
            "lowerdir=/a:/b,upperdir=/u,workdir=/w,metacopy=on"
        );
    }

    #[test]
    fn failures_name_the_target_and_data() {
        let lowers = vec!["/nonexistent/lower".to_string()];
        let overlay = Overlay {
            lowers: &lowers,
            upper: None,
            work: None,
            options: &[],
        };
        let scratch = tempfile::tempdir().unwrap();
        let target = scratch.path().to_string_lossy().into_owned();
        let Err(Error::Mount {
            errno,
            target: failed_at,
            data,
            ..
        }) = mount_overlay(&overlay, &target)
        else {
            panic!("a mount of a missing lower directory must fail as Error::Mount");
        };
        assert_eq!(failed_at, target);
        assert!(data.contains("/nonexistent/lower"));
        assert!(errno > 0);
    }
}
