//! The GGUF parser (header, metadata, tensor infos, data bounds) on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cellm_convert::source::gguf::parse::parse_bytes(data);
});
