//! Where the cluster comes from: a folder of manifests now, kube-rs
//! watchers later. Every source produces the same immutable [`Snapshot`].

pub mod manifests;
mod object;
mod snapshot;

pub use object::{KubeObject, ObjectRef};
pub use snapshot::{HostInfo, Snapshot};
