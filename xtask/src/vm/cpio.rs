//! A writer for the "newc" cpio format the kernel unpacks as an initramfs.
//!
//! Written here rather than shelling out to `cpio` so that the archive needs
//! no staging directory and can hold a device node (`/dev/console`) without
//! root.

/// Builds an archive in memory; every entry is owned by root.
pub struct Archive {
    bytes: Vec<u8>,
    next_ino: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl Archive {
    pub fn new() -> Self {
        Archive {
            bytes: Vec::new(),
            next_ino: 1,
        }
    }

    pub fn dir(&mut self, path: &str) {
        self.entry(path, S_IFDIR | 0o755, (0, 0), b"");
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.entry(path, S_IFREG | mode, (0, 0), data);
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, S_IFLNK | 0o777, (0, 0), target.as_bytes());
    }

    pub fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) {
        self.entry(path, S_IFCHR | mode, (major, minor), b"");
    }

    /// Appends the trailer and returns the archive.
    pub fn finish(mut self) -> Vec<u8> {
        self.next_ino = 0;
        self.entry("TRAILER!!!", 0, (0, 0), b"");
        self.bytes
    }

    fn entry(&mut self, path: &str, mode: u32, (rmajor, rminor): (u32, u32), data: &[u8]) {
        let name = path.trim_start_matches('/');
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: fixed, so rebuilds give identical archives
            data.len() as u32,
            0, // devmajor
            0, // devminor
            rmajor,
            rminor,
            name.len() as u32 + 1, // the name's NUL counts
            0,                     // check: only for the "crc" variant
        ];
        self.bytes.extend_from_slice(b"070701");
        for f in fields {
            self.bytes.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    /// Header+name and data each end on a 4-byte boundary.
    fn pad(&mut self) {
        self.bytes.resize(self.bytes.len().div_ceil(4) * 4, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(header: &[u8], i: usize) -> u32 {
        let at = 6 + i * 8;
        u32::from_str_radix(std::str::from_utf8(&header[at..at + 8]).unwrap(), 16).unwrap()
    }

    #[test]
    fn file_entry_layout() {
        let mut a = Archive::new();
        a.file("/init", 0o755, b"#!/bin/sh\n");
        let bytes = a.finish();
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(field(&bytes, 1), S_IFREG | 0o755);
        assert_eq!(field(&bytes, 6), 10, "filesize");
        assert_eq!(field(&bytes, 11), 5, "namesize counts the NUL");
        // 110-byte header + "init\0" = 115, padded to 116.
        assert_eq!(&bytes[110..116], b"init\0\0");
        assert_eq!(&bytes[116..126], b"#!/bin/sh\n");
        // Data padded to 128, then the trailer.
        assert_eq!(&bytes[126..128], b"\0\0");
        assert_eq!(&bytes[128..134], b"070701");
        assert_eq!(&bytes[128 + 110..128 + 121], b"TRAILER!!!\0");
        assert_eq!(bytes.len() % 4, 0);
    }

    #[test]
    fn device_and_symlink_entries() {
        let mut a = Archive::new();
        a.char_device("dev/console", 0o600, 5, 1);
        let at = a.bytes.len();
        a.symlink("bin/sh", "busybox");
        let bytes = a.finish();
        assert_eq!(field(&bytes, 1), S_IFCHR | 0o600);
        assert_eq!((field(&bytes, 9), field(&bytes, 10)), (5, 1));
        let link = &bytes[at..];
        assert_eq!(field(link, 1), S_IFLNK | 0o777);
        assert_eq!(field(link, 6), 7);
        assert_eq!(&link[110..117], b"bin/sh\0");
        assert_eq!(&link[120..127], b"busybox");
        assert_ne!(field(&bytes, 0), field(link, 0), "inodes are distinct");
    }

    /// The host's cpio tool agrees with the layout. `cargo xtask setup`
    /// installs cpio; without it the test skips, unless
    /// IPWARDEN_PRIVILEGED=1 (as `cargo xtask test` sets) forbids skipping.
    #[test]
    fn host_cpio_lists_the_archive() {
        use std::{io::Write, process::Command, process::Stdio};
        let spawned = Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if std::env::var_os("IPWARDEN_PRIVILEGED").is_some_and(|v| v == "1") => {
                panic!("cpio: {e}; run cargo xtask setup (IPWARDEN_PRIVILEGED=1 forbids skipping)")
            }
            Err(e) => {
                eprintln!("host_cpio_lists_the_archive: skipped, cpio: {e}");
                return;
            }
        };
        let mut a = Archive::new();
        a.dir("bin");
        a.file("bin/odd", 0o644, b"123");
        a.symlink("bin/sh", "busybox");
        let bytes = a.finish();
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "bin\nbin/odd\nbin/sh\n"
        );
    }
}
