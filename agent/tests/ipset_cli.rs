//! `ipwarden kernel ipset`, the built binary run inside a network
//! namespace: JSON members are `ipset save` text, the default layout is
//! `ipset list`'s.

use std::{collections::BTreeSet, io::Write, process::Stdio};

use ipwarden::netns::{privileged, NetNs};

const SCRIPT: &str = "\
create svc hash:ip,port family inet hashsize 1024 maxelem 65536
add svc 10.96.0.10,udp:53
add svc 10.96.0.10,tcp:53
add svc 10.96.0.1,sctp:9
create pol hash:net family inet comment
add pol 10.1.0.0/16
add pol 10.1.2.0/24 nomatch comment \"except\"
create pol6 hash:net,port family inet6
add pol6 2001:db8::/64,tcp:443
";

fn setup() -> NetNs {
    let ns = NetNs::new("ipw-ipset").unwrap();
    let mut child = ns
        .command("ipset")
        .arg("restore")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(SCRIPT.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    ns
}

fn ipwarden(ns: &NetNs, args: &[&str]) -> std::process::Output {
    ns.command(env!("CARGO_BIN_EXE_ipwarden"))
        .args(["kernel", "ipset"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn privileged_json_members_are_ipset_save_text() {
    if !privileged("privileged_json_members_are_ipset_save_text") {
        return;
    }
    let ns = setup();
    let out = ipwarden(&ns, &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sets = v.as_array().unwrap();
    let got: BTreeSet<(String, String, String, BTreeSet<String>)> = sets
        .iter()
        .map(|s| {
            let members = s["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_str().unwrap().to_owned())
                .collect();
            let field = |k: &str| s[k].as_str().unwrap().to_owned();
            (field("name"), field("type"), field("family"), members)
        })
        .collect();
    let set = |n: &str, t: &str, f: &str, m: &[&str]| {
        (
            n.to_owned(),
            t.to_owned(),
            f.to_owned(),
            m.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
        )
    };
    let want = BTreeSet::from([
        set(
            "svc",
            "hash:ip,port",
            "inet",
            &["10.96.0.10,udp:53", "10.96.0.10,tcp:53", "10.96.0.1,sctp:9"],
        ),
        set(
            "pol",
            "hash:net",
            "inet",
            &["10.1.0.0/16", "10.1.2.0/24 nomatch comment \"except\""],
        ),
        set("pol6", "hash:net,port", "inet6", &["2001:db8::/64,tcp:443"]),
    ]);
    assert_eq!(got, want);

    // One set by name.
    let out = ipwarden(&ns, &["pol", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["name"], "pol");
    assert_eq!(v[0]["entries"], 2);
}

#[test]
fn privileged_human_output_is_ipset_list_and_save() {
    if !privileged("privileged_human_output_is_ipset_list_and_save") {
        return;
    }
    let ns = setup();
    let out = ipwarden(&ns, &[]);
    assert!(out.status.success());
    let list = ns.output("ipset", &["list"]).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), list);

    let out = ipwarden(&ns, &["--save"]);
    let save = ns.output("ipset", &["save"]).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), save);

    let out = ipwarden(&ns, &["nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("nope") && err.contains("no such set"), "{err}");
}
