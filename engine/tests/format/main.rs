//! Tests of the `.cellm` format, in one test binary. Module names start with `format_` so that
//! `cargo test -p cellm-engine format` selects them.

mod common;
mod format_invalid;
mod format_roundtrip;
mod format_writer_errors;
