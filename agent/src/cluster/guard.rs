//! An API object that may not deserialize, as kube's `DeserializeGuard`
//! but with the failing field's path in the error
//! ("field spec.ingress[0].ports[0].port: invalid type: map ..."), so the
//! problem names object and field.

use std::borrow::Cow;

use k8s_openapi::{api::core::v1::ObjectReference, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{runtime::watcher, Resource};
use serde::{de::DeserializeOwned, Deserialize, Deserializer};

use super::{
    compact::Keep,
    store::{Grouped, Ordered},
    unreadable::{NeverRead, StandIn, Unreadable, UnreadableBook},
    Kind,
};

/// The object, or its metadata and why the rest did not read.
#[derive(Clone, Debug)]
pub struct Guarded<K>(pub Result<K, Invalid>);

#[derive(Clone, Debug)]
pub struct Invalid {
    pub metadata: ObjectMeta,
    pub error: String,
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Guarded<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        // The plain decode first: the path is tracked only to explain a
        // failure.
        if let Ok(o) = K::deserialize(&value) {
            return Ok(Guarded(Ok(o)));
        }
        match serde_path_to_error::deserialize::<_, K>(&value) {
            Ok(o) => Ok(Guarded(Ok(o))),
            Err(e) => {
                let metadata = ObjectMeta::deserialize(&value["metadata"]).unwrap_or_default();
                Ok(Guarded(Err(Invalid {
                    metadata,
                    error: format!("field {}: {}", e.path(), e.inner()),
                })))
            }
        }
    }
}

impl<K: Resource> Resource for Guarded<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        self.0.as_ref().map_or_else(|e| &e.metadata, K::meta)
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0
            .as_mut()
            .map_or_else(|e| &mut e.metadata, K::meta_mut)
    }
}

/// A watcher event of guarded objects as the store should see it, each
/// object kept ([`Keep`]: trimmed, or converted to its compact type, and
/// the decoded one dropped): an object that does not read keeps its last
/// good version in `store`, or its stand-in ([`NeverRead`]), or is left
/// out; each is booked in `unreadable` until it reads.
pub fn unguard<K>(
    kind: Kind,
    event: watcher::Event<Guarded<K>>,
    store: &Ordered<K::Kept>,
    unreadable: &UnreadableBook,
) -> Option<watcher::Event<K::Kept>>
where
    K: Resource<DynamicType = ()> + Default + NeverRead + Keep<Kept: Grouped> + 'static,
{
    use watcher::Event::*;
    let read = |o: &K| {
        let m = o.meta();
        unreadable.clear(
            kind,
            m.namespace.as_deref(),
            m.name.as_deref().unwrap_or_default(),
        );
    };
    // The last good version, else the stand-in; booked either way.
    let stand_in = |e: Invalid| -> (Option<K::Kept>, bool) {
        let name = e.metadata.name.as_deref().unwrap_or_default();
        let held = store.get(e.metadata.namespace.as_deref(), name);
        let (object, how) = match held {
            Some(last) => (Some((*last).clone()), StandIn::LastGood),
            None => match K::never_read(&e.metadata) {
                Some(o) => (Some(o.keep()), StandIn::DenyAll),
                None => (None, StandIn::Nothing),
            },
        };
        let regarding = ObjectReference {
            api_version: Some(K::api_version(&()).into_owned()),
            kind: Some(K::kind(&()).into_owned()),
            namespace: e.metadata.namespace.clone(),
            name: e.metadata.name.clone(),
            uid: e.metadata.uid.clone(),
            // Left out: kube's recorder matches repeats on the whole reference.
            resource_version: None,
            field_path: None,
        };
        let u = Unreadable {
            kind,
            namespace: e.metadata.namespace.clone(),
            name: e.metadata.name.clone().unwrap_or_default(),
            error: e.error,
            stand_in: how,
        };
        unreadable.set_regarding(u, regarding);
        (object, how == StandIn::LastGood)
    };
    match event {
        Init => Some(Init),
        InitDone => Some(InitDone),
        InitApply(Guarded(Ok(o))) => {
            read(&o);
            Some(InitApply(o.keep()))
        }
        Apply(Guarded(Ok(o))) => {
            read(&o);
            Some(Apply(o.keep()))
        }
        Delete(Guarded(Ok(o))) => {
            read(&o);
            Some(Delete(o.keep()))
        }
        InitApply(Guarded(Err(e))) => stand_in(e).0.map(InitApply),
        // Held already: nothing changes.
        Apply(Guarded(Err(e))) => match stand_in(e) {
            (_, true) => None,
            (o, false) => o.map(Apply),
        },
        Delete(Guarded(Err(e))) => {
            let m = e.metadata;
            unreadable.clear(
                kind,
                m.namespace.as_deref(),
                m.name.as_deref().unwrap_or_default(),
            );
            let mut o = K::default();
            *o.meta_mut() = ObjectMeta {
                name: m.name,
                namespace: m.namespace,
                ..ObjectMeta::default()
            };
            Some(Delete(o.keep()))
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_type_error_keeps_the_name_and_names_the_field() {
        let g: Guarded<NetworkPolicy> = serde_json::from_value(json!({
            "metadata": {"name": "allow-web", "namespace": "shop"},
            "spec": {"podSelector": {}, "ingress": [{"ports": [{"protocol": "TCP", "port": {"name": "http"}}]}]}
        }))
        .unwrap();
        let e = g.0.unwrap_err();
        assert_eq!(e.metadata.name.as_deref(), Some("allow-web"));
        assert!(
            e.error.starts_with("field spec.ingress[0].ports[0].port"),
            "{}",
            e.error
        );
    }
}
