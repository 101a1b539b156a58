//! Finding the guest kernel and unpacking the bootable vmlinux from it.
//!
//! Booting the uncompressed ELF through its PVH entry note skips the
//! bzImage's self-decompression, about 2.5 s under TCG.

use std::{
    cmp::Ordering,
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

/// A kernel image and the release name its modules live under.
#[derive(Debug)]
pub struct Kernel {
    pub image: PathBuf,
    pub release: String,
    modules_root: PathBuf,
}

impl Kernel {
    pub fn modules_dir(&self) -> PathBuf {
        self.modules_root.join(&self.release)
    }
}

/// `IPWARDEN_VM_KERNEL` (a vmlinuz path or a release such as
/// `6.1.0-56-amd64`), else the newest `/boot/vmlinuz-*-amd64` that has modules.
pub fn find() -> Result<Kernel> {
    let chosen = std::env::var_os("IPWARDEN_VM_KERNEL").map(PathBuf::from);
    find_in(
        Path::new("/boot"),
        Path::new("/lib/modules"),
        chosen.as_deref(),
    )
}

fn find_in(boot: &Path, modules_root: &Path, chosen: Option<&Path>) -> Result<Kernel> {
    let kernel = |image: PathBuf, release: String| Kernel {
        image,
        release,
        modules_root: modules_root.to_owned(),
    };
    if let Some(chosen) = chosen {
        let found = if chosen.is_file() {
            let name = chosen.file_name().unwrap_or_default().to_string_lossy();
            let Some(release) = name.strip_prefix("vmlinuz-") else {
                bail!(
                    "IPWARDEN_VM_KERNEL={}: expected a file named vmlinuz-RELEASE",
                    chosen.display()
                );
            };
            kernel(chosen.to_owned(), release.to_owned())
        } else {
            let release = chosen.to_string_lossy().into_owned();
            kernel(boot.join(format!("vmlinuz-{release}")), release)
        };
        if !found.image.is_file() || !found.modules_dir().is_dir() {
            bail!(
                "IPWARDEN_VM_KERNEL={}: need {} and {}",
                chosen.display(),
                found.image.display(),
                found.modules_dir().display()
            );
        }
        return Ok(found);
    }
    let mut releases: Vec<String> = fs::read_dir(boot)
        .with_context(|| format!("could not list {}", boot.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| Some(n.strip_prefix("vmlinuz-")?.to_owned()))
        .filter(|r| r.ends_with("-amd64") && modules_root.join(r).is_dir())
        .collect();
    releases.sort_by(|a, b| version_cmp(a, b));
    let Some(release) = releases.pop() else {
        bail!(
            "no kernel found ({}/vmlinuz-*-amd64 with {}/RELEASE): run cargo xtask setup",
            boot.display(),
            modules_root.display()
        );
    };
    Ok(kernel(boot.join(format!("vmlinuz-{release}")), release))
}

/// Compares release names the way people read them: runs of digits as numbers,
/// so 6.1.0-56 sorts after 6.1.0-9.
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    for (x, y) in chunks(a).into_iter().zip(chunks(b)) {
        let ord = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    a.len().cmp(&b.len())
}

const XZ_MAGIC: &[u8] = b"\xfd7zXZ\x00";

/// Where the xz stream starts inside a bzImage (extract-vmlinux's trick).
pub fn xz_offset(image: &[u8]) -> Option<usize> {
    image.windows(XZ_MAGIC.len()).position(|w| w == XZ_MAGIC)
}

/// Writes the ELF vmlinux inside `image` to `out`, checking it has a PVH entry.
pub fn extract_vmlinux(image: &Path, out: &Path) -> Result<()> {
    let bytes = fs::read(image).with_context(|| format!("could not read {}", image.display()))?;
    let offset =
        xz_offset(&bytes).with_context(|| format!("{} holds no xz payload", image.display()))?;
    let mut xz = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("could not start `xz` (package xz-utils)")?;
    let mut stdin = xz.stdin.take().context("xz has no stdin")?;
    let payload = bytes[offset..].to_vec();
    // Feed from a thread: xz's output fills its pipe long before its input is read.
    let feeder = std::thread::spawn(move || {
        // xz stops reading at the end of the stream; the rest is the bzImage's tail.
        let _ = stdin.write_all(&payload);
    });
    let output = xz.wait_with_output().context("xz failed")?;
    let _ = feeder.join();
    let elf = output.stdout;
    if !has_pvh_note(&elf) {
        bail!(
            "the vmlinux unpacked from {} has no PVH entry note",
            image.display()
        );
    }
    super::write_atomically(out, &elf)
}

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit entry point qemu's PVH loader needs.
const PVH_NOTE_TYPE: u32 = 18;
const PT_NOTE: u32 = 4;
const PT_INTERP: u32 = 3;

/// The program headers of a little-endian ELF64 file: (type, offset, size).
fn program_headers(elf: &[u8]) -> Option<Vec<(u32, usize, usize)>> {
    if elf.get(..5)? != b"\x7fELF\x02" {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    (0..phnum)
        .map(|i| {
            let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
            let offset = usize::try_from(u64_at(ph + 0x08)?).ok()?;
            let size = usize::try_from(u64_at(ph + 0x20)?).ok()?;
            Some((u32_at(ph)?, offset, size))
        })
        .collect()
}

/// True when some PT_NOTE segment carries Xen note 18 (the PVH entry).
pub fn has_pvh_note(elf: &[u8]) -> bool {
    let Some(headers) = program_headers(elf) else {
        return false;
    };
    let align4 = |n: usize| n.div_ceil(4) * 4;
    headers
        .iter()
        .filter(|(kind, _, _)| *kind == PT_NOTE)
        .any(|&(_, offset, size)| {
            let Some(notes) = elf.get(offset..offset.saturating_add(size)) else {
                return false;
            };
            let mut at = 0;
            while at + 12 <= notes.len() {
                let word = |o: usize| u32::from_le_bytes(notes[o..o + 4].try_into().unwrap());
                let (namesz, descsz, kind) = (word(at), word(at + 4), word(at + 8));
                let name_at = at + 12;
                let name = notes.get(name_at..name_at + namesz as usize);
                if kind == PVH_NOTE_TYPE && name == Some(b"Xen\0".as_slice()) {
                    return true;
                }
                at = name_at + align4(namesz as usize) + align4(descsz as usize);
            }
            false
        })
}

/// True for an ELF with no program interpreter: it runs alone in the initramfs.
pub fn is_static_elf(elf: &[u8]) -> bool {
    program_headers(elf).is_some_and(|hs| hs.iter().all(|(kind, _, _)| *kind != PT_INTERP))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with one program header of `kind` over `segment`.
    fn elf_with(kind: u32, segment: &[u8]) -> Vec<u8> {
        let mut elf = vec![0u8; 0x40 + 0x38];
        elf[..5].copy_from_slice(b"\x7fELF\x02");
        elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[0x40..0x44].copy_from_slice(&kind.to_le_bytes());
        let segment_at = elf.len() as u64;
        elf[0x48..0x50].copy_from_slice(&segment_at.to_le_bytes());
        elf[0x60..0x68].copy_from_slice(&(segment.len() as u64).to_le_bytes());
        elf.extend_from_slice(segment);
        elf
    }

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&(name.len() as u32).to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&kind.to_le_bytes());
        n.extend_from_slice(name);
        n.resize(n.len().div_ceil(4) * 4, 0);
        n.extend_from_slice(desc);
        n.resize(n.len().div_ceil(4) * 4, 0);
        n
    }

    #[test]
    fn finds_the_pvh_note_after_other_notes() {
        let mut notes = note(b"GNU\0", 3, b"buildid!");
        notes.extend(note(b"Xen\0", 6, b"linux\0"));
        assert!(!has_pvh_note(&elf_with(PT_NOTE, &notes)));
        notes.extend(note(b"Xen\0", 18, &[0, 0, 0, 1]));
        assert!(has_pvh_note(&elf_with(PT_NOTE, &notes)));
        assert!(!has_pvh_note(&elf_with(1, &notes)), "only PT_NOTE counts");
    }

    #[test]
    fn rejects_garbage_and_truncated_files() {
        assert!(!has_pvh_note(b""));
        assert!(!has_pvh_note(b"MZ not an elf"));
        let elf = elf_with(PT_NOTE, &note(b"Xen\0", 18, &[1, 2, 3, 4]));
        assert!(!has_pvh_note(&elf[..elf.len() - 8]));
    }

    #[test]
    fn static_means_no_interpreter() {
        assert!(is_static_elf(&elf_with(1, b"")));
        assert!(!is_static_elf(&elf_with(PT_INTERP, b"/lib64/ld.so\0")));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
    }

    #[test]
    fn xz_offset_is_the_first_magic() {
        let mut image = b"MZ\x00\x01bzImage header".to_vec();
        let at = image.len();
        image.extend_from_slice(b"\xfd7zXZ\x00payload\xfd7zXZ\x00");
        assert_eq!(xz_offset(&image), Some(at));
        assert_eq!(
            xz_offset(b"\xfd7zXZ"),
            None,
            "a truncated magic is no magic"
        );
        assert_eq!(xz_offset(b""), None);
    }

    /// A fake /boot and /lib/modules under the temp dir.
    fn tree(name: &str, images: &[&str], modules: &[&str]) -> (PathBuf, PathBuf) {
        let root =
            std::env::temp_dir().join(format!("ipwarden-kernel-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let (boot, lib) = (root.join("boot"), root.join("modules"));
        fs::create_dir_all(&boot).unwrap();
        for image in images {
            fs::write(boot.join(format!("vmlinuz-{image}")), "").unwrap();
        }
        for release in modules {
            fs::create_dir_all(lib.join(release)).unwrap();
        }
        (boot, lib)
    }

    #[test]
    fn picks_the_newest_amd64_kernel_that_has_modules() {
        let (boot, lib) = tree(
            "newest",
            &[
                "6.1.0-9-amd64",
                "6.1.0-56-amd64",
                "6.12.0-1-amd64",
                "6.13.0-1-cloud-arm64",
            ],
            &["6.1.0-9-amd64", "6.1.0-56-amd64", "6.13.0-1-cloud-arm64"],
        );
        let k = find_in(&boot, &lib, None).unwrap();
        assert_eq!(k.release, "6.1.0-56-amd64", "6.12 has no modules");
        assert_eq!(k.image, boot.join("vmlinuz-6.1.0-56-amd64"));
        assert_eq!(k.modules_dir(), lib.join("6.1.0-56-amd64"));

        let k = find_in(&boot, &lib, Some(Path::new("6.1.0-9-amd64"))).unwrap();
        assert_eq!(k.image, boot.join("vmlinuz-6.1.0-9-amd64"));
        let by_path = boot.join("vmlinuz-6.1.0-9-amd64");
        assert_eq!(
            find_in(&boot, &lib, Some(&by_path)).unwrap().release,
            "6.1.0-9-amd64"
        );
        let err = find_in(&boot, &lib, Some(Path::new("6.12.0-1-amd64"))).unwrap_err();
        assert!(format!("{err:#}").contains("need"), "{err:#}");
        let _ = fs::remove_dir_all(boot.parent().unwrap());
    }

    #[test]
    fn no_kernel_says_what_to_run() {
        let (boot, lib) = tree("none", &["6.1.0-56-amd64"], &[]);
        let err = find_in(&boot, &lib, None).unwrap_err();
        assert!(format!("{err:#}").starts_with("no kernel found"), "{err:#}");
        assert!(
            format!("{err:#}").ends_with("run cargo xtask setup"),
            "{err:#}"
        );
        let _ = fs::remove_dir_all(boot.parent().unwrap());
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(
            version_cmp("6.1.0-56-amd64", "6.1.0-9-amd64"),
            Ordering::Greater
        );
        assert_eq!(
            version_cmp("6.10.0-1-amd64", "6.9.0-1-amd64"),
            Ordering::Greater
        );
        assert_eq!(
            version_cmp("6.1.0-1-amd64", "6.1.0-1-amd64"),
            Ordering::Equal
        );
        let mut v = vec!["6.1.0-9-amd64", "6.12.1-1-amd64", "6.1.0-56-amd64"];
        v.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(v, ["6.1.0-9-amd64", "6.1.0-56-amd64", "6.12.1-1-amd64"]);
    }
}
