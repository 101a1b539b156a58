//! `cargo xtask image`: the agent's OCI image, built on this machine from
//! Debian packages only (no registry pulls).
//!
//! 1. the release binary (`cargo build --release -p ipwarden`, stripped of
//!    its symbol table) and the eBPF object (`cargo xtask build-ebpf`);
//! 2. a root filesystem from bookworm: `mmdebstrap --variant=extract` of
//!    iptables (the agent runs iptables-save/-restore and their ip6tables
//!    twins), ipset and iproute2 (for a person debugging a node), with their
//!    libraries and nothing else: no shell, no dpkg, no apt, no docs, no
//!    locales. IPVS, ipsets and tc are netlink, so ipvsadm and bpftool are
//!    left out (`ipwarden kernel ipvs`, `ipwarden kernel ipset` and
//!    `ipwarden bpf dump` show the same). The mirror is the one apt on this
//!    machine uses (/etc/apt/sources.list*), so only the package registry
//!    is needed. Extracted packages run no maintainer scripts, so what
//!    those would have done for us is done here: the iptables alternatives
//!    (for a person) point at the nft backend (Debian 12's default) and the
//!    linker cache is built. The agent itself runs `iptables-nft-*` or
//!    `iptables-legacy-*` by name, whichever backend the node's rules are
//!    in (`--iptables-backend`), so the image fixes no backend for it;
//! 3. two layers (Debian, then the agent) committed with umoci into an OCI
//!    layout, tarred as an OCI archive named `localhost/ipwarden:VERSION`,
//!    which `podman load -i` and `ctr -n k8s.io image import` accept.
//!
//! `--cached` (what `cargo xtask test` uses) reuses an archive whose
//! binary, eBPF object and recipe have not changed.

