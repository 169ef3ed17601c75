//! WAV previews for the composer and the history: duration and a peak waveform, read on a
//! background thread (a recording can be large) and cached by path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};

/// Bars in a waveform preview.
pub const BARS: usize = 48;

#[derive(Clone, Debug, PartialEq)]
pub struct WavePreview {
    pub seconds: f32,
    pub sample_rate: u32,
    pub channels: u16,
    /// Peak magnitude (0..=1) of each of `BARS` equal slices.
    pub peaks: Vec<f32>,
}

/// The largest WAV the preview reads: an hour of 48 kHz stereo 16-bit PCM. Attachments are named
/// in chat files, which anything can edit; a larger file gets an error instead of a huge read.
pub const MAX_WAV_BYTES: u64 = 700 << 20;

/// Reads a PCM (8/16/24/32-bit integer) or 32-bit float WAV file.
pub fn read_wav(path: &Path) -> Result<WavePreview, String> {
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let len = std::fs::metadata(path).map_err(cannot)?.len();
    if len > MAX_WAV_BYTES {
        return Err(format!(
            "{} is {} MB, more than the {} MB a recording may have",
            path.display(),
            len >> 20,
            MAX_WAV_BYTES >> 20
        ));
    }
    let bytes = std::fs::read(path).map_err(cannot)?;
    parse_wav(&bytes)
}

pub fn parse_wav(bytes: &[u8]) -> Result<WavePreview, String> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a WAV file".to_owned());
    }
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u32_at =
        |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let mut fmt = None;
    let mut data = None;
    let mut pos = 12;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = u32_at(pos + 4) as usize;
        let body = pos + 8;
        let end = body.saturating_add(len).min(bytes.len());
        if id == b"fmt " && end - body >= 16 {
            fmt = Some((
                u16_at(body),
                u16_at(body + 2),
                u32_at(body + 4),
                u16_at(body + 14),
            ));
        } else if id == b"data" {
            data = Some(&bytes[body..end]);
        }
        pos = body.saturating_add(len + (len & 1));
    }
    let (format, channels, sample_rate, bits) = fmt.ok_or("the WAV file has no fmt chunk")?;
    let data = data.ok_or("the WAV file has no data chunk")?;
    // 0xFFFE (extensible) carries the real format further in; PCM and float are what we meet.
    let float = match (format, bits) {
        (1 | 0xFFFE, 8 | 16 | 24 | 32) => false,
        (3, 32) => true,
        _ => {
            return Err(format!(
                "unsupported WAV encoding (format {format}, {bits} bits)"
            ));
        }
    };
    if channels == 0 || sample_rate == 0 {
        return Err("the WAV header names no channels or no sample rate".to_owned());
    }
    let width = usize::from(bits / 8);
    let frame = width * usize::from(channels);
    let frames = data.len() / frame;
    let sample = |i: usize| -> f32 {
        let b = &data[i * width..(i + 1) * width];
        match (width, float) {
            (1, _) => (f32::from(b[0]) - 128.0) / 128.0,
            (2, _) => f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0,
            (3, _) => (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32 / 8_388_608.0,
            (_, true) => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            _ => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 / 2_147_483_648.0,
        }
    };
    let mut peaks = vec![0.0f32; BARS];
    if frames > 0 {
        for f in 0..frames {
            let bar = f * BARS / frames;
            for c in 0..usize::from(channels) {
                let v = sample(f * usize::from(channels) + c).abs().min(1.0);
                if v > peaks[bar] {
                    peaks[bar] = v;
                }
            }
        }
    }
    Ok(WavePreview {
        seconds: frames as f32 / sample_rate as f32,
        sample_rate,
        channels,
        peaks,
    })
}

/// Previews by path, filled by background reads.
pub struct WaveCache {
    map: HashMap<PathBuf, Result<WavePreview, String>>,
    tx: Sender<(PathBuf, Result<WavePreview, String>)>,
    rx: Receiver<(PathBuf, Result<WavePreview, String>)>,
}

impl Default for WaveCache {
    fn default() -> Self {
        let (tx, rx) = channel();
        Self {
            map: HashMap::new(),
            tx,
            rx,
        }
    }
}

impl WaveCache {
    /// The preview if it is ready; starts reading it otherwise.
    pub fn get(
        &mut self,
        path: &Path,
        ctx: &egui::Context,
    ) -> Option<&Result<WavePreview, String>> {
        while let Ok((p, r)) = self.rx.try_recv() {
            self.map.insert(p, r);
        }
        if !self.map.contains_key(path) {
            // A placeholder until the thread answers, so it is read only once.
            self.map
                .insert(path.to_path_buf(), Err(String::from("reading…")));
            let (tx, p, ctx) = (self.tx.clone(), path.to_path_buf(), ctx.clone());
            std::thread::spawn(move || {
                let r = read_wav(&p);
                let _ = tx.send((p, r));
                ctx.request_repaint();
            });
        }
        self.map.get(path)
    }
}

/// Draws the waveform bars and the duration.
pub fn show(ui: &mut egui::Ui, preview: &WavePreview, width: f32) {
    let height = 28.0;
    let (rect, _) = ui.allocate_exact_size(egui::vec2(width, height), egui::Sense::hover());
    let painter = ui.painter_at(rect);
    let color = super::theme::ACCENT;
    let step = width / BARS as f32;
    for (i, p) in preview.peaks.iter().enumerate() {
        let h = (p * height).max(2.0);
        let x = rect.left() + (i as f32 + 0.5) * step;
        painter.line_segment(
            [
                egui::pos2(x, rect.center().y - h / 2.0),
                egui::pos2(x, rect.center().y + h / 2.0),
            ],
            egui::Stroke::new((step * 0.6).max(1.0), color),
        );
    }
    let secs = preview.seconds;
    ui.weak(format!("{}:{:04.1}", (secs / 60.0) as u32, secs % 60.0));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav16(samples: &[i16], rate: u32) -> Vec<u8> {
        let mut b = Vec::new();
        let data_len = (samples.len() * 2) as u32;
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + data_len).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * 2).to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&data_len.to_le_bytes());
        for s in samples {
            b.extend_from_slice(&s.to_le_bytes());
        }
        b
    }

    #[test]
    fn duration_and_peaks_of_a_pcm16_file() {
        // 1 s at 16 kHz: silence, then a full-scale second half.
        let mut s = vec![0i16; 8000];
        s.extend(std::iter::repeat_n(i16::MIN, 8000));
        let p = parse_wav(&wav16(&s, 16000)).unwrap();
        assert!((p.seconds - 1.0).abs() < 1e-6);
        assert_eq!(p.peaks.len(), BARS);
        assert_eq!(p.peaks[0], 0.0);
        assert_eq!(p.peaks[BARS - 1], 1.0);
    }

    #[test]
    fn rejects_what_is_not_wav() {
        assert!(parse_wav(b"not a wav file at all").is_err());
        let mut truncated = wav16(&[1, 2, 3], 8000);
        truncated.truncate(30); // the fmt chunk is cut
        assert!(parse_wav(&truncated).is_err());
    }

    #[test]
    fn reads_the_committed_fixture() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/media/mono16k_pcm16.wav");
        let p = read_wav(&path).unwrap();
        assert_eq!((p.sample_rate, p.channels), (16000, 1));
        assert!(p.seconds > 0.5 && p.seconds < 5.0, "{}", p.seconds);
        assert!(p.peaks.iter().any(|&x| x > 0.01));
    }
}
