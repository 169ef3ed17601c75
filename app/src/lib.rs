//! Library half of `cellm-app`: the desktop app, exposed so the UI tests in `tests/` can drive
//! the real app state. The command line lives in the binary (`main.rs`, `cli/`).

pub mod gui;
pub mod hub;
pub mod serve;
