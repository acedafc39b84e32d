//! Benchmarks run by `ferrymq bench`.

pub mod mqtt;
pub mod store;
