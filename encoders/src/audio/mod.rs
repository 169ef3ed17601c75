//! Audio input: WAV decoding (any integer/float format, any rate, any channel count), resampling to
//! 16 kHz mono, and the Gemma 4 log-mel features.

pub mod features;
pub mod resample;
pub mod tower;
pub mod wav;

pub use features::{LogMelExtractor, LogMelFeatures};
pub use tower::{AudioTower, encode_audio_file, encode_audio_file_with};
pub use wav::{Waveform, read_wav, read_wav_bytes};

/// Sample rate of the Gemma 4 audio tower's input.
pub const TARGET_RATE: u32 = 16_000;

/// Reads a WAV file and returns mono 16 kHz samples in [-1, 1].
pub fn load_wav_16k(path: &std::path::Path) -> Result<Vec<f32>, crate::EncoderError> {
    let w = read_wav(path)?;
    resample::to_rate(&w.mono(), w.sample_rate, TARGET_RATE)
}
