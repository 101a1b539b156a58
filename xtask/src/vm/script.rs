//! Stage 2: the per-run script the guest's PID 1 shell (the host's /bin/sh,
//! after switch_root) reads from the results share.
//!
//! Everything the caller chose (cwd, environment, argv) reaches the guest as
//! single-quoted shell words in this file, never through the kernel command
//! line, so any byte but NUL arrives intact.

use std::{ffi::OsString, os::unix::ffi::OsStrExt, path::Path};

/// `s` as one POSIX shell word: inside single quotes only `'` is special.
pub fn quote(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'\'');
    for &b in s {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// Set by `cargo run` for xtask itself; they would mislead a cargo in the guest.
fn set_by_cargo_run(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
        )
}

fn is_shell_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The guest's environment, from the caller's: PATH (with the sbin
/// directories), HOME=/root, the Rust diagnostics switches, rustup's choice of
/// toolchain, and every IPWARDEN_* and CARGO_* variable.
pub fn guest_env(
    caller: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(String, OsString)> {
    let mut path = OsString::new();
    let mut env = vec![("HOME".to_owned(), OsString::from("/root"))];
    for (name, value) in caller {
        let Some(name) = name.to_str() else { continue };
        if name == "PATH" {
            path = value;
            continue;
        }
        let wanted = matches!(
            name,
            "RUST_BACKTRACE" | "RUST_LOG" | "RUSTUP_HOME" | "RUSTUP_TOOLCHAIN"
        ) || name.starts_with("IPWARDEN_")
            || (name.starts_with("CARGO_") && !set_by_cargo_run(name));
        if wanted && is_shell_name(name) {
            env.push((name.to_owned(), value));
        }
    }
    for dir in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        if !std::env::split_paths(&path).any(|p| p == Path::new(dir)) {
            if !path.is_empty() {
                path.push(":");
            }
            path.push(dir);
        }
    }
    env.push(("PATH".to_owned(), path));
    env.sort();
    env
}

/// Before the caller's part. Stage 1 has waited for the output port; its
/// number depends on the order of the virtio devices, hence the glob.
const PRELUDE: &str = r#"# ipwarden vm-test, stage 2: one run, written by cargo xtask vm-test.
for out in /dev/vport*p*; do :; done
exec </dev/null >"$out" 2>&1
# Progress on the console log, which is printed if the run fails.
stamp() { read -r up _ </proc/uptime; echo "vm-run: $up s: $*" >/dev/console; }
"#;

/// After the command: hand its status to the host, then power off at once.
const EPILOGUE: &str = r#"
status=$?
stamp "the command exited with $status"
echo $status >/run/ipwarden-vm/status
poweroff
"#;

/// The stage 2 script: cd, export, run `command` with its output on the
/// virtio port, record its status, power off.
pub fn render(
    cwd: &Path,
    env: &[(String, OsString)],
    command: &[String],
    busybox: &Path,
) -> Vec<u8> {
    let mut s = PRELUDE.as_bytes().to_vec();
    let mut put = |parts: &[&[u8]]| parts.iter().for_each(|p| s.extend_from_slice(p));
    put(&[
        b"poweroff() { exec ",
        &quote(busybox.as_os_str().as_bytes()),
        b" poweroff -f; }\n",
    ]);
    put(&[b"cd -- ", &quote(cwd.as_os_str().as_bytes())]);
    put(&[b" || { echo 125 >/run/ipwarden-vm/status; poweroff; }\n"]);
    for (name, value) in env {
        put(&[
            b"export ",
            name.as_bytes(),
            b"=",
            &quote(value.as_bytes()),
            b"\n",
        ]);
    }
    put(&[b"stamp running the command\n"]);
    let words: Vec<Vec<u8>> = command.iter().map(|a| quote(a.as_bytes())).collect();
    put(&[&words.join(&b' ')]);
    put(&[EPILOGUE.as_bytes()]);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{ffi::OsStr, process::Command};

    /// Where stage 1 mounts the results share in the guest.
    const GUEST_RESULTS: &str = "/run/ipwarden-vm";

    fn os(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    #[test]
    fn stage_1_mounts_the_results_share_where_stage_2_writes() {
        let init = include_str!("init.sh");
        assert!(init.contains(&format!("results /root{GUEST_RESULTS}\n")));
        assert!(EPILOGUE.contains(&format!(">{GUEST_RESULTS}/status")));
    }

    #[test]
    fn quote_escapes_only_single_quotes() {
        assert_eq!(quote(b"plain"), b"'plain'");
        assert_eq!(quote(b""), b"''");
        assert_eq!(quote(b"it's"), b"'it'\\''s'");
        assert_eq!(quote(b"$HOME `x` \"y\" \\"), b"'$HOME `x` \"y\" \\'");
    }

    /// Round trip through a real shell: what printf sees is what we quoted.
    #[test]
    fn quoted_words_survive_sh() {
        let words = [
            "a b",
            "it's",
            "$(false)",
            "*",
            "",
            "tab\tnew\nline",
            "\\'\"",
        ];
        let mut script = b"printf '[%s]' ".to_vec();
        for w in words {
            script.extend(quote(w.as_bytes()));
            script.push(b' ');
        }
        let out = Command::new("sh")
            .arg("-c")
            .arg(OsStr::from_bytes(&script))
            .output()
            .unwrap();
        let expected: String = words.iter().map(|w| format!("[{w}]")).collect();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
    }

    #[test]
    fn env_keeps_what_tests_need_and_drops_the_rest() {
        let env = guest_env(os(&[
            ("PATH", "/root/.cargo/bin:/usr/bin"),
            ("HOME", "/home/me"),
            ("SSH_AUTH_SOCK", "/tmp/agent"),
            ("IPWARDEN_FOO", "it's 1"),
            ("CARGO_TARGET_DIR", "/work/targets/vm"),
            ("CARGO_PKG_NAME", "xtask"),
            ("CARGO_MANIFEST_DIR", "/work/main/xtask"),
            ("RUST_LOG", "debug"),
            ("IPWARDEN_BAD-NAME", "x"),
        ]));
        let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "CARGO_TARGET_DIR",
                "HOME",
                "IPWARDEN_FOO",
                "PATH",
                "RUST_LOG"
            ]
        );
        let get = |n: &str| env.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(get("HOME"), "/root");
        assert_eq!(
            get("PATH"),
            "/root/.cargo/bin:/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin:/bin"
        );
    }

    #[test]
    fn rendered_script_runs_the_exact_argv() {
        let dir = std::env::temp_dir().join(format!("ipwarden-script-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let env = guest_env(os(&[
            ("IPWARDEN_FOO", "a 'b' $c"),
            ("PATH", "/usr/bin:/bin"),
        ]));
        let command = [
            "sh",
            "-c",
            "printf '[%s]' \"$@\" \"$IPWARDEN_FOO\" \"$PWD\"",
            "-",
            "x y",
            "z",
        ];
        let command: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        let script = render(&dir, &env, &command, Path::new("/bin/true"));
        // Host-side stand-ins for the guest's port and results path.
        let script = String::from_utf8(script)
            .unwrap()
            .replace("/dev/vport*p*", &dir.join("out").display().to_string())
            .replace("/dev/console", &dir.join("console").display().to_string())
            .replace(GUEST_RESULTS, &dir.display().to_string());
        Command::new("sh").arg("-c").arg(&script).status().unwrap();
        let out = std::fs::read_to_string(dir.join("out")).unwrap();
        let status = std::fs::read_to_string(dir.join("status")).unwrap();
        let console = std::fs::read_to_string(dir.join("console")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(out, format!("[x y][z][a 'b' $c][{}]", dir.display()));
        assert_eq!(status, "0\n");
        assert!(
            console.ends_with("s: the command exited with 0\n"),
            "{console}"
        );
    }
}
