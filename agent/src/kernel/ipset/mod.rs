//! ipset over nfnetlink (NFNL_SUBSYS_IPSET, protocol 7).
