//! Names of the kernel objects the service controller owns.

/// Tag in the comment of every rule we put into a built-in chain.
pub const OWNER_TAG: &str = "ipwarden:services";
pub const SET_SVIP: &str = "ipwarden-svip";
pub const SET_SVIP_PRT: &str = "ipwarden-svip-prt";
pub const SET_LOCAL_IPS: &str = "ipwarden-local-ips";
pub const CHAIN_SERVICES: &str = "IPWARDEN-SERVICES";
/// Comment prefix of the rules refusing traffic-policy-Local frontends
/// without a local endpoint; the Service follows (`shop/web`).
pub const NO_LOCAL_ENDPOINT: &str = "ipwarden:no-local-endpoint ";
pub const CHAIN_POSTROUTING: &str = "IPWARDEN-POSTROUTING";
/// The dummy interface that holds ClusterIPs, externalIPs and LB IPs.
pub const DUMMY_INTERFACE: &str = "ipwarden0";
/// Values of service.kubernetes.io/service-proxy-name that we serve
/// (kube-router's, so a kube-router user can switch).
pub const PROXY_NAMES: &[&str] = &["ipwarden", "kube-router"];
