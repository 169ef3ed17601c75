//! WAV decoding with `hound`: 8/16/24/32-bit integer and 32-bit float, any rate and channel count.

use crate::EncoderError;
use std::path::Path;

/// Longest input accepted, in seconds: bounds memory (a 2-hour WAV is refused with a message).
pub const MAX_SECONDS: f64 = 10.0 * 60.0;

/// Interleaved samples scaled to [-1, 1].
#[derive(Clone, Debug)]
pub struct Waveform {
    pub sample_rate: u32,
    pub channels: u16,
    pub samples: Vec<f32>,
}

impl Waveform {
    pub fn frames(&self) -> usize {
        self.samples.len() / self.channels.max(1) as usize
    }

    pub fn seconds(&self) -> f64 {
        self.frames() as f64 / self.sample_rate.max(1) as f64
    }

    /// Average of the channels.
    pub fn mono(&self) -> Vec<f32> {
        let ch = self.channels.max(1) as usize;
        if ch == 1 {
            return self.samples.clone();
        }
        self.samples
            .chunks_exact(ch)
            .map(|f| f.iter().sum::<f32>() / ch as f32)
            .collect()
    }
}

pub fn read_wav(path: &Path) -> Result<Waveform, EncoderError> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| EncoderError::Io {
        path: shown.clone(),
        source,
    })?;
    decode(std::io::BufReader::new(file), shown)
}

/// [`read_wav`] of a WAV file held in memory (`name` is shown in errors); for the fuzz and
/// mutation tests of the parser.
pub fn read_wav_bytes(bytes: &[u8], name: &str) -> Result<Waveform, EncoderError> {
    decode(std::io::Cursor::new(bytes), name.to_string())
}

fn decode<R: std::io::Read>(input: R, shown: String) -> Result<Waveform, EncoderError> {
    let bad = |why: String| EncoderError::BadWav {
        path: shown.clone(),
        why,
    };
    let reader = hound::WavReader::new(input).map_err(|e| match e {
        hound::Error::IoError(source) => EncoderError::Io {
            path: shown.clone(),
            source,
        },
        other => bad(other.to_string()),
    })?;
    let spec = reader.spec();
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(bad("zero channels or zero sample rate".into()));
    }
    let frames = reader.duration() as f64;
    let secs = frames / spec.sample_rate as f64;
    if secs > MAX_SECONDS {
        return Err(EncoderError::AudioTooLong {
            secs,
            limit_secs: MAX_SECONDS,
        });
    }
    let samples: Result<Vec<f32>, hound::Error> = match spec.sample_format {
        hound::SampleFormat::Float => reader.into_samples::<f32>().collect(),
        hound::SampleFormat::Int => {
            // 8-bit WAV is unsigned on disk; hound already re-centres it around 0.
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect()
        }
    };
    let samples = samples.map_err(|e| bad(e.to_string()))?;
    if samples.len() < spec.channels as usize {
        return Err(EncoderError::EmptyAudio { path: shown });
    }
    Ok(Waveform {
        sample_rate: spec.sample_rate,
        channels: spec.channels,
        samples,
    })
}
