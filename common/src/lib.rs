//! The ABI between ipwarden's eBPF programs and its agent.
//!
//! `#![no_std]` so the eBPF crate can use it; the `user` feature adds
//! `aya::Pod` impls for user space. Types only, no logic: every struct is
//! `#[repr(C)]`, padded explicitly, and size-checked at compile time so the
//! two sides can never disagree on a layout.
#![no_std]

pub mod maps;
pub mod names;

pub use maps::{
    Config, Event, HitCounter, Mode, ServiceKey, ServiceValue, SourceKey, SourceValue, Stats,
    TableBucket, TableEntry, VipKey, VipValue,
};
