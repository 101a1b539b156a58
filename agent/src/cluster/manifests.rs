//! The manifests source: a file or a folder of kubectl-style YAML or JSON
//! (several documents per file, `kind: List` allowed).
//!
//! An object that does not parse is reported with its file, document,
//! kind/name and the field that failed, and skipped; the rest is kept.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::KubeObject;

/// One object that could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based document number in the file (items of a List count apart).
    pub document: usize,
    /// "Service default/web" when the document got that far.
    pub object: Option<String>,
    pub error: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} document {}", self.file.display(), self.document)?;
        if let Some(o) = &self.object {
            write!(f, " ({o})")?;
        }
        write!(f, ": {}", self.error)
    }
}

/// What a load produced.
#[derive(Debug, Default)]
pub struct Loaded {
    pub objects: Vec<KubeObject>,
    pub problems: Vec<Problem>,
    /// Files read, for change detection.
    pub files: Vec<PathBuf>,
}

/// Reads `path` (a file, or every *.yaml, *.yml and *.json in a folder,
/// recursively, in name order). Fails only when `path` itself cannot be read.
pub fn load(path: &Path) -> std::io::Result<Loaded> {
    let mut loaded = Loaded::default();
    let files = if path.is_dir() {
        let mut files = Vec::new();
        collect(path, &mut files)?;
        files
    } else {
        vec![path.to_path_buf()]
    };
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        parse_text(&file, &text, &mut loaded);
        loaded.files.push(file);
    }
    Ok(loaded)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, out)?;
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(p);
        }
    }
    Ok(())
}

/// Parses one file's text (YAML is a superset of JSON, so one parser does).
pub fn parse_text(file: &Path, text: &str, loaded: &mut Loaded) {
    let mut document = 0;
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let value = match <Value as serde::Deserialize>::deserialize(doc) {
            Ok(Value::Null) => continue, // an empty document between `---`
            Ok(v) => v,
            Err(e) => {
                document += 1;
                loaded.problems.push(Problem {
                    file: file.to_path_buf(),
                    document,
                    object: None,
                    error: format!("not YAML/JSON: {e}"),
                });
                // The YAML stream cannot continue past a syntax error.
                return;
            }
        };
        let items = if value["kind"] == "List" {
            value["items"].as_array().cloned().unwrap_or_default()
        } else {
            vec![value]
        };
        for item in items {
            document += 1;
            match object(item) {
                Ok(Some(o)) => loaded.objects.push(o),
                Ok(None) => {}
                Err((object, error)) => loaded.problems.push(Problem {
                    file: file.to_path_buf(),
                    document,
                    object,
                    error,
                }),
            }
        }
    }
}

/// A typed object, `None` for kinds ipwarden does not use.
fn object(v: Value) -> Result<Option<KubeObject>, (Option<String>, String)> {
    let kind = v["kind"].as_str().unwrap_or_default().to_string();
    let api = v["apiVersion"].as_str().unwrap_or_default().to_string();
    let name = v["metadata"]["name"].as_str().unwrap_or_default();
    let label = match v["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    };
    let typed = match (api.as_str(), kind.as_str()) {
        ("v1", "Service") => typed(v).map(KubeObject::Service),
        ("discovery.k8s.io/v1", "EndpointSlice") => typed(v).map(KubeObject::EndpointSlice),
        ("v1", "Pod") => typed(v).map(KubeObject::Pod),
        ("v1", "Namespace") => typed(v).map(KubeObject::Namespace),
        ("networking.k8s.io/v1", "NetworkPolicy") => typed(v).map(KubeObject::NetworkPolicy),
        ("v1", "Node") => typed(v).map(KubeObject::Node),
        (_, "") => return Err((None, "no `kind`".into())),
        _ => return Ok(None),
    };
    typed.map(Some).map_err(|e| (Some(label), e))
}

/// Deserialises with the failing field's path in the error
/// ("spec.ports[0].port: invalid type: string ...").
fn typed<T: DeserializeOwned>(v: Value) -> Result<Box<T>, String> {
    serde_path_to_error::deserialize(v)
        .map(Box::new)
        .map_err(|e| format!("field {}: {}", e.path(), e.inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Loaded {
        let mut l = Loaded::default();
        parse_text(Path::new("t.yaml"), text, &mut l);
        l
    }

    #[test]
    fn multi_document_yaml_list_and_json_are_read_and_unknown_kinds_ignored() {
        let l = parse(
            "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: default}\n---\n\
             ---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: ns1}\n\
             - apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: d}\n---\n\
             {\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"p\", \"namespace\": \"default\"}}\n",
        );
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        let kinds: Vec<&str> = l.objects.iter().map(KubeObject::kind).collect();
        assert_eq!(kinds, ["Service", "Namespace", "Pod"]);
    }

    #[test]
    fn a_bad_object_names_its_field_and_the_others_are_kept() {
        let l = parse(
            "apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: shop}\n\
             spec:\n  ports:\n  - port: eighty\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {name: good, namespace: shop}\n",
        );
        assert_eq!(l.objects.len(), 1);
        assert_eq!(l.objects[0].meta().name.as_deref(), Some("good"));
        let p = &l.problems[0];
        assert_eq!(p.document, 1);
        assert_eq!(p.object.as_deref(), Some("Service shop/bad"));
        assert!(p.error.contains("spec.ports[0].port"), "{}", p.error);
        assert!(p
            .to_string()
            .starts_with("t.yaml document 1 (Service shop/bad): field spec.ports[0].port"));
    }

    #[test]
    fn a_syntax_error_is_a_problem_not_a_panic() {
        let l = parse("apiVersion: v1\nkind: Service\nmetadata: [unclosed\n");
        assert!(l.objects.is_empty());
        assert_eq!(l.problems.len(), 1);
    }
}
