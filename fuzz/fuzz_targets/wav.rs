//! The WAV decoder on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cellm_encoders::audio::read_wav_bytes(data, "fuzz.wav");
});
