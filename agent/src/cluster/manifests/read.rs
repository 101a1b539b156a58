//! Reading manifests: a file or a folder of kubectl-style YAML or JSON
//! (several documents per file, `kind: List` allowed) into objects, and
//! each object that does not parse into a problem naming its file,
//! document, kind/name and field; the rest is kept.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    super::{source::Kind, KubeObject},
    Key,
};

/// One object that could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentProblem {
    pub file: PathBuf,
    /// 1-based document number in the file (items of a List count apart).
    pub document: usize,
    /// "Service default/web" when the document got that far.
    pub object: Option<String>,
    /// The object's kind, namespace and name, when it is of a kind
    /// ipwarden reads and has a name: its last good version (or its
    /// stand-in) stays in force ([`super::unreadable`]).
    pub key: Option<Key>,
    pub error: String,
}

impl fmt::Display for DocumentProblem {
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
    pub problems: Vec<DocumentProblem>,
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

pub(super) fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        // Hidden entries are not manifests: editors' swap files, and a
        // ConfigMap volume's `..data` and `..<timestamp>` folders (its
        // files are symlinks into them, so they would be read twice).
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
        {
            continue;
        }
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

/// The documents of one file's text: a `.json` file by serde_json (one or
/// more values), the rest as YAML (a superset of JSON). The YAML loader
/// holds a whole document's parser events, about 25 times its text: a
/// 10k-object List in JSON peaked at 200 MB that way.
fn documents<'a>(
    file: &Path,
    text: &'a str,
) -> Box<dyn Iterator<Item = Result<Value, String>> + 'a> {
    if file.extension().is_some_and(|e| e == "json") {
        let values = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        Box::new(values.map(|v| v.map_err(|e| e.to_string())))
    } else {
        let docs = serde_yaml_ng::Deserializer::from_str(text);
        Box::new(
            docs.map(|d| <Value as serde::Deserialize>::deserialize(d).map_err(|e| e.to_string())),
        )
    }
}

/// Parses one file's text.
pub fn parse_text(file: &Path, text: &str, loaded: &mut Loaded) {
    let mut document = 0;
    for doc in documents(file, text) {
        let value = match doc {
            Ok(Value::Null) => continue, // an empty document between `---`
            Ok(v) => v,
            Err(e) => {
                document += 1;
                loaded.problems.push(DocumentProblem {
                    file: file.to_path_buf(),
                    document,
                    object: None,
                    key: None,
                    error: format!("not YAML/JSON: {e}"),
                });
                // The YAML stream cannot continue past a syntax error.
                return;
            }
        };
        let items = if value["kind"] == "List" {
            // Taken, not cloned: a List of 10k objects is held once.
            let mut value = value;
            match value["items"].take() {
                Value::Array(items) => items,
                _ => Vec::new(),
            }
        } else {
            vec![value]
        };
        for item in items {
            document += 1;
            match object(item) {
                Ok(Some(o)) => loaded.objects.push(o),
                Ok(None) => {}
                Err((object, key, error)) => loaded.problems.push(DocumentProblem {
                    file: file.to_path_buf(),
                    document,
                    object,
                    key,
                    error,
                }),
            }
        }
    }
}

/// A typed object, `None` for kinds ipwarden does not use.
#[allow(clippy::type_complexity)]
fn object(v: Value) -> Result<Option<KubeObject>, (Option<String>, Option<Key>, String)> {
    let kind = v["kind"].as_str().unwrap_or_default().to_string();
    let api = v["apiVersion"].as_str().unwrap_or_default().to_string();
    let name = v["metadata"]["name"].as_str().unwrap_or_default();
    let label = match v["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    };
    let key = |k: Kind| {
        let namespace = v["metadata"]["namespace"].as_str().map(str::to_string);
        (!name.is_empty()).then(|| (k, namespace, name.to_string()))
    };
    let (typed, key) = match (api.as_str(), kind.as_str()) {
        ("v1", "Service") => (typed(&v).map(KubeObject::Service), key(Kind::Service)),
        ("discovery.k8s.io/v1", "EndpointSlice") => (
            typed(&v).map(KubeObject::EndpointSlice),
            key(Kind::EndpointSlice),
        ),
        ("v1", "Pod") => (typed(&v).map(KubeObject::Pod), key(Kind::Pod)),
        ("v1", "Namespace") => (typed(&v).map(KubeObject::Namespace), key(Kind::Namespace)),
        ("networking.k8s.io/v1", "NetworkPolicy") => (
            typed(&v).map(KubeObject::NetworkPolicy),
            key(Kind::NetworkPolicy),
        ),
        (super::super::cnp::API_VERSION, super::super::cnp::KIND) => (
            typed(&v).map(KubeObject::ClusterNetworkPolicy),
            key(Kind::ClusterNetworkPolicy),
        ),
        ("v1", "Node") => (typed(&v).map(KubeObject::Node), key(Kind::Node)),
        (_, "") => return Err((None, None, "no `kind`".into())),
        _ => return Ok(None),
    };
    typed.map(Some).map_err(|e| (Some(label), key, e))
}

/// Deserialises with the failing field's path in the error
/// ("spec.ports[0].port: invalid type: string ...").
fn typed<T: DeserializeOwned>(v: &Value) -> Result<Box<T>, String> {
    serde_path_to_error::deserialize(v)
        .map(Box::new)
        .map_err(|e| format!("field {}: {}", e.path(), e.inner()))
}

/// One file's objects, or why the file as a whole cannot be used: it
/// cannot be read, is not YAML/JSON (a truncated document), or holds a
/// document that is not an object with a `kind` (garbage). Objects that
/// fail on their own fields are in `problems` and skipped; the rest counts.
pub fn read_file(file: &Path) -> Result<Loaded, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut loaded = Loaded::default();
    parse_text(file, &text, &mut loaded);
    if let Some(p) = loaded.problems.iter().find(|p| p.object.is_none()) {
        return Err(p.to_string());
    }
    loaded.files.push(file.to_path_buf());
    Ok(loaded)
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
    fn a_json_file_is_read_by_the_json_parser_values_one_after_another() {
        let mut l = Loaded::default();
        let text = r#"{"apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}]}
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "a"}}
            {"apiVersion": "v1", "kind": "#;
        parse_text(Path::new("t.json"), text, &mut l);
        let kinds: Vec<&str> = l.objects.iter().map(KubeObject::kind).collect();
        assert_eq!(kinds, ["Namespace", "Service"]);
        assert_eq!(l.problems.len(), 1, "{:?}", l.problems);
        assert_eq!(l.problems[0].document, 3);
        assert!(
            l.problems[0].error.starts_with("not YAML/JSON: EOF"),
            "{}",
            l.problems[0].error
        );
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
    fn a_configmap_volume_is_read_once_through_its_symlinks() {
        let dir = std::env::temp_dir().join(format!("ipw-cm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let data = dir.join("..2026_11_29_10_00_00.000000001");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(
            data.join("web.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(data.file_name().unwrap(), dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/web.yaml", dir.join("web.yaml")).unwrap();
        let l = load(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(l.objects.len(), 1, "{:?}", l.files);
    }

    #[test]
    fn a_syntax_error_is_a_problem_not_a_panic() {
        let l = parse("apiVersion: v1\nkind: Service\nmetadata: [unclosed\n");
        assert!(l.objects.is_empty());
        assert_eq!(l.problems.len(), 1);
    }
}
