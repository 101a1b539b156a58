//! Encode/decode tests that need no root: golden bytes and arbitrary input.

mod fuzz;
mod golden;
mod ipvsadm;
