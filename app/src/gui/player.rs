//! Replaying a WAV attachment (a recording or a dropped file) through the default output device
//! (cpal). The file is decoded, mixed to mono and resampled to the device rate on the player's
//! own thread, which also owns the output stream (cpal streams are not `Send` everywhere).

use cpal::traits::{DeviceTrait as _, HostTrait as _, StreamTrait as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Fills one interleaved output block from mono `samples`, starting at `*pos`: every channel of
/// a frame gets the same sample; past the end, silence. Returns true once every sample was played.
pub fn fill_output<T>(out: &mut [T], channels: usize, samples: &[f32], pos: &mut usize) -> bool
where
    T: cpal::SizedSample + cpal::FromSample<f32>,
{
    let channels = channels.max(1);
    for frame in out.chunks_mut(channels) {
        let v = samples.get(*pos).copied().unwrap_or(0.0).clamp(-1.0, 1.0);
        if *pos < samples.len() {
            *pos += 1;
        }
        let s = T::from_sample(v);
        frame.iter_mut().for_each(|x| *x = s);
    }
    *pos >= samples.len()
}

/// Decodes `path` to mono samples at `rate` Hz.
pub fn decode_for_output(path: &Path, rate: u32) -> Result<Vec<f32>, String> {
    let wav = cellm_encoders::audio::read_wav(path).map_err(|e| format!("Cannot play: {e}"))?;
    cellm_encoders::audio::resample::to_rate(&wav.mono(), wav.sample_rate, rate)
        .map_err(|e| format!("Cannot play {}: {e}", path.display()))
}

/// What the playback thread and the UI share.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    done: AtomicBool,
    error: Mutex<Option<String>>,
}

impl Shared {
    fn fail(&self, e: String) {
        if let Ok(mut slot) = self.error.lock() {
            slot.get_or_insert(e);
        }
        self.done.store(true, Ordering::SeqCst);
    }
}

/// One file playing. Dropping it (or [`Player::stop`]) stops the sound.
pub struct Player {
    pub path: PathBuf,
    shared: Arc<Shared>,
}

