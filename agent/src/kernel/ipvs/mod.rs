//! IPVS over generic netlink (family "IPVS", linux/ip_vs.h).