use std::{
    fs,
    io::Read,
    os::unix::fs::{symlink, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::{
    build_ebpf,
    process::{self, require_root, target_dir, workspace_root},
};

/// The image's name; its tag is the workspace version.
pub const NAME: &str = "localhost/ipwarden";
/// Where the agent reads its eBPF object by default (bpf::DEFAULT_OBJECT).
pub const OBJECT_IN_IMAGE: &str = "usr/lib/ipwarden/ipwarden.bpf.o";
const BINARY_IN_IMAGE: &str = "usr/bin/ipwarden";
const SUITE: &str = "bookworm";
/// What mmdebstrap extracts, with their dependencies.
const PACKAGES: &[&str] = &["libc6", "iptables", "ipset", "iproute2"];
/// Removed from the root filesystem: documentation (but the copyright
/// files), locales, man pages, headers, package-manager state, iconv
/// modules, debconf (perl, which it needs, is not there), files of the
/// build host.
const TRIM: &[&str] = &[
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/bash-completion",
    "usr/share/pixmaps",
    "usr/share/perl5",
    "usr/share/debconf",
    "usr/share/bug",
    "usr/include",
    "usr/lib/x86_64-linux-gnu/gconv",
    "etc/apt",
    "etc/dpkg",
    "etc/debconf.conf",
    "etc/resolv.conf",
    "etc/hostname",
    "etc/fstab",
    "var/lib/apt",
    "var/lib/dpkg",
    "var/cache",
    "var/log",
];
/// The iptables commands a person runs, as the package's maintainer script
/// would have set its alternatives: the nft backend.
const IPTABLES_LINKS: &[(&str, &str)] = &[
    ("iptables", "iptables-nft"),
    ("iptables-save", "iptables-nft-save"),
    ("iptables-restore", "iptables-nft-restore"),
    ("ip6tables", "ip6tables-nft"),
    ("ip6tables-save", "ip6tables-nft-save"),
    ("ip6tables-restore", "ip6tables-nft-restore"),
];
/// Bumped when the recipe changes, so `--cached` rebuilds.
const RECIPE: &str = "ipwarden image recipe 2";

#[derive(clap::Args, Default)]
pub struct Options {
    /// The OCI archive to write (default: target/image/ipwarden-VERSION.oci.tar).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Reuse the archive if the binary, the eBPF object and the recipe are unchanged.
    #[arg(long)]
    pub cached: bool,
    /// Also leave the root filesystem (both layers) in this directory, e.g.
    /// to look inside or to `chroot` into it.
    #[arg(long)]
    pub rootfs: Option<PathBuf>,
}

/// What was built.
pub struct Image {
    pub archive: PathBuf,
    pub reference: String,
}

pub fn reference() -> String {
    format!("{NAME}:{}", env!("CARGO_PKG_VERSION"))
}

pub fn default_archive() -> PathBuf {
    target_dir()
        .join("image")
        .join(format!("ipwarden-{}.oci.tar", env!("CARGO_PKG_VERSION")))
}

pub fn run(opts: &Options) -> Result<Image> {
    require_root("image")?;
    for tool in ["mmdebstrap", "umoci", "tar", "ldconfig", "strip"] {
        if process::which(tool).is_none() && !Path::new("/sbin").join(tool).is_file() {
            bail!("{tool} is not installed: run `cargo xtask setup`");
        }
    }
    let object = build_ebpf::run(&build_ebpf::Options::default())?;
    let mut cargo = Command::new("cargo");
    cargo
        .args(["build", "--release", "-p", "ipwarden"])
        .current_dir(workspace_root());
    // What `cargo run` set for xtask itself would change the fingerprints
    // of crates whose build scripts read it (ring), and a plain `cargo
    // build --release` would build them again.
    for (var, _) in std::env::vars_os() {
        let var = var.to_string_lossy();
        if var.starts_with("CARGO_PKG_")
            || var.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&&*var)
        {
            cargo.env_remove(&*var);
        }
    }
    process::run(&mut cargo).context("building the release binary")?;
    let binary = target_dir().join("release/ipwarden");

    let archive = opts.output.clone().unwrap_or_else(default_archive);
    let mirrors = debian_mirrors()?;
    let key = cache_key(&binary, &object, &mirrors)?;
    let key_file = archive.with_extension("tar.key");
    let image = Image {
        archive: archive.clone(),
        reference: reference(),
    };
    if opts.cached
        && opts.rootfs.is_none()
        && archive.is_file()
        && fs::read_to_string(&key_file).is_ok_and(|k| k == key)
    {
        println!(
            "image: {} is up to date ({})",
            archive.display(),
            human(fs::metadata(&archive)?.len())
        );
        return Ok(image);
    }

    let parent = archive.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let work = parent.join(format!("work-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let result = build(&work, &binary, &object, &mirrors, &archive, opts);
    // The work tree holds a root filesystem: never leave it behind.
    let _ = fs::remove_dir_all(&work);
    let sizes = result?;
    fs::write(&key_file, &key)?;
    println!(
        "image: {} -> {} ({} archive, {} unpacked: Debian {}, agent {})",
        image.reference,
        archive.display(),
        human(fs::metadata(&archive)?.len()),
        human(sizes.debian + sizes.agent),
        human(sizes.debian),
        human(sizes.agent),
    );
    println!(
        "image: load it with `podman load -i {0}` or `ctr -n k8s.io image import {0}`",
        archive.display()
    );
    Ok(image)
}

struct Sizes {
    debian: u64,
    agent: u64,
}

fn build(
    work: &Path,
    binary: &Path,
    object: &Path,
    mirrors: &[String],
    archive: &Path,
    opts: &Options,
) -> Result<Sizes> {
    let debian = work.join("debian");
    let agent = work.join("agent");
    let layout = work.join("layout");

    println!(
        "image: mmdebstrap {SUITE} ({}) from {}",
        PACKAGES.join(" "),
        mirrors.join(" | ")
    );
    let manifest = "usr/share/ipwarden/packages.txt";
    process::run(
        Command::new("mmdebstrap")
            .args([
                "--variant=extract",
                "--mode=root",
                "--format=directory",
                "-q",
            ])
            .arg(format!("--include={}", PACKAGES.join(",")))
            // Extracted packages leave no dpkg status: name them in the
            // image (name and version), for whoever scans it.
            .arg(format!(
                "--extract-hook=mkdir -p \"$1/usr/share/ipwarden\" && \
                 dpkg-deb --show --showformat='${{Package}} ${{Version}}\\n' \
                 \"$1\"/var/cache/apt/archives/*.deb | sort > \"$1/{manifest}\""
            ))
            .arg(SUITE)
            .arg(&debian)
            .args(mirrors),
    )
    .context("mmdebstrap failed (is the Debian mirror of /etc/apt/sources.list* reachable?)")?;
    trim(&debian)?;
    for backend in ["nft", "legacy"] {
        for cmd in ["iptables", "ip6tables"] {
            for verb in ["save", "restore"] {
                let name = format!("{cmd}-{backend}-{verb}");
                if !debian.join("usr/sbin").join(&name).exists() {
                    bail!("the iptables package has no {name}, which the agent runs");
                }
            }
        }
    }
    for (link, target) in IPTABLES_LINKS {
        let at = debian.join("usr/sbin").join(link);
        if !debian.join("usr/sbin").join(target).exists() {
            bail!("the iptables package has no {target}");
        }
        let _ = fs::remove_file(&at);
        symlink(target, &at)?;
    }
    for dir in ["proc", "sys", "dev", "run", "tmp"] {
        fs::create_dir_all(debian.join(dir))?;
    }
    fs::set_permissions(debian.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    // The libraries' maintainer scripts would have run ldconfig.
    process::run(Command::new("ldconfig").arg("-r").arg(&debian))
        .context("ldconfig -r on the root filesystem")?;

    fs::create_dir_all(agent.join("usr/bin"))?;
    fs::create_dir_all(agent.join("usr/lib/ipwarden"))?;
    // Without its symbol table (a third of the file); panics still name
    // their file and line.
    process::run(
        Command::new("strip")
            .arg("--strip-all")
            .arg("-o")
            .arg(agent.join(BINARY_IN_IMAGE))
            .arg(binary),
    )?;
    fs::set_permissions(
        agent.join(BINARY_IN_IMAGE),
        fs::Permissions::from_mode(0o755),
    )?;
    fs::copy(object, agent.join(OBJECT_IN_IMAGE))?;
    fs::set_permissions(
        agent.join(OBJECT_IN_IMAGE),
        fs::Permissions::from_mode(0o644),
    )?;
    let sizes = Sizes {
        debian: du(&debian)?,
        agent: du(&agent)?,
    };

    let image = format!("{}:ipwarden", layout.display());
    let version = env!("CARGO_PKG_VERSION");
    process::run(
        Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout),
    )?;
    process::run(Command::new("umoci").args(["new", "--image", &image]))?;
    for (dir, what) in [
        (
            &debian,
            format!(
                "mmdebstrap --variant=extract {SUITE}: {}",
                PACKAGES.join(" ")
            ),
        ),
        (&agent, format!("ipwarden {version} and its eBPF object")),
    ] {
        process::run(
            Command::new("umoci")
                .args(["insert", "--image", &image, "--history.created_by", &what])
                .arg(dir)
                .arg("/"),
        )?;
    }
    let mut config = Command::new("umoci");
    config.args(["config", "--image", &image, "--no-history"]);
    config.args(["--config.entrypoint", "/usr/bin/ipwarden"]);
    config.args(["--config.cmd", "--help"]);
    config.args([
        "--config.env",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ]);
    config.args(["--config.workingdir", "/"]);
    config.args(["--architecture", "amd64", "--os", "linux"]);
    for (k, v) in [
        ("org.opencontainers.image.title", "ipwarden"),
        ("org.opencontainers.image.version", version),
        (
            "org.opencontainers.image.description",
            env!("CARGO_PKG_DESCRIPTION"),
        ),
        (
            "org.opencontainers.image.licenses",
            env!("CARGO_PKG_LICENSE"),
        ),
        (
            "org.opencontainers.image.base.name",
            "debian:bookworm (mmdebstrap)",
        ),
    ] {
        config.arg("--config.label").arg(format!("{k}={v}"));
    }
    process::run(&mut config)?;
    process::run(Command::new("umoci").args(["gc", "--layout"]).arg(&layout))?;
    name_in_index(&layout.join("index.json"), &reference())?;

    if let Some(dir) = &opts.rootfs {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir)?;
        for layer in [&debian, &agent] {
            process::run(
                Command::new("cp")
                    .arg("-a")
                    .arg(format!("{}/.", layer.display()))
                    .arg(dir),
            )?;
        }
        println!("image: root filesystem left in {}", dir.display());
    }

    let partial = archive.with_extension("tar.partial");
    process::run(
        Command::new("tar")
            .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner"])
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&partial)
            .arg("."),
    )?;
    fs::rename(&partial, archive)?;
    Ok(sizes)
}

/// umoci names the manifest by a bare tag; podman wants a full reference in
/// `org.opencontainers.image.ref.name` (else it names the image
/// `localhost/<tag>:latest`) and containerd reads `io.containerd.image.name`.
fn name_in_index(index: &Path, reference: &str) -> Result<()> {
    let mut json: serde_json::Value = serde_json::from_slice(&fs::read(index)?)?;
    let manifests = json["manifests"]
        .as_array_mut()
        .context("index.json has no manifests")?;
    if manifests.len() != 1 {
        bail!("index.json has {} manifests, expected 1", manifests.len());
    }
    manifests[0]["annotations"] = serde_json::json!({
        "org.opencontainers.image.ref.name": reference,
        "io.containerd.image.name": reference,
    });
    fs::write(index, serde_json::to_vec(&json)?)?;
    Ok(())
}

fn trim(root: &Path) -> Result<()> {
    for path in TRIM {
        let p = root.join(path);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&p)?,
            Ok(_) => fs::remove_file(&p)?,
            Err(_) => {}
        }
    }
    // debconf's commands are perl scripts, and there is no perl.
    for dir in ["usr/bin", "usr/sbin"] {
        for entry in fs::read_dir(root.join(dir))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("debconf") || name.starts_with("dpkg-") {
                fs::remove_file(entry.path())?;
            }
        }
    }
    // Keep each package's copyright file, drop the rest of its docs.
    let doc = root.join("usr/share/doc");
    if doc.is_dir() {
        for entry in fs::read_dir(&doc)? {
            let dir = entry?.path();
            if !dir.is_dir() || dir.is_symlink() {
                continue;
            }
            for file in fs::read_dir(&dir)? {
                let file = file?;
                if file.file_name() != "copyright" {
                    let p = file.path();
                    if p.is_dir() && !p.is_symlink() {
                        fs::remove_dir_all(&p)?;
                    } else {
                        fs::remove_file(&p)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The Debian entries of apt's sources on this machine, as one-line
/// `deb URI SUITE COMPONENTS` for mmdebstrap: the suites of bookworm
/// (release, updates, security) and their components. Other repositories
/// (a vendor's) and files apt does not read are skipped.
pub fn debian_mirrors() -> Result<Vec<String>> {
    let mut files = Vec::new();
    if Path::new("/etc/apt/sources.list").is_file() {
        files.push(PathBuf::from("/etc/apt/sources.list"));
    }
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| Some(e.ok()?.path())).collect();
        more.sort();
        files.extend(more);
    }
    let mut lines = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).unwrap_or_default();
        let name = file.to_string_lossy();
        if name.ends_with(".list") {
            lines.extend(parse_one_line(&text));
        } else if name.ends_with(".sources") {
            lines.extend(parse_deb822(&text));
        }
    }
    let mut found: Vec<String> = Vec::new();
    for l in lines {
        if !found.contains(&l) {
            found.push(l);
        }
    }
    if found.is_empty() {
        bail!("no Debian {SUITE} source in /etc/apt/sources.list or /etc/apt/sources.list.d/");
    }
    Ok(found)
}

fn is_our_suite(suite: &str) -> bool {
    suite == SUITE || suite.starts_with(&format!("{SUITE}-"))
}

/// `deb [options] URI SUITE COMPONENT...` lines of a .list file.
fn parse_one_line(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        // Drop `[signed-by=...]`: mmdebstrap picks Debian's keyring itself.
        let rest = match rest.trim_start().strip_prefix('[') {
            Some(r) => r.split_once(']').map(|(_, r)| r).unwrap_or(""),
            None => rest,
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        if words.len() >= 3 && is_our_suite(words[1]) && words[2..].contains(&"main") {
            out.push(format!(
                "deb {} {} {}",
                words[0],
                words[1],
                words[2..].join(" ")
            ));
        }
    }
    out
}

/// The stanzas of a deb822 .sources file.
fn parse_deb822(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut fields = std::collections::HashMap::new();
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                if !k.starts_with(' ') {
                    fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
        }
        if fields.get("enabled").is_some_and(|e| e == "no")
            || !fields
                .get("types")
                .is_some_and(|t| t.split_whitespace().any(|t| t == "deb"))
        {
            continue;
        }
        let (Some(uris), Some(suites), Some(components)) = (
            fields.get("uris"),
            fields.get("suites"),
            fields.get("components"),
        ) else {
            continue;
        };
        if !components.split_whitespace().any(|c| c == "main") {
            continue;
        }
        for uri in uris.split_whitespace() {
            for suite in suites.split_whitespace().filter(|s| is_our_suite(s)) {
                out.push(format!("deb {uri} {suite} {components}"));
            }
        }
    }
    out
}

