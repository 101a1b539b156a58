//! What the stores hold: each object decoded as k8s-openapi's type, checked
//! by the guard, converted at once into an ipwarden type that keeps only
//! what the controllers, `explain`, `status` and `/state` read, and the
//! decoded object dropped. k8s-openapi's types are wide (a `Pod` is 2 KiB
//! of mostly `None` before any data), so the three big kinds (Services,
//! EndpointSlices, Pods) are held in these narrow types instead.
//!
//! **A controller that starts reading a field must keep it here** (and in
//! [`super::trim`] for the kinds still held as k8s-openapi types).

mod pod;
mod service;
mod shared;
mod slice;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use pod::{ContainerPort, Pod, PodSpec, PodStatus};
pub use service::{LoadBalancerIngress, Service, ServicePort, ServiceSpec};
pub use shared::{shared, Shared};
pub use slice::{Addresses, Conditions, Endpoint, EndpointPort, EndpointSlice};

/// An immutable string: 16 bytes, no spare capacity.
pub type Text = Box<str>;

/// A list of strings as the API gave it.
pub type Texts = Box<[Text]>;

fn text(s: String) -> Text {
    s.into_boxed_str()
}

/// The pool's copy of a string that repeats across objects.
fn common(s: String) -> Shared {
    shared(&s)
}

fn texts(list: Vec<String>) -> Texts {
    list.into_iter().map(text).collect()
}

/// Labels or annotations: pairs sorted by key (16 bytes, nothing allocated
/// when empty), found by binary search; keys and values from the pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels(Box<[(Shared, Shared)]>);

impl Labels {
    /// The pairs of `map` whose key `keep` accepts.
    pub fn kept(map: Option<BTreeMap<String, String>>, keep: impl Fn(&str) -> bool) -> Self {
        // A BTreeMap iterates in key order: the slice is sorted already.
        Self(
            map.into_iter()
                .flatten()
                .filter(|(k, _)| keep(k))
                .map(|(k, v)| (common(k), common(v)))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        let i = self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok()?;
        Some(&self.0[i].1)
    }

    /// The pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets `key` to `value` (tests and benches edit objects in place).
    pub fn insert(&mut self, key: &str, value: &str) {
        let mut pairs = std::mem::take(&mut self.0).into_vec();
        match pairs.binary_search_by(|(k, _)| (**k).cmp(key)) {
            Ok(i) => pairs[i].1 = shared(value),
            Err(i) => pairs.insert(i, (shared(key), shared(value))),
        }
        self.0 = pairs.into_boxed_slice();
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = (&'a str, &'a str);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Shared, Shared)>,
        fn(&'a (Shared, Shared)) -> (&'a str, &'a str),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }
}

/// Labels a selector can read: a compact object's, or a map built for a
/// namespace.
pub trait LabelMap {
    fn label(&self, key: &str) -> Option<&str>;
}

impl LabelMap for Labels {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key)
    }
}

impl LabelMap for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// The identity of an object, and the labels and annotations kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub namespace: Option<Shared>,
    pub name: Text,
    pub labels: Labels,
    pub annotations: Labels,
}

impl Meta {
    /// Name, namespace, the labels `labels` keeps and the annotations the
    /// controllers read ([`super::trim::KEPT_ANNOTATIONS`]).
    fn kept(meta: ObjectMeta, labels: impl Fn(&str) -> bool) -> Self {
        Self {
            namespace: meta.namespace.map(common),
            name: text(meta.name.unwrap_or_default()),
            labels: Labels::kept(meta.labels, labels),
            annotations: Labels::kept(meta.annotations, super::trim::kept_annotation),
        }
    }

    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// (namespace or "", name): the order stores and snapshots keep objects in.
pub trait NameKey {
    fn name_key(&self) -> (&str, &str);
}

impl NameKey for Meta {
    fn name_key(&self) -> (&str, &str) {
        (self.namespace().unwrap_or_default(), self.name())
    }
}

impl NameKey for ObjectMeta {
    fn name_key(&self) -> (&str, &str) {
        (
            self.namespace.as_deref().unwrap_or_default(),
            self.name.as_deref().unwrap_or_default(),
        )
    }
}

/// What a store holds of one object.
pub trait Stored: Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static {
    fn namespace(&self) -> Option<&str>;
    fn name(&self) -> &str;

    fn key(&self) -> (&str, &str) {
        (self.namespace().unwrap_or_default(), self.name())
    }
}

/// A decoded (and guarded) object turned into what the stores hold.
pub trait Keep: Sized {
    type Kept: Stored;
    fn keep(self) -> Self::Kept;
}

macro_rules! compact_kind {
    ($($k8s:ty => $kept:ty),*) => {$(
        impl Keep for $k8s {
            type Kept = $kept;
            fn keep(self) -> $kept {
                <$kept>::from(self)
            }
        }
        impl Stored for $kept {
            fn namespace(&self) -> Option<&str> {
                self.metadata.namespace()
            }
            fn name(&self) -> &str {
                self.metadata.name()
            }
        }
    )*};
}

compact_kind!(
    k8s_openapi::api::core::v1::Service => Service,
    k8s_openapi::api::discovery::v1::EndpointSlice => EndpointSlice,
    k8s_openapi::api::core::v1::Pod => Pod
);

/// The kinds held as k8s-openapi's types, trimmed ([`super::trim`]): few
/// objects, or read whole.
macro_rules! trimmed_kind {
    ($($k8s:ty),*) => {$(
        impl Keep for $k8s {
            type Kept = $k8s;
            fn keep(mut self) -> $k8s {
                super::Trim::trim(&mut self);
                self
            }
        }
        impl Stored for $k8s {
            fn namespace(&self) -> Option<&str> {
                self.metadata.namespace.as_deref()
            }
            fn name(&self) -> &str {
                self.metadata.name.as_deref().unwrap_or_default()
            }
        }
    )*};
}

trimmed_kind!(
    k8s_openapi::api::core::v1::Namespace,
    k8s_openapi::api::core::v1::Node,
    k8s_openapi::api::networking::v1::NetworkPolicy,
    super::cnp::ClusterNetworkPolicy
);
