//! The `user.containers.override_stat` xattr: a file's owner, mode and device numbers as a
//! tar gave them, kept beside a file stored with containers/storage's `force_mask`.
//!
//! Text, `UID:GID:MODE:TYPE` (decimal ids, permission bits in octal with setuid, setgid and
//! sticky, a type `file`, `dir`, `symlink`, `pipe`, `socket`, `block-MAJOR-MINOR` or
//! `char-MAJOR-MINOR`), as newer containers/storage writes it; 1.43 wrote `UID:GID:0MODE`
//! without a type, which is read too (pkg/idtools/idtools.go; python/layerstore/drivers/
//! override.py is the same codec).

/// The xattr's name.
pub const NAME: &std::ffi::CStr = c"user.containers.override_stat";

/// What the xattr records; `mode` is a full `st_mode` (file type and permission bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverrideStat {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub major: u32,
    pub minor: u32,
    /// False for the 1.43 form without a type: the type is then the file's own.
    pub typed: bool,
}

const PERMISSIONS: u32 = 0o7777;

/// The value newer containers/storage writes for `mode` (an `st_mode`).
#[must_use]
pub fn format(uid: u32, gid: u32, mode: u32, major: u32, minor: u32) -> String {
    let kind = match mode & libc::S_IFMT {
        libc::S_IFDIR => "dir".to_owned(),
        libc::S_IFLNK => "symlink".to_owned(),
        libc::S_IFIFO => "pipe".to_owned(),
        libc::S_IFSOCK => "socket".to_owned(),
        libc::S_IFBLK => format!("block-{major}-{minor}"),
        libc::S_IFCHR => format!("char-{major}-{minor}"),
        _ => "file".to_owned(),
    };
    format!("{uid}:{gid}:{:04o}:{kind}", mode & PERMISSIONS)
}

fn unsigned(text: &str, radix: u32) -> Option<u32> {
    // Go's strconv.ParseUint: digits only.
    if text.is_empty() || !text.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(text, radix).ok()
}

fn device_number(text: &str) -> Option<u32> {
    // Go's strconv.Atoi with a sign; negative numbers are refused here.
    let body = text.strip_prefix('+').unwrap_or(text);
    unsigned(body, 10)
}

/// Decode a value as newer containers/storage does; None for a value Go refuses.
#[must_use]
pub fn parse(value: &[u8]) -> Option<OverrideStat> {
    let text = std::str::from_utf8(value).ok()?;
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() < 3 {
        return None;
    }
    let uid = unsigned(parts[0], 10)?;
    let gid = unsigned(parts[1], 10)?;
    let permissions = unsigned(parts[2], 8)? & PERMISSIONS;
    let Some(kind) = parts.get(3) else {
        return Some(OverrideStat {
            uid,
            gid,
            mode: libc::S_IFREG | permissions,
            major: 0,
            minor: 0,
            typed: false,
        });
    };
    let typed = |file_type: u32, major: u32, minor: u32| OverrideStat {
        uid,
        gid,
        mode: file_type | permissions,
        major,
        minor,
        typed: true,
    };
    for (prefix, file_type) in [("block", libc::S_IFBLK), ("char", libc::S_IFCHR)] {
        if kind.starts_with(prefix) {
            let fields: Vec<&str> = kind.split('-').collect();
            if fields.len() < 3 || fields[0] != prefix {
                return None;
            }
            return Some(typed(
                file_type,
                device_number(fields[1])?,
                device_number(fields[2])?,
            ));
        }
    }
    // Types match by prefix, as in Go.
    let named = [
        ("file", libc::S_IFREG),
        ("dir", libc::S_IFDIR),
        ("symlink", libc::S_IFLNK),
        ("pipe", libc::S_IFIFO),
        ("socket", libc::S_IFSOCK),
    ];
    named
        .iter()
        .find(|(prefix, _)| kind.starts_with(prefix))
        .map(|&(_, file_type)| typed(file_type, 0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_as_containers_storage() {
        assert_eq!(format(0, 0, libc::S_IFREG | 0o4755, 0, 0), "0:0:4755:file");
        assert_eq!(
            format(1, 2, libc::S_IFCHR | 0o666, 1, 3),
            "1:2:0666:char-1-3"
        );
        assert_eq!(format(0, 0, libc::S_IFDIR, 0, 0), "0:0:0000:dir");
        let device = parse(b"1:2:0660:block-8-1").unwrap();
        assert_eq!(
            (device.mode, device.major, device.minor),
            (libc::S_IFBLK | 0o660, 8, 1)
        );
        let old = parse(b"100:200:04755").unwrap();
        assert_eq!(
            (old.uid, old.gid, old.mode, old.typed),
            (100, 200, libc::S_IFREG | 0o4755, false)
        );
        assert_eq!(
            parse(b"1:2:0755:dir:more").unwrap().mode,
            libc::S_IFDIR | 0o755
        );
        for bad in [
            &b"1:2"[..],
            b"a:0:0644",
            b"0:0:0899",
            b"0:0:0644:door",
            b"0:0:0644:char-1",
        ] {
            assert_eq!(parse(bad), None);
        }
    }
}