impl Player {
    /// Starts playing `path` on the default output device; a missing device is a plain error.
    pub fn start(path: &Path) -> Result<Self, String> {
        let host = cpal::default_host();
        let device = host
            .default_output_device()
            .ok_or_else(|| "No audio output device was found.".to_owned())?;
        let shared = Arc::new(Shared::default());
        let (s, p) = (shared.clone(), path.to_path_buf());
        std::thread::Builder::new()
            .name("cellm-player".into())
            .spawn(move || {
                if let Err(e) = play(&device, &p, &s) {
                    s.fail(e);
                }
                s.done.store(true, Ordering::SeqCst);
            })
            .map_err(|e| format!("Cannot start playback: {e}"))?;
        Ok(Self {
            path: path.to_path_buf(),
            shared,
        })
    }

    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }

    /// True once the file has played out, was stopped, or failed.
    pub fn is_done(&self) -> bool {
        self.shared.done.load(Ordering::SeqCst)
    }

    /// The error that ended playback, if any.
    pub fn error(&self) -> Option<String> {
        self.shared.error.lock().ok().and_then(|e| e.clone())
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The playback thread: decode, open the stream, wait until played out or stopped.
fn play(device: &cpal::Device, path: &Path, shared: &Arc<Shared>) -> Result<(), String> {
    let name = device.to_string();
    let supported = device
        .default_output_config()
        .map_err(|e| format!("The audio output \"{name}\" cannot play: {e}"))?;
    let config = supported.config();
    let channels = usize::from(config.channels);
    let samples = Arc::new(decode_for_output(path, config.sample_rate)?);
    if shared.stop.load(Ordering::SeqCst) {
        return Ok(());
    }
    let played = Arc::new(AtomicUsize::new(0));
    // Only a lost device ends playback at once; other stream errors (xruns, a backend hiccup
    // such as PulseAudio's ALSA plugin reporting EIO once) are kept and shown only if the sound
    // then stalls.
    let hiccup: Arc<Mutex<Option<String>>> = Arc::default();
    let on_error = {
        let (shared, hiccup) = (shared.clone(), hiccup.clone());
        move |e: cpal::Error| match e.kind() {
            cpal::ErrorKind::DeviceNotAvailable
            | cpal::ErrorKind::HostUnavailable
            | cpal::ErrorKind::StreamInvalidated => shared.fail(e.to_string()),
            cpal::ErrorKind::Xrun | cpal::ErrorKind::DeviceChanged => {}
            _ => {
                if let Ok(mut slot) = hiccup.lock() {
                    slot.get_or_insert(e.to_string());
                }
            }
        }
    };
    let timeout = Some(Duration::from_secs(2));
    macro_rules! stream {
        ($t:ty) => {{
            let (samples, played) = (samples.clone(), played.clone());
            let mut pos = 0usize;
            device.build_output_stream(
                config,
                move |out: &mut [$t], _: &cpal::OutputCallbackInfo| {
                    fill_output(out, channels, &samples, &mut pos);
                    played.store(pos, Ordering::SeqCst);
                },
                on_error,
                timeout,
            )
        }};
    }
    let stream = match supported.sample_format() {
        cpal::SampleFormat::F32 => stream!(f32),
        cpal::SampleFormat::I16 => stream!(i16),
        cpal::SampleFormat::U16 => stream!(u16),
        cpal::SampleFormat::I32 => stream!(i32),
        other => {
            return Err(format!(
                "The audio output \"{name}\" wants {other:?} samples, which cellm cannot play yet."
            ));
        }
    }
    .map_err(|e| format!("Cannot open the audio output \"{name}\": {e}"))?;
    stream
        .play()
        .map_err(|e| format!("Cannot start the audio output \"{name}\": {e}"))?;
    let (mut last, mut since) = (0, std::time::Instant::now());
    while !shared.stop.load(Ordering::SeqCst)
        && !shared.done.load(Ordering::SeqCst)
        && played.load(Ordering::SeqCst) < samples.len()
    {
        std::thread::sleep(Duration::from_millis(20));
        let now = played.load(Ordering::SeqCst);
        if now != last {
            (last, since) = (now, std::time::Instant::now());
        } else if since.elapsed() > Duration::from_secs(2) {
            let why = hiccup.lock().ok().and_then(|h| h.clone());
            return Err(format!(
                "The audio output \"{name}\" stopped playing{}",
                why.map(|w| format!(": {w}"))
                    .unwrap_or_else(|| ".".to_owned())
            ));
        }
    }
    if !shared.stop.load(Ordering::SeqCst) {
        // Let the device drain its last buffer before the stream goes.
        std::thread::sleep(Duration::from_millis(150));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mono_goes_to_every_channel_then_silence() {
        let samples = [0.5, -0.25, 1.5];
        let mut pos = 0;
        // Stereo, two frames per block.
        let mut out = [9.0f32; 4];
        assert!(!fill_output(&mut out, 2, &samples, &mut pos));
        assert_eq!(out, [0.5, 0.5, -0.25, -0.25]);
        assert_eq!(pos, 2);
        // The last sample is clamped, the rest of the block is silence, and it reports the end.
        assert!(fill_output(&mut out, 2, &samples, &mut pos));
        assert_eq!(out, [1.0, 1.0, 0.0, 0.0]);
        assert_eq!(pos, 3);
        // Past the end it stays silent and stays done.
        assert!(fill_output(&mut out, 2, &samples, &mut pos));
        assert_eq!(out, [0.0; 4]);
    }

    #[test]
    fn integer_formats_and_odd_channel_counts() {
        let samples = [1.0, -1.0, 0.0];
        let mut pos = 0;
        let mut out = [7i16; 9]; // 3 channels x 3 frames
        assert!(fill_output(&mut out, 3, &samples, &mut pos));
        assert_eq!(&out[..3], &[i16::MAX; 3]);
        assert_eq!(&out[3..6], &[i16::MIN; 3]);
        assert_eq!(&out[6..], &[0; 3]);
        let mut pos = 0;
        let mut out = [0u16; 2];
        fill_output(&mut out, 1, &[0.0, 1.0], &mut pos);
        assert_eq!(out[0], 32768);
        assert_eq!(out[1], u16::MAX);
    }

    #[test]
    fn decodes_the_fixture_to_the_device_rate() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/media/mono16k_pcm16.wav");
        let at16 = decode_for_output(&path, 16000).unwrap();
        let at48 = decode_for_output(&path, 48000).unwrap();
        assert_eq!(at48.len(), at16.len() * 3);
        assert!(at48.iter().any(|v| v.abs() > 0.01));
        assert!(decode_for_output(Path::new("/no/such.wav"), 48000).is_err());
    }

    /// Plays the fixture on the default output. Needs a device, e.g. a PulseAudio null sink:
    /// `pulseaudio -n -D -L module-native-protocol-unix -L "module-null-sink sink_name=out"`,
    /// `pcm.!default pulse` in ~/.asoundrc, then (`parec -d out.monitor` hears it)
    /// `cargo test --release -p cellm-app --lib plays_on_the_default_output -- --ignored`
    #[test]
    #[ignore]
    fn plays_on_the_default_output() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/media/mono16k_pcm16.wav");
        let dev = cpal::default_host().default_output_device().unwrap();
        eprintln!("device {dev}: {:?}", dev.default_output_config());
        let p = Player::start(&path).unwrap();
        let t = std::time::Instant::now();
        while !p.is_done() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(p.error(), None);
        assert!(p.is_done());
        eprintln!("played in {:.2} s", t.elapsed().as_secs_f32());
    }
}
