//! Health-check node ports: what a cloud load balancer asks each node
//! about a LoadBalancer Service with `externalTrafficPolicy: Local`.

use super::ServiceRef;

/// One `spec.healthCheckNodePort` to serve on the node's addresses: 200
/// while the Service has a ready endpoint on this node, 503 otherwise.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HealthCheck {
    pub port: u16,
    pub service: ServiceRef,
    /// Ready (not terminating) endpoints of the Service on this node.
    pub local_endpoints: u32,
}

impl HealthCheck {
    /// Does the load balancer get to send traffic here?
    pub fn healthy(&self) -> bool {
        self.local_endpoints > 0
    }

    /// The answer's body, as kube-proxy's: the Service and its count.
    pub fn body(&self) -> String {
        serde_json::json!({
            "service": {
                "namespace": &*self.service.namespace,
                "name": &*self.service.name,
            },
            "localEndpoints": self.local_endpoints,
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_names_the_service_and_counts_local_endpoints() {
        let hc = HealthCheck {
            port: 32000,
            service: ServiceRef::new("shop", "web"),
            local_endpoints: 2,
        };
        let body: serde_json::Value = serde_json::from_str(&hc.body()).unwrap();
        assert_eq!(body["service"]["namespace"], "shop");
        assert_eq!(body["service"]["name"], "web");
        assert_eq!(body["localEndpoints"], 2);
        assert!(hc.healthy());
        assert!(!HealthCheck {
            local_endpoints: 0,
            ..hc
        }
        .healthy());
    }
}
