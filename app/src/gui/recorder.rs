//! Microphone recording (cpal): the capture buffer the audio callback fills (mono, with a level
//! meter), the stream around it, and the WAV file a finished recording becomes.

use cpal::traits::{DeviceTrait as _, HostTrait as _, StreamTrait as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest recording kept (then the buffer stops growing): 10 minutes.
const MAX_SECONDS: usize = 600;

/// What the audio callback writes into: mono samples and the recent peak level.
#[derive(Debug, Default)]
pub struct CaptureBuffer {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    /// Peak magnitude of the last callback's block (0..=1), for the level meter.
    pub level: f32,
}

impl CaptureBuffer {
    pub fn new(sample_rate: u32) -> Self {
        Self {
            samples: Vec::new(),
            sample_rate,
            level: 0.0,
        }
    }

    /// Appends one block of interleaved frames, averaged to mono.
    pub fn push_interleaved(&mut self, data: &[f32], channels: usize) {
        let channels = channels.max(1);
        let mut peak = 0.0f32;
        let room = (MAX_SECONDS * self.sample_rate as usize).saturating_sub(self.samples.len());
        for frame in data.chunks_exact(channels).take(room) {
            let v = frame.iter().sum::<f32>() / channels as f32;
            peak = peak.max(v.abs());
            self.samples.push(v);
        }
        self.level = peak.min(1.0);
    }

    pub fn seconds(&self) -> f32 {
        self.samples.len() as f32 / self.sample_rate.max(1) as f32
    }
}

/// Names of the input devices, the default first (empty when there is no audio system).
pub fn input_devices() -> Vec<String> {
    let host = cpal::default_host();
    let mut names: Vec<String> = Vec::new();
    if let Some(d) = host.default_input_device() {
        names.push(d.to_string());
    }
    if let Ok(devices) = host.input_devices() {
        for d in devices {
            let n = d.to_string();
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    names.retain(|n| !is_pseudo_device(n));
    names
}

/// ALSA plugins that are no microphone: "null" ("Discard all samples", which also delivers
/// silence faster than real time), the mixing/sharing plugins and the per-output aliases.
pub fn is_pseudo_device(name: &str) -> bool {
    let lower = name.to_lowercase();
    let id = lower.split([':', ' ', ',']).next().unwrap_or("");
    const IDS: [&str; 14] = [
        "null",
        "dmix",
        "dsnoop",
        "lavrate",
        "samplerate",
        "speexrate",
        "upmix",
        "vdownmix",
        "surround21",
        "surround40",
        "surround41",
        "surround50",
        "surround51",
        "surround71",
    ];
    IDS.contains(&id)
        || lower.contains("discard all samples")
        || [
            "front:",
            "rear:",
            "center_lfe:",
            "side:",
            "iec958:",
            "hdmi:",
            "spdif:",
        ]
        .iter()
        .any(|p| lower.starts_with(p))
}

/// A running recording. Dropping it stops the stream.
pub struct Recorder {
    _stream: cpal::Stream,
    buffer: Arc<Mutex<CaptureBuffer>>,
    error: Arc<Mutex<Option<String>>>,
    started: Instant,
    pub device: String,
}

impl Recorder {
    /// Starts recording from `device` (None: the system default).
    pub fn start(device: Option<&str>) -> Result<Self, String> {
        let host = cpal::default_host();
        let dev = match device {
            None => host.default_input_device(),
            Some(name) => host
                .input_devices()
                .map_err(|e| format!("cannot list microphones: {e}"))?
                .find(|d| d.to_string() == name),
        }
        .ok_or_else(|| match device {
            Some(name) => format!("The microphone \"{name}\" is not available."),
            None => "No microphone was found.".to_owned(),
        })?;
        let name = dev.to_string();
        let supported = dev
            .default_input_config()
            .map_err(|e| format!("The microphone \"{name}\" cannot record: {e}"))?;
        let config = supported.config();
        let channels = usize::from(config.channels);
        let buffer = Arc::new(Mutex::new(CaptureBuffer::new(config.sample_rate)));
        let error: Arc<Mutex<Option<String>>> = Arc::default();
        let on_error = {
            let error = error.clone();
            move |e: cpal::Error| {
                if let Ok(mut slot) = error.lock() {
                    *slot = Some(e.to_string());
                }
            }
        };
        let timeout = Some(Duration::from_secs(2));
        let b = buffer.clone();
        let stream = match supported.sample_format() {
            cpal::SampleFormat::F32 => dev.build_input_stream(
                config,
                move |data: &[f32], _: &cpal::InputCallbackInfo| {
                    if let Ok(mut buf) = b.lock() {
                        buf.push_interleaved(data, channels);
                    }
                },
                on_error,
                timeout,
            ),
            cpal::SampleFormat::I16 => dev.build_input_stream(
                config,
                move |data: &[i16], _: &cpal::InputCallbackInfo| {
                    let f: Vec<f32> = data.iter().map(|&s| f32::from(s) / 32768.0).collect();
                    if let Ok(mut buf) = b.lock() {
                        buf.push_interleaved(&f, channels);
                    }
                },
                on_error,
                timeout,
            ),
            other => {
                return Err(format!(
                    "The microphone \"{name}\" delivers {other:?} samples, which cellm cannot record yet."
                ));
            }
        }
        .map_err(|e| format!("Cannot open the microphone \"{name}\": {e}"))?;
        stream
            .play()
            .map_err(|e| format!("Cannot start the microphone \"{name}\": {e}"))?;
        Ok(Self {
            _stream: stream,
            buffer,
            error,
            started: Instant::now(),
            device: name,
        })
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn level(&self) -> f32 {
        self.buffer.lock().map(|b| b.level).unwrap_or(0.0)
    }

    /// The stream's error, if it reported one.
    pub fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }

    /// Stops and writes the recording as a 16-bit mono WAV file in `dir`.
    pub fn finish(self, dir: &Path) -> Result<PathBuf, String> {
        let Self {
            _stream, buffer, ..
        } = self;
        drop(_stream);
        let buf = buffer
            .lock()
            .map_err(|_| "the recording was lost".to_owned())?;
        if buf.samples.is_empty() {
            return Err("Nothing was recorded (the microphone sent no sound).".to_owned());
        }
        save_wav(dir, &buf.samples, buf.sample_rate)
    }
}

/// 16-bit PCM mono WAV bytes.
pub fn wav_bytes(samples: &[f32], sample_rate: u32) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut b = Vec::with_capacity(44 + samples.len() * 2);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&sample_rate.to_le_bytes());
    b.extend_from_slice(&(sample_rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        let v = (s.clamp(-1.0, 1.0) * 32767.0).round() as i16;
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

/// Writes `recording-<time>.wav` in `dir` (atomically) and returns its path.
pub fn save_wav(dir: &Path, samples: &[f32], sample_rate: u32) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let path = dir.join(format!("recording-{stamp}.wav"));
    super::store::write_atomic(&path, &wav_bytes(samples, sample_rate))
        .map_err(|e| format!("{e:#}"))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alsa_pseudo_devices_are_not_microphones() {
        for n in [
            "null",
            "Discard all samples (playback) or generate zero samples (capture)",
            "dmix:CARD=PCH",
            "dsnoop:CARD=PCH,DEV=0",
            "front:CARD=PCH,DEV=0",
            "surround51",
        ] {
            assert!(is_pseudo_device(n), "{n}");
        }
        for n in [
            "default",
            "pipewire",
            "pulse",
            "hw:CARD=PCH,DEV=0",
            "USB Microphone",
        ] {
            assert!(!is_pseudo_device(n), "{n}");
        }
    }

    #[test]
    fn capture_downmixes_meters_and_saves_a_readable_wav() {
        // A synthetic stereo stream in three callback blocks: left a 440 Hz tone, right silent.
        let rate = 16000;
        let mut buf = CaptureBuffer::new(rate);
        for block in 0..3 {
            let frames: Vec<f32> = (0..1600)
                .flat_map(|i| {
                    let t = (block * 1600 + i) as f32 / rate as f32;
                    [0.8 * (std::f32::consts::TAU * 440.0 * t).sin(), 0.0]
                })
                .collect();
            buf.push_interleaved(&frames, 2);
        }
        assert_eq!(buf.samples.len(), 4800);
        assert!((buf.seconds() - 0.3).abs() < 1e-6);
        assert!((buf.level - 0.4).abs() < 0.01, "mono peak {}", buf.level);

        let dir = tempfile::tempdir().unwrap();
        let path = save_wav(dir.path(), &buf.samples, rate).unwrap();
        let preview = super::super::waveform::read_wav(&path).unwrap();
        assert_eq!((preview.sample_rate, preview.channels), (rate, 1));
        assert!((preview.seconds - 0.3).abs() < 1e-3);
        assert!(preview.peaks.iter().all(|&p| (p - 0.4).abs() < 0.02));
    }

    /// Records about a second from the default microphone and expects sound. Needs a real or
    /// virtual microphone, e.g. PulseAudio with a pipe source fed from a WAV:
    /// `pulseaudio -n -D -L module-native-protocol-unix -L "module-pipe-source source_name=mic
    /// file=/tmp/mic format=s16le rate=16000 channels=1"`, `pactl set-default-source mic`,
    /// `pcm.!default pulse` in ~/.asoundrc, then `tail -c +45 some.wav > /tmp/mic &` and
    /// `cargo test --release -p cellm-app --lib records_from_the_default_microphone -- --ignored`
    #[test]
    #[ignore]
    fn records_from_the_default_microphone() {
        let rec = Recorder::start(None).unwrap();
        std::thread::sleep(Duration::from_millis(1200));
        assert_eq!(rec.error(), None);
        let dir = tempfile::tempdir().unwrap();
        let path = rec.finish(dir.path()).unwrap();
        let preview = super::super::waveform::read_wav(&path).unwrap();
        eprintln!(
            "recorded {:.2} s at {} Hz, peak {:.3}",
            preview.seconds,
            preview.sample_rate,
            preview.peaks.iter().cloned().fold(0.0, f32::max)
        );
        assert!(preview.seconds > 0.5, "{} s", preview.seconds);
        assert!(
            preview.peaks.iter().any(|&p| p > 0.05),
            "only silence was recorded"
        );
    }

    #[test]
    fn an_unknown_microphone_is_a_plain_error() {
        let err = Recorder::start(Some("no such microphone")).err().unwrap();
        assert!(
            err.contains("no such microphone") || err.contains("microphone"),
            "{err}"
        );
    }
}
