//! Holds only tests (see `tests/`): ferrymq's bytes checked by independent
//! RocketMQ implementations from crates.io.
