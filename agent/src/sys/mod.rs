//! The few system calls no well-kept crate wraps safely, each in a small
//! module with its `unsafe` and the checks that make it sound. `kernel/`
//! holds no `unsafe`: it calls these.

pub mod ip_sockopt;
