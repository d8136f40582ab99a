//! Extracting tar entries into a layer's directory, confined to it whatever the archive says.
//!
//! Every parent directory is resolved inside the layer ([`crate::confine`]); the final operation
//! is a `*at` system call relative to the parent's descriptor that never follows the entry
//! itself. Whiteouts are converted for overlay or applied for vfs (docs/apply.md, 4-5).

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, AT_FDCWD};
use nix::sys::stat::{
    fchmod, fchmodat, fstatat, futimens, makedev, mkdirat, mknodat, utimensat, FchmodatFlags, Mode,
    SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{
    fchown, fchownat, geteuid, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags,
};

use crate::confine::{c_string, confine, open_at, split_parent, Root};
pub use crate::confine::{MAX_PATH, MAX_SYMLINKS};
use crate::error::{Error, IoContext, Result};
use crate::paths::{shown, PathSet};
use crate::tarsplit::header::{Header, Time};

const OPAQUE: &[u8] = b".wh..wh..opq";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const RESERVED_PREFIX: &[u8] = b".wh..wh.";

/// How whiteouts land on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhiteoutFormat {
    /// Character devices 0:0 and `trusted.overlay.opaque` (the overlay driver's `diff`).
    Overlay,
    /// Whited-out paths are removed from the copy of the parent (the vfs driver).
    Vfs,
}

/// Streams an entry's content to the sink it is given (the walker's `read_content`).
pub type Content<'a> = dyn FnMut(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> + 'a;

/// Directory metadata applied once the whole archive is in.
struct DeferredDir {
    path: Vec<u8>,
    mode: u32,
    atime: Time,
    mtime: Time,
}

/// Extracts entries, one after the other, into one layer directory.
pub struct Extractor {
    root: Root,
    format: WhiteoutFormat,
    privileged: bool,
    /// In a user namespace even its root cannot make device nodes: they are skipped, as Go's
    /// `createTarFile` skips them when `inUserns`.
    in_user_namespace: bool,
    umask: u32,
    dirs: Vec<DeferredDir>,
    /// vfs: paths this layer extracted so far (an opaque directory keeps them).
    extracted: PathSet,
    size: u64,
    /// Without root: the mode of the layer's directory, made owner-writable while the blob is
    /// applied (a new layer's is 0555, which only root may write into), to give back.
    root_mode: Option<u32>,
    /// containers/storage's `force_mask` (docs/rootless.md): files and directories get this
    /// mode, devices and fifos become empty files, nothing is chowned, and the tar's owner,
    /// mode and device numbers go into `user.containers.override_stat`.
    force_mask: Option<u32>,
    /// Owners that cannot be set are left as they are, even for root.
    ignore_chown_errors: bool,
    /// Under `force_mask`: the override value of the root entry, recorded on the layer root.
    root_override: Option<String>,
}

/// The options of containers/storage that change how entries land on disk.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ownership {
    pub force_mask: Option<u32>,
    pub ignore_chown_errors: bool,
}

/// The `st_mode` file type of an entry's type flag.
fn entry_file_type(typeflag: u8) -> u32 {
    match typeflag {
        b'3' => libc::S_IFCHR,
        b'4' => libc::S_IFBLK,
        b'5' => libc::S_IFDIR,
        b'6' => libc::S_IFIFO,
        _ => libc::S_IFREG,
    }
}

/// The override value for an entry: what its header says.
fn override_value(header: &Header) -> String {
    crate::overrides::format(
        owner_id(header.uid),
        owner_id(header.gid),
        entry_file_type(header.typeflag) | permission_bits(header.mode),
        owner_id(header.devmajor),
        owner_id(header.devminor),
    )
}

impl Drop for Extractor {
    fn drop(&mut self) {
        // A failed apply gives the mode back too; its own error is what the caller sees.
        let _ = self.give_back_root_mode();
    }
}

/// A failed lookup of a parent directory: loops and non-directories are the archive's fault.
fn walk_error(error: io::Error, parent: &[u8], path: &Path) -> Error {
    match error.raw_os_error() {
        Some(libc::ELOOP) => Error::InvalidLayerData(format!(
            "{}: too many levels of symbolic links",
            shown(parent)
        )),
        Some(libc::ENOTDIR) => Error::InvalidLayerData(format!(
            "{}: a component of the path is not a directory",
            shown(parent)
        )),
        _ => Error::Io {
            source: error,
            path: path.to_path_buf(),
        },
    }
}

/// A `nix` result as an `io::Result`, for the callers that attach a path.
fn sys<T>(result: nix::Result<T>) -> io::Result<T> {
    result.map_err(io::Error::from)
}

/// `fstatat(AT_SYMLINK_NOFOLLOW)`: the file type bits of `name`, `None` if it does not exist.
fn file_type_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<u32>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(stat.st_mode & libc::S_IFMT)),
        Err(Errno::ENOENT) => Ok(None),
        Err(errno) => Err(errno.into()),
    }
}

