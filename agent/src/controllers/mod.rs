//! Pure functions from a cluster snapshot to desired state: no I/O, no
//! clock, so the same snapshot always gives the same result.

#[cfg(test)]
mod fixtures;
pub mod fragments;
pub mod policies;
pub mod services;
