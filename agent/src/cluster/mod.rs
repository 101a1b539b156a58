//! Where the cluster comes from: the API server (`kube.rs`, kube-rs
//! reflectors) or a folder of manifests (`manifests.rs`, for the demo and
//! tests), behind one seam (`source.rs`). Every source produces the same
//! immutable [`Snapshot`].

mod backoff;
pub mod cnp;
pub mod compact;
pub mod events;
mod guard;
pub mod kube;
pub mod manifests;
mod object;
mod shrink_hold;
mod snapshot;
pub mod source;
mod store;
mod trim;
pub mod unreadable;

pub use object::{KubeObject, ObjectRef};
pub use snapshot::{slice_service, HostInfo, List, Snapshot};
pub use source::{Change, Kind, ResourceHealth, Source};
pub use store::{Applied, Grouped, Ordered, Stores};
pub use trim::Trim;
