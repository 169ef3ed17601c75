//! The .cellm container checks (preamble, header JSON, tensor table) on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cellm_engine::format::CellmFile::check_bytes(data);
});
