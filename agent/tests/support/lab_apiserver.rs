//! The fake API server served from a lab node's loopback, as the agent in
//! that namespace reaches it, with a kubeconfig for it. For the VM tests
//! and the agent bench; needs `fake_apiserver` beside it at the crate root.
#![allow(dead_code)] // each user takes a different part

use std::{ops::Deref, path::PathBuf, time::Duration};

use crate::fake_apiserver::{FakeApiServer, Res};
use ipwarden::lab::Lab;

/// Generous: TCG, two tests at a time, and the kube client's backoff.
pub const WAIT: Duration = ipwarden::lab::VM_WAIT;

/// The fake API server served from the lab node's loopback (the agent
/// reaches it at 127.0.0.1), with a kubeconfig for it.
pub struct Kube {
    // Dropped before the runtime it runs on.
    pub server: FakeApiServer,
    pub rt: tokio::runtime::Runtime,
    dir: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Kube {
    pub fn serve(lab: &Lab) -> Kube {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = lab
            .node
            .run(|| std::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap()
            .unwrap();
        let server = {
            let _in = rt.enter();
            FakeApiServer::start_on_std(listener)
        };
        let dir = std::env::temp_dir().join(format!("ipw-kube-{}", lab.node.name()));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = server.kubeconfig(&dir);
        Kube {
            server,
            rt,
            dir,
            kubeconfig,
        }
    }

    /// Waits for a request `pred` accepts (the server's request log).
    pub fn wait_request(&self, what: &str, pred: impl Fn(&str) -> bool) {
        self.rt
            .block_on(self.server.wait_request_within(what, WAIT, pred));
    }

    /// How many lists (not watches) of `res` the server has answered.
    pub fn lists(&self, res: Res) -> usize {
        self.requests().iter().filter(|r| is_list(r, res)).count()
    }
}

impl Deref for Kube {
    type Target = FakeApiServer;
    fn deref(&self) -> &FakeApiServer {
        &self.server
    }
}

impl Drop for Kube {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A list (not a watch) of `res` in the server's request log.
pub fn is_list(request: &str, res: Res) -> bool {
    request.starts_with(&format!("GET {}?", res.path())) && !request.contains("watch=true")
}
