//! The safetensors shard checks of the Hugging Face source on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cellm_convert::source::hf::check_safetensors_bytes(data);
});