/// Remove `name` in `dir` and, for a directory, everything in it, never following a symlink.
pub fn remove_all_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let error = match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        Err(errno @ (Errno::EISDIR | Errno::EPERM)) => io::Error::from(errno),
        Err(errno) => return Err(errno.into()),
    };
    // EPERM may come from something that is not a directory after all: then it stands.
    let Ok(child) = open_at(
        dir,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    ) else {
        return Err(error);
    };
    let mut child = sys(Dir::from_fd(child))?;
    for entry in names_in(&mut child)? {
        remove_all_at(child.as_fd(), &entry)?;
    }
    drop(child);
    sys(unlinkat(dir, name, UnlinkatFlags::RemoveDir))
}

/// The names in an open directory, `.` and `..` left out (read through a duplicate).
fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    let mut stream = sys(Dir::from_fd(dir.try_clone_to_owned()?))?;
    names_in(&mut stream)
}

/// The names in an open directory, `.` and `..` left out.
fn names_in(dir: &mut Dir) -> io::Result<Vec<CString>> {
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = sys(entry)?;
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

fn timespec(time: Time) -> TimeSpec {
    TimeSpec::new(time.seconds, i64::from(time.nanoseconds))
}

/// The header's times as Go's `createTarFile` sets them: atime is the later of atime and mtime.
fn times(header: &Header) -> [TimeSpec; 2] {
    let atime = header
        .atime
        .map_or(header.mtime, |atime| atime.max(header.mtime));
    [timespec(atime), timespec(header.mtime)]
}

/// A mode from a header: permission and special bits only.
fn permission_bits(mode: i64) -> u32 {
    u32::try_from(mode & 0o7777).unwrap_or(0)
}

/// What a failed `setxattr` of `name` means. What the file system or our privileges do not
/// support is ignored (as Go does); a name or value that no file system takes is the archive's
/// fault: an empty or overlong name (ERANGE), a value too large (E2BIG), a name outside every
/// namespace on some file systems (EINVAL).
fn xattr_failure(
    error: io::Error,
    privileged: bool,
    header: &Header,
    name: &[u8],
    path: &Path,
) -> Result<()> {
    match error.raw_os_error() {
        Some(libc::ENOTSUP) => Ok(()),
        Some(libc::EPERM) if !privileged => Ok(()),
        Some(libc::ERANGE | libc::E2BIG | libc::EINVAL) => Err(Error::InvalidLayerData(format!(
            "invalid tar archive at offset {}: entry {} has an extended attribute {} that \
             cannot be set: {}",
            header.offset,
            shown(&header.name),
            shown(name),
            crate::error::strerror(&error)
        ))),
        _ => Err(error).at(path),
    }
}

/// Largest uid or gid an entry may have: `(uid_t)-1` means "unchanged" to `chown`.
const MAX_ID: i64 = 0xFFFF_FFFE;
/// Largest major or minor device number an entry may have.
const MAX_DEVICE: i64 = 0xFFFF_FFFF;

/// Refuse owners, devices and times the system calls cannot take (docs/apply.md section 5):
/// uid and gid in 0..2^32-2, device numbers in 0..2^32-1, times in nanoseconds within `i64`.
fn check_numbers(header: &Header) -> Result<()> {
    let fits = |time: Time| {
        let nanoseconds = i128::from(time.seconds) * 1_000_000_000 + i128::from(time.nanoseconds);
        i64::try_from(nanoseconds).is_ok()
    };
    let problem = if !(0..=MAX_ID).contains(&header.uid) || !(0..=MAX_ID).contains(&header.gid) {
        format!("owner {}:{}", header.uid, header.gid)
    } else if !(0..=MAX_DEVICE).contains(&header.devmajor)
        || !(0..=MAX_DEVICE).contains(&header.devminor)
    {
        format!("device {}:{}", header.devmajor, header.devminor)
    } else if !fits(header.mtime) || !header.atime.is_none_or(fits) {
        "time".to_string()
    } else {
        return Ok(());
    };
    Err(Error::InvalidLayerData(format!(
        "invalid tar archive at offset {}: entry {} has an out-of-range {problem}",
        header.offset,
        shown(&header.name)
    )))
}

/// An id from a header as an unsigned 32-bit value (Go's `uint32(hdr.Uid)`).
#[must_use]
pub fn owner_id(value: i64) -> u32 {
    u32::try_from(value & 0xFFFF_FFFF).unwrap_or(0)
}

/// The process's umask, read without changing it.
pub(crate) fn process_umask() -> u32 {
    // Reading it from /proc leaves the process-wide umask alone (umask(2) would change it).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Umask:"))
                .and_then(|value| u32::from_str_radix(value.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// The path of `name` inside the directory `dir` through /proc, for calls with no `*at` form.
fn proc_path(dir: BorrowedFd<'_>, name: Option<&CStr>) -> CString {
    let mut path = format!("/proc/self/fd/{}", dir.as_raw_fd()).into_bytes();
    if let Some(name) = name {
        path.push(b'/');
        path.extend_from_slice(name.to_bytes());
    }
    // Built from digits and a name that has no NUL.
    CString::new(path).unwrap_or_default()
}

/// Where an operation applies: a name in a directory, or a directory descriptor itself.
#[derive(Clone, Copy)]
enum Target<'a> {
    At(BorrowedFd<'a>, &'a CStr),
    Dir(BorrowedFd<'a>),
}

impl Target<'_> {
    fn chown(self, uid: u32, gid: u32) -> io::Result<()> {
        let (uid, gid) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        sys(match self {
            Target::At(dir, name) => fchownat(dir, name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW),
            Target::Dir(dir) => fchownat(dir, c"", uid, gid, AtFlags::AT_EMPTY_PATH),
        })
    }

    fn chmod(self, mode: u32) -> io::Result<()> {
        match self {
            Target::At(dir, name) => chmod_nofollow(dir, name, mode),
            Target::Dir(dir) => sys(fchmodat(
                AT_FDCWD,
                proc_path(dir, None).as_c_str(),
                Mode::from_bits_truncate(mode),
                FchmodatFlags::FollowSymlink,
            )),
        }
    }

    fn set_times(self, times: &[TimeSpec; 2]) -> io::Result<()> {
        sys(match self {
            Target::At(dir, name) => utimensat(
                dir,
                name,
                &times[0],
                &times[1],
                UtimensatFlags::NoFollowSymlink,
            ),
            Target::Dir(dir) => utimensat(
                AT_FDCWD,
                proc_path(dir, None).as_c_str(),
                &times[0],
                &times[1],
                UtimensatFlags::FollowSymlink,
            ),
        })
    }

    fn set_xattr(self, name: &CStr, value: &[u8]) -> io::Result<()> {
        match self {
            Target::At(dir, entry) => {
                crate::sys::set_xattr(&proc_path(dir, Some(entry)), name, value, false)
            }
            Target::Dir(dir) => crate::sys::set_xattr(&proc_path(dir, None), name, value, true),
        }
    }
}

/// `fchmodat2(AT_SYMLINK_NOFOLLOW)` (Linux 6.6); before it, `fchmodat` on a checked non-link.
fn chmod_nofollow(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    match crate::sys::fchmodat2_nofollow(dir, name, mode) {
        Err(error) if error.raw_os_error() == Some(libc::ENOSYS) => {}
        done => return done,
    }
    if file_type_at(dir, name)? == Some(libc::S_IFLNK) {
        return Ok(());
    }
    sys(fchmodat(
        dir,
        name,
        Mode::from_bits_truncate(mode),
        FchmodatFlags::FollowSymlink,
    ))
}

impl Extractor {
    /// An extractor into the existing directory `destination`.
    pub fn new(destination: &Path, format: WhiteoutFormat, ownership: Ownership) -> Result<Self> {
        let mut extractor = Self {
            force_mask: ownership.force_mask,
            ignore_chown_errors: ownership.ignore_chown_errors,
            root_override: None,
            root: Root::open(destination)?,
            format,
            privileged: geteuid().is_root(),
            in_user_namespace: crate::sys::running_in_user_namespace(),
            umask: process_umask(),
            dirs: Vec::new(),
            extracted: PathSet::new(),
            size: 0,
            root_mode: None,
        };
        if !extractor.privileged {
            let root = Arc::clone(extractor.root.fd());
            let mode = nix::sys::stat::fstat(root.as_fd()).at(destination)?.st_mode & 0o7777;
            if mode & 0o300 != 0o300 {
                Target::Dir(root.as_fd())
                    .chmod(mode | 0o300)
                    .at(destination)?;
                extractor.root_mode = Some(mode);
            }
        }
        Ok(extractor)
    }

    /// Give the layer's directory back the mode it had before an unprivileged apply.
    fn give_back_root_mode(&mut self) -> Result<()> {
        if let Some(mode) = self.root_mode.take() {
            let root = Arc::clone(self.root.fd());
            Target::Dir(root.as_fd())
                .chmod(mode)
                .at(&self.path_of(b"."))?;
        }
        Ok(())
    }

    fn path_of(&self, relative: &[u8]) -> PathBuf {
        self.root.path_of(relative)
    }

    fn walk(&self, path: &[u8], create: bool) -> io::Result<Arc<OwnedFd>> {
        self.root.walk(path, create)
    }

    fn parent(&mut self, parent: &[u8], create: bool) -> io::Result<Arc<OwnedFd>> {
        self.root.parent(parent, create)
    }

    fn invalidate(&mut self) {
        self.root.invalidate();
    }

    /// Extract one entry; `content` streams its content when it has any to write.
    pub fn extract(&mut self, header: &Header, content: &mut Content<'_>) -> Result<()> {
        if header.typeflag == b'g' {
            return Ok(());
        }
        check_numbers(header)?;
        let relative = confine(&header.name, "path")?;
        if relative == b"." {
            return self.root_entry(header);
        }
        let (parent, base) = split_parent(&relative);
        // `.wh..wh.*` anywhere is reserved AUFS metadata, except a final opaque marker.
        let reserved = parent
            .split(|&byte| byte == b'/')
            .any(|component| component.starts_with(RESERVED_PREFIX))
            || (base.starts_with(RESERVED_PREFIX) && base != OPAQUE);
        if reserved {
            return Ok(());
        }
        if base == OPAQUE {
            return self.opaque(parent);
        }
        if let Some(hidden) = base.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(parent, hidden, header);
        }
        self.create(&relative, parent, base, header, content)?;
        if self.format == WhiteoutFormat::Vfs {
            self.extracted.insert(&relative);
        }
        Ok(())
    }

    fn root_entry(&mut self, header: &Header) -> Result<()> {
        // overlay skips it (Go's Unpack); vfs merges a directory into the root (UnpackLayer).
        if self.format == WhiteoutFormat::Overlay || header.typeflag != b'5' {
            return Ok(());
        }
        let root = Arc::clone(self.root.fd());
        self.owner(Target::Dir(root.as_fd()), header, b".")?;
        self.xattrs(Target::Dir(root.as_fd()), header, b".")?;
        if self.force_mask.is_some() {
            self.root_override = Some(override_value(header));
        }
        self.dirs.push(DeferredDir {
            path: b".".to_vec(),
            mode: self.mode_of(header),
            atime: header
                .atime
                .map_or(header.mtime, |atime| atime.max(header.mtime)),
            mtime: header.mtime,
        });
        self.extracted.insert(b".");
        Ok(())
    }

    fn opaque(&mut self, directory: &[u8]) -> Result<()> {
        let path = self.path_of(directory);
        match self.format {
            WhiteoutFormat::Overlay => {
                // In a user namespace trusted.* is refused; overlay reads user.* with userxattr.
                let name: &CStr = if self.privileged && !self.in_user_namespace {
                    c"trusted.overlay.opaque"
                } else {
                    c"user.overlay.opaque"
                };
                let dir = self
                    .walk(directory, true)
                    .map_err(|error| walk_error(error, directory, &path))?;
                Target::Dir(dir.as_fd()).set_xattr(name, b"y").at(&path)
            }
            WhiteoutFormat::Vfs => {
                let dir = match self.walk(directory, true) {
                    Ok(dir) => dir,
                    Err(error) if error.raw_os_error() == Some(libc::ENOTDIR) => return Ok(()),
                    Err(error) => return Err(error).at(&path),
                };
                let opened =
                    open_at(dir.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0).at(&path)?;
                self.invalidate();
                let prefix = if directory.is_empty() {
                    b".".to_vec()
                } else {
                    directory.to_vec()
                };
                self.remove_unextracted(&opened, &prefix).at(&path)
            }
        }
    }

    /// vfs opaque directory: remove what this layer did not extract, keeping what it did (and
    /// looking inside the directories it extracted).
    fn remove_unextracted(&self, dir: &OwnedFd, path: &[u8]) -> io::Result<()> {
        for name in list_dir(dir.as_fd())? {
            let child: Vec<u8> = if path == b"." {
                name.to_bytes().to_vec()
            } else {
                [path, b"/", name.to_bytes()].concat()
            };
            if !self.extracted.contains(&child) {
                remove_all_at(dir.as_fd(), &name)?;
            } else if file_type_at(dir.as_fd(), &name)? == Some(libc::S_IFDIR) {
                let inner = open_at(
                    dir.as_fd(),
                    &name,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )?;
                self.remove_unextracted(&inner, &child)?;
            }
        }
        Ok(())
    }

    fn whiteout(&mut self, parent: &[u8], hidden: &[u8], header: &Header) -> Result<()> {
        if matches!(hidden, b"" | b"." | b"..") {
            return Ok(());
        }
        let hidden_path: Vec<u8> = if parent.is_empty() {
            hidden.to_vec()
        } else {
            [parent, b"/", hidden].concat()
        };
        let path = self.path_of(&hidden_path);
        let name = c_string(hidden).at(&path)?;
        let format = self.format;
        let dir = match self.parent(parent, true) {
            Ok(dir) => dir,
            // A parent that is itself whited out (a device), as Go's overlay conversion allows.
            Err(error) if error.raw_os_error() == Some(libc::ENOTDIR) => return Ok(()),
            Err(error) => return Err(error).at(&path),
        };
        if file_type_at(dir.as_fd(), &name).at(&path)?.is_some() {
            remove_all_at(dir.as_fd(), &name).at(&path)?;
            self.invalidate();
        }
        if format == WhiteoutFormat::Overlay {
            sys(mknodat(
                dir.as_fd(),
                name.as_c_str(),
                SFlag::S_IFCHR,
                Mode::empty(),
                0,
            ))
            .at(&path)?;
            self.owner(Target::At(dir.as_fd(), &name), header, &hidden_path)?;
        }
        Ok(())
    }

    /// The mode an entry gets on disk: its own, or the force mask.
    fn mode_of(&self, header: &Header) -> u32 {
        self.force_mask
            .unwrap_or_else(|| permission_bits(header.mode))
    }

    /// Under `force_mask`, record what the tar says about the entry.
    fn record_override(&self, target: Target<'_>, header: &Header, relative: &[u8]) -> Result<()> {
        if self.force_mask.is_none() {
            return Ok(());
        }
        target
            .set_xattr(crate::overrides::NAME, override_value(header).as_bytes())
            .at(&self.path_of(relative))
    }

    fn owner(&self, target: Target<'_>, header: &Header, relative: &[u8]) -> Result<()> {
        if self.force_mask.is_some() {
            return Ok(()); // Go turns chown off under force_mask: the xattr has the owner
        }
        match target.chown(owner_id(header.uid), owner_id(header.gid)) {
            Ok(()) => Ok(()),
            // Without root, files keep the caller as owner.
            Err(_) if !self.privileged || self.ignore_chown_errors => Ok(()),
            Err(error) => Err(error).at(&self.path_of(relative)),
        }
    }

    fn xattrs(&self, target: Target<'_>, header: &Header, relative: &[u8]) -> Result<()> {
        for (name, value) in &header.xattrs {
            if name.as_slice() == b"security.selinux" {
                continue;
            }
            let name_c = c_string(name).at(&self.path_of(relative))?;
            if let Err(error) = target.set_xattr(&name_c, value) {
                xattr_failure(
                    error,
                    self.privileged,
                    header,
                    name,
                    &self.path_of(relative),
                )?;
            }
        }
        Ok(())
    }

    /// Owner, mode, xattrs and times of an entry other than a regular file or a directory.
    fn metadata_at(&self, target: Target<'_>, header: &Header, relative: &[u8]) -> Result<()> {
        let path = || self.path_of(relative);
        self.owner(target, header, relative)?;
        target.chmod(self.mode_of(header)).at(&path())?;
        self.xattrs(target, header, relative)?;
        target.set_times(&times(header)).at(&path())
    }

    fn create(
        &mut self,
        relative: &[u8],
        parent: &[u8],
        base: &[u8],
        header: &Header,
        content: &mut Content<'_>,
    ) -> Result<()> {
        let path = self.path_of(relative);
        let name = c_string(base).at(&path)?;
        let mut typeflag = header.typeflag;
        if self.force_mask.is_some() && matches!(typeflag, b'3' | b'4' | b'6') {
            typeflag = b'0'; // stored as an empty regular file; the xattr says what it is
        }
        if matches!(typeflag, b'3' | b'4') && (!self.privileged || self.in_user_namespace) {
            return Ok(()); // device nodes need root of the initial user namespace
        }
        if !matches!(
            typeflag,
            b'0' | b'7' | b'1' | b'2' | b'3' | b'4' | b'5' | b'6'
        ) {
            return Err(Error::InvalidLayerData(format!(
                "invalid tar archive at offset {}: unsupported entry type {} for {}",
                header.offset,
                shown(&[typeflag]),
                shown(&header.name)
            )));
        }
        // The hard link target is resolved before the parent takes the cache.
        let link_target = if typeflag == b'1' {
            Some(self.link_target(header)?)
        } else {
            None
        };
        let dir = self
            .parent(parent, true)
            .map_err(|error| walk_error(error, parent, &path))?;
        let dir = dir.as_fd();
        let mut replaced = false;
        loop {
            if matches!(typeflag, b'0' | b'7') {
                return self.write_file(dir, &name, header, content, &path);
            }
            let attempt = Self::make_node(dir, &name, header, link_target.as_ref());
            match attempt {
                Ok(()) => break,
                Err(error) if error.raw_os_error() == Some(libc::EEXIST) && !replaced => {
                    let existing = file_type_at(dir, &name).at(&path)?;
                    if typeflag == b'5' && existing == Some(libc::S_IFDIR) {
                        break; // directories merge
                    }
                    remove_all_at(dir, &name).at(&path)?;
                    self.invalidate();
                    replaced = true;
                }
                Err(error) if typeflag == b'1' && error.raw_os_error() == Some(libc::ENOENT) => {
                    return Err(Error::InvalidLayerData(format!(
                        "hard link {} points to {}, which is not in the layer",
                        shown(&header.name),
                        shown(&header.linkname)
                    )));
                }
                Err(error) => return Err(error).at(&path),
            }
        }
        let target = Target::At(dir, &name);
        match typeflag {
            b'5' => {
                self.owner(target, header, relative)?;
                self.xattrs(target, header, relative)?;
                self.record_override(target, header, relative)?;
                self.dirs.push(DeferredDir {
                    path: relative.to_vec(),
                    mode: self.mode_of(header),
                    atime: header
                        .atime
                        .map_or(header.mtime, |atime| atime.max(header.mtime)),
                    mtime: header.mtime,
                });
                Ok(())
            }
            b'2' => {
                self.size += header.linkname.len() as u64;
                self.owner(target, header, relative)?;
                target.set_times(&times(header)).at(&path)
            }
            b'1' => {
                if file_type_at(dir, &name).at(&path)? == Some(libc::S_IFLNK) {
                    return Ok(());
                }
                self.metadata_at(target, header, relative)
            }
            _ => self.metadata_at(target, header, relative),
        }
    }

    /// Make a directory, symlink, hard link, device or fifo at `name` in `dir`.
    fn make_node(
        dir: BorrowedFd<'_>,
        name: &CStr,
        header: &Header,
        link_target: Option<&(Arc<OwnedFd>, CString)>,
    ) -> io::Result<()> {
        match header.typeflag {
            b'5' => Self::make_directory(dir, name),
            b'2' => Self::make_symlink(dir, name, header),
            b'1' => match link_target {
                // No AT_SYMLINK_FOLLOW: a symlink as the target is linked, never followed.
                Some((target_dir, target_name)) => sys(linkat(
                    target_dir,
                    target_name.as_c_str(),
                    dir,
                    name,
                    AtFlags::empty(),
                )),
                None => Ok(()),
            },
            _ => {
                let kind = match header.typeflag {
                    b'3' => SFlag::S_IFCHR,
                    b'4' => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let device = makedev(
                    u64::from(owner_id(header.devmajor)),
                    u64::from(owner_id(header.devminor)),
                );
                let mode = Mode::from_bits_truncate(permission_bits(header.mode) & 0o777);
                sys(mknodat(dir, name, kind, mode, device))
            }
        }
    }

    fn link_target(&mut self, header: &Header) -> Result<(Arc<OwnedFd>, CString)> {
        let target = confine(&header.linkname, "hard link target")?;
        let missing = || {
            Error::InvalidLayerData(format!(
                "hard link {} points to {}, which is not in the layer",
                shown(&header.name),
                shown(&header.linkname)
            ))
        };
        if target == b"." {
            return Err(missing());
        }
        let (parent, base) = split_parent(&target);
        let path = self.path_of(&target);
        let name = c_string(base).at(&path)?;
        let dir = match self.parent(parent, false) {
            Ok(dir) => dir,
            Err(error) if matches!(error.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                return Err(missing())
            }
            Err(error) => return Err(error).at(&path),
        };
        // link(2) refuses directories with EPERM; say what is wrong with the archive instead.
        if file_type_at(dir.as_fd(), &name).at(&path)? == Some(libc::S_IFDIR) {
            return Err(Error::InvalidLayerData(format!(
                "hard link {} points to {}, which is a directory",
                shown(&header.name),
                shown(&header.linkname)
            )));
        }
        Ok((dir, name))
    }

    fn make_directory(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
        // Owner-writable while it is filled; its mode comes with the deferred metadata.
        sys(mkdirat(dir, name, Mode::S_IRWXU))
    }

    fn make_symlink(dir: BorrowedFd<'_>, name: &CStr, header: &Header) -> io::Result<()> {
        let target = c_string(&header.linkname)?;
        sys(symlinkat(target.as_c_str(), dir, name))
    }

    fn write_file(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        header: &Header,
        content: &mut Content<'_>,
        path: &Path,
    ) -> Result<()> {
        let mode = self.mode_of(header);
        // Created with its final mode when the umask keeps it whole: one fchmod less.
        let exact = mode & !0o777 == 0 && mode & self.umask == 0;
        let create_mode = if exact { mode } else { 0o600 };
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let fd = match open_at(dir, name, flags, create_mode) {
            Ok(fd) => fd,
            Err(error) if error.raw_os_error() == Some(libc::EEXIST) => {
                remove_all_at(dir, name).at(path)?;
                self.invalidate();
                open_at(dir, name, flags, create_mode).at(path)?
            }
            Err(error) => return Err(error).at(path),
        };
        let mut file = File::from(fd);
        let mut written = 0u64;
        content(&mut |chunk| {
            written += chunk.len() as u64;
            file.write_all(chunk).at(path)
        })?;
        self.size += written;
        let fd = file.as_fd();
        let owner = (
            Some(Uid::from_raw(owner_id(header.uid))),
            Some(Gid::from_raw(owner_id(header.gid))),
        );
        if self.force_mask.is_none() {
            if let Err(error) = sys(fchown(fd, owner.0, owner.1)) {
                if self.privileged && !self.ignore_chown_errors {
                    return Err(error).at(path);
                }
            }
        }
        if !exact {
            sys(fchmod(fd, Mode::from_bits_truncate(mode))).at(path)?;
        }
        for (key, value) in &header.xattrs {
            if key.as_slice() == b"security.selinux" {
                continue;
            }
            let key_c = c_string(key).at(path)?;
            if let Err(error) = crate::sys::fset_xattr(fd, &key_c, value) {
                xattr_failure(error, self.privileged, header, key, path)?;
            }
        }
        if self.force_mask.is_some() {
            crate::sys::fset_xattr(
                fd,
                crate::overrides::NAME,
                override_value(header).as_bytes(),
            )
            .at(path)?;
        }
        let [atime, mtime] = times(header);
        sys(futimens(fd, &atime, &mtime)).at(path)
    }

    /// Apply the directories' modes and times, in archive order; the bytes the layer added.
    pub fn finish(mut self) -> Result<u64> {
        self.invalidate();
        if self.force_mask.is_some() {
            // Go records the layer root too: the root entry's values, else 0:0:0755; before
            // the root's mode is given back, as a user xattr needs write permission.
            let value = self
                .root_override
                .take()
                .unwrap_or_else(|| crate::overrides::format(0, 0, libc::S_IFDIR | 0o755, 0, 0));
            let root = Arc::clone(self.root.fd());
            Target::Dir(root.as_fd())
                .set_xattr(crate::overrides::NAME, value.as_bytes())
                .at(&self.path_of(b"."))?;
        }
        // First: a root entry's own mode (vfs) comes after it.
        self.give_back_root_mode()?;
        let dirs = std::mem::take(&mut self.dirs);
        for deferred in &dirs {
            let path = self.path_of(&deferred.path);
            let times = [timespec(deferred.atime), timespec(deferred.mtime)];
            if deferred.path == b"." {
                let root = Arc::clone(self.root.fd());
                Target::Dir(root.as_fd()).chmod(deferred.mode).at(&path)?;
                Target::Dir(root.as_fd()).set_times(&times).at(&path)?;
                continue;
            }
            let (parent, base) = split_parent(&deferred.path);
            let name = c_string(base).at(&path)?;
            let dir = match self.parent(parent, false) {
                Ok(dir) => dir,
                // Removed later in the archive (a whiteout): nothing to finish.
                Err(error)
                    if matches!(error.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) =>
                {
                    continue
                }
                Err(error) => return Err(error).at(&path),
            };
            if file_type_at(dir.as_fd(), &name).at(&path)? != Some(libc::S_IFDIR) {
                continue;
            }
            let target = Target::At(dir.as_fd(), &name);
            target.chmod(deferred.mode).at(&path)?;
            target.set_times(&times).at(&path)?;
        }
        Ok(self.size)
    }
}

/// Whether a base name marks a whiteout, whose owner is not part of the layer's id sets.
#[must_use]
pub fn is_whiteout_name(name: &[u8]) -> bool {
    crate::paths::base(name).starts_with(WHITEOUT_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt};

    fn entry(name: &str, typeflag: u8) -> Header {
        Header {
            typeflag,
            name: name.as_bytes().to_vec(),
            mode: 0o644,
            mtime: Time::from_seconds(1_600_000_000),
            ..Header::default()
        }
    }

    fn link(name: &str, typeflag: u8, target: &str) -> Header {
        Header {
            linkname: target.as_bytes().to_vec(),
            ..entry(name, typeflag)
        }
    }

    fn put(extractor: &mut Extractor, header: &Header, data: &[u8]) -> Result<()> {
        let mut header = header.clone();
        if matches!(header.typeflag, b'0' | b'7') {
            header.size = i64::try_from(data.len()).unwrap();
        }
        extractor.extract(&header, &mut |sink| sink(data))
    }

    /// A scratch directory holding `layer/` (the destination) and `outside/`.
    fn scratch() -> (tempfile::TempDir, PathBuf) {
        let scratch = tempfile::tempdir().unwrap();
        fs::create_dir(scratch.path().join("layer")).unwrap();
        fs::create_dir(scratch.path().join("outside")).unwrap();
        fs::write(scratch.path().join("outside/keep"), b"keep").unwrap();
        let layer = scratch.path().join("layer");
        (scratch, layer)
    }

    fn outside_untouched(scratch: &tempfile::TempDir) {
        let names: Vec<_> = fs::read_dir(scratch.path().join("outside"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["keep"]);
        assert_eq!(
            fs::read(scratch.path().join("outside/keep")).unwrap(),
            b"keep"
        );
    }

    #[test]
    fn symlinks_on_the_way_resolve_inside_the_layer() {
        let (scratch, layer) = scratch();
        let mut extractor =
            Extractor::new(&layer, WhiteoutFormat::Overlay, Ownership::default()).unwrap();
        put(&mut extractor, &link("root", b'2', "/"), b"").unwrap();
        put(&mut extractor, &link("up", b'2', "../../../outside"), b"").unwrap();
        put(&mut extractor, &link("abs", b'2', "/../outside"), b"").unwrap();
        put(&mut extractor, &entry("root/a", b'0'), b"1").unwrap();
        put(&mut extractor, &entry("up/b", b'0'), b"2").unwrap();
        put(&mut extractor, &entry("abs/c", b'0'), b"3").unwrap();
        put(&mut extractor, &entry("abs/keep", b'0'), b"4").unwrap();
        extractor.finish().unwrap();
        outside_untouched(&scratch);
        assert_eq!(fs::read(layer.join("a")).unwrap(), b"1");
        assert_eq!(fs::read(layer.join("outside/b")).unwrap(), b"2");
        assert_eq!(fs::read(layer.join("outside/c")).unwrap(), b"3");
        assert_eq!(fs::read(layer.join("outside/keep")).unwrap(), b"4");
        // The symlinks themselves are kept as written.
        assert_eq!(
            fs::read_link(layer.join("up")).unwrap(),
            Path::new("../../../outside")
        );
    }

    #[test]
    fn out_of_range_numbers_and_links_to_directories_are_bad_data() {
        let (_scratch, layer) = scratch();
        let mut extractor =
            Extractor::new(&layer, WhiteoutFormat::Vfs, Ownership::default()).unwrap();
        let bad = |error: Error, fragment: &str| match error {
            Error::InvalidLayerData(message) => assert!(message.contains(fragment), "{message}"),
            other => panic!("not bad data: {other}"),
        };
        for header in [
            Header {
                uid: 1 << 40,
                ..entry("a", b'0')
            },
            Header {
                gid: -1,
                ..entry("b", b'0')
            },
            Header {
                devmajor: 1 << 32,
                ..entry("c", b'6')
            },
            Header {
                mtime: Time::from_seconds(i64::MAX / 1_000_000_000 + 1),
                ..entry("d", b'0')
            },
        ] {
            bad(
                put(&mut extractor, &header, b"").unwrap_err(),
                "out-of-range",
            );
        }
        put(&mut extractor, &entry("dir", b'5'), b"").unwrap();
        let error = put(&mut extractor, &link("hl", b'1', "dir"), b"").unwrap_err();
        bad(error, "which is a directory");
        let error = put(&mut extractor, &entry("v", b'V'), b"").unwrap_err();
        bad(error, "unsupported entry type 'V'");
    }

    #[test]
    fn an_existing_symlink_is_replaced_not_followed() {
        let (scratch, layer) = scratch();
        symlink(scratch.path().join("outside/keep"), layer.join("f")).unwrap();
        let mut extractor =
            Extractor::new(&layer, WhiteoutFormat::Vfs, Ownership::default()).unwrap();
        put(&mut extractor, &entry("f", b'0'), b"new").unwrap();
        extractor.finish().unwrap();
        outside_untouched(&scratch);
        assert_eq!(fs::read(layer.join("f")).unwrap(), b"new");
    }

    #[test]
    fn symlink_loops_fail_and_hard_links_stay_inside() {
        let (scratch, layer) = scratch();
        let mut extractor =
            Extractor::new(&layer, WhiteoutFormat::Overlay, Ownership::default()).unwrap();
        put(&mut extractor, &link("loop", b'2', "loop"), b"").unwrap();
        assert!(put(&mut extractor, &entry("loop/x", b'0'), b"").is_err());
        let escape = put(&mut extractor, &link("h", b'1', "../outside/keep"), b"");
        assert!(matches!(escape, Err(Error::InvalidLayerData(_))));
        let missing = put(&mut extractor, &link("h", b'1', "nothing"), b"");
        assert!(matches!(missing, Err(Error::InvalidLayerData(_))));
        put(&mut extractor, &entry("t", b'0'), b"data").unwrap();
        put(&mut extractor, &link("h", b'1', "/t"), b"").unwrap();
        extractor.finish().unwrap();
        outside_untouched(&scratch);
        assert_eq!(
            fs::metadata(layer.join("h")).unwrap().ino(),
            fs::metadata(layer.join("t")).unwrap().ino()
        );
    }

    #[test]
    fn directories_get_mode_and_times_at_the_end() {
        let (_scratch, layer) = scratch();
        let mut extractor =
            Extractor::new(&layer, WhiteoutFormat::Overlay, Ownership::default()).unwrap();
        let mut dir = entry("d", b'5');
        dir.mode = 0o555;
        put(&mut extractor, &dir, b"").unwrap();
        put(&mut extractor, &entry("d/inner/file", b'0'), b"x").unwrap();
        assert_eq!(extractor.finish().unwrap(), 1);
        let metadata = fs::metadata(layer.join("d")).unwrap();
        assert_eq!(metadata.mode() & 0o7777, 0o555);
        assert_eq!(metadata.mtime(), 1_600_000_000);
        assert_eq!(
            fs::metadata(layer.join("d/inner")).unwrap().mode() & 0o777,
            0o755 & !0o022
        );
    }

    #[test]
    fn vfs_whiteouts_remove_and_opaque_keeps_this_layers_entries() {
        let (scratch, layer) = scratch();
        fs::create_dir_all(layer.join("d/sub")).unwrap();
        fs::write(layer.join("d/sub/old"), b"").unwrap();
        fs::write(layer.join("d/old"), b"").unwrap();
        fs::write(layer.join("gone"), b"").unwrap();
        symlink(scratch.path().join("outside"), layer.join("d/escape")).unwrap();
        let mut extractor =
            Extractor::new(&layer, WhiteoutFormat::Vfs, Ownership::default()).unwrap();
        put(&mut extractor, &entry(".wh.gone", b'0'), b"").unwrap();
        put(&mut extractor, &entry("d/sub", b'5'), b"").unwrap();
        put(&mut extractor, &entry("d/sub/new", b'0'), b"n").unwrap();
        // Its parent is not an entry of the layer, so the opaque marker takes it (as in Go).
        put(&mut extractor, &entry("d/implicit/new", b'0'), b"n").unwrap();
        put(&mut extractor, &entry("d/.wh..wh..opq", b'0'), b"").unwrap();
        put(&mut extractor, &entry("d/.wh..wh.plnk/x", b'0'), b"").unwrap();
        extractor.finish().unwrap();
        outside_untouched(&scratch);
        assert!(!layer.join("gone").exists());
        assert!(!layer.join("d/old").exists());
        assert!(!layer.join("d/escape").exists());
        assert!(!layer.join("d/sub/old").exists());
        assert!(layer.join("d/sub/new").exists());
        assert!(!layer.join("d/implicit").exists());
        assert!(!layer.join("d/.wh..wh.plnk").exists());
    }

    #[test]
    fn overlay_whiteouts_become_devices_and_opaque_xattrs() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return; // character devices need root
        }
        let (_scratch, layer) = scratch();
        fs::create_dir(layer.join("d")).unwrap();
        fs::write(layer.join("d/f"), b"").unwrap();
        let mut extractor =
            Extractor::new(&layer, WhiteoutFormat::Overlay, Ownership::default()).unwrap();
        let mut whiteout = entry("d/.wh.f", b'0');
        whiteout.uid = 7;
        put(&mut extractor, &whiteout, b"").unwrap();
        put(&mut extractor, &entry("e/.wh..wh..opq", b'0'), b"").unwrap();
        extractor.finish().unwrap();
        let device = fs::symlink_metadata(layer.join("d/f")).unwrap();
        assert!(device.file_type().is_char_device());
        assert_eq!((device.rdev(), device.uid()), (0, 7));
        let path = c_string(layer.join("e").as_os_str().as_bytes()).unwrap();
        let mut value = [0u8; 4];
        // SAFETY: valid path, name and buffer.
        let length = unsafe {
            libc::getxattr(
                path.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        assert_eq!(length, 1);
        assert_eq!(value[0], b'y');
    }
}