/// What the archive is built from: when it is unchanged, so is the image
/// (up to newer Debian packages, which a plain `cargo xtask image` picks up).
fn cache_key(binary: &Path, object: &Path, mirrors: &[String]) -> Result<String> {
    let mut h = Sha256::new();
    h.update(RECIPE);
    h.update(PACKAGES.join(",") + "\n" + &mirrors.join("\n"));
    for file in [binary, object] {
        let mut f = fs::File::open(file).with_context(|| format!("reading {}", file.display()))?;
        let mut buf = vec![0; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(format!("{:x}\n", h.finalize()))
}

/// Bytes of the regular files under `dir` (apparent sizes).
fn du(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let m = entry.metadata()?;
        if m.is_dir() {
            total += du(&entry.path())?;
        } else if m.is_file() {
            total += m.len();
        }
    }
    Ok(total)
}

fn human(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_sources_in_both_formats() {
        let deb822 = "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
            URIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n\
            Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
            Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n\
            Components: main contrib\n\n\
            Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n\
            Components: main\n\n\
            Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\n";
        assert_eq!(
            parse_deb822(deb822),
            [
                "deb http://deb.debian.org/debian bookworm main",
                "deb http://deb.debian.org/debian bookworm-updates main",
                "deb http://deb.debian.org/debian-security bookworm-security main contrib",
            ]
        );
        let list = "# comment\ndeb [signed-by=/k.gpg] http://mirror.example/debian bookworm main non-free\n\
            deb-src http://mirror.example/debian bookworm main\n\
            deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n\
            deb http://mirror.example/debian-security bookworm-security main # trailing\n";
        assert_eq!(
            parse_one_line(list),
            [
                "deb http://mirror.example/debian bookworm main non-free",
                "deb http://mirror.example/debian-security bookworm-security main",
            ]
        );
    }

    #[test]
    fn this_machine_has_a_debian_mirror() {
        // Every machine the project builds on is Debian 12.
        if Path::new("/etc/debian_version").is_file() {
            let mirrors = debian_mirrors().unwrap();
            assert!(
                mirrors.iter().any(|m| m.contains(" bookworm ")),
                "{mirrors:?}"
            );
        }
    }
}
