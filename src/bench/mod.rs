//! Benchmarks run by `ferrymq bench`.

pub mod store;
