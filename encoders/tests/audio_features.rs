//! Log-mel features against transformers' Gemma4AudioFeatureExtractor (testdata/media, made by
//! testdata/make_media_refs.py).

use cellm_encoders::audio::{LogMelExtractor, load_wav_16k, read_wav};
use safetensors::SafeTensors;
use std::path::PathBuf;

fn media() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/media")
}

fn f32s(st: &SafeTensors, name: &str) -> Vec<f32> {
    let t = st.tensor(name).unwrap();
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Max abs difference over valid frames, and the frame counts.
fn compare(stem: &str, samples: &[f32], st: &SafeTensors) -> (f32, usize, usize) {
    let want = f32s(st, &format!("{stem}.features"));
    let mask = st.tensor(&format!("{stem}.mask")).unwrap().data().to_vec();
    let got = LogMelExtractor::new().extract(samples);
    assert_eq!(got.frames * 128, want.len(), "{stem}: frame count");
    for (i, (&m, g)) in mask.iter().zip(&got.mask).enumerate() {
        assert_eq!(m != 0, *g, "{stem}: mask of frame {i}");
    }
    let err = got
        .values
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    (err, got.frames, want.len() / 128)
}

#[test]
fn features_match_reference_at_16k() {
    let bytes = std::fs::read(media().join("audio_refs.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for stem in ["mono16k_pcm16", "mono16k_pcm32", "mono16k_u8"] {
        let samples = load_wav_16k(&media().join(format!("{stem}.wav"))).unwrap();
        // The WAV decoder must give the reference's waveform exactly.
        let wave = f32s(&st, &format!("{stem}.waveform16k"));
        assert_eq!(samples.len(), wave.len());
        let werr = samples
            .iter()
            .zip(&wave)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(werr < 1e-7, "{stem}: waveform differs by {werr}");
        let (err, ..) = compare(stem, &samples, &st);
        assert!(err < 1e-3, "{stem}: features differ by {err}");
    }
}

#[test]
fn features_from_reference_waveforms_match() {
    // Same extractor on the reference's own 16 kHz waveform (isolates the features from resampling).
    let bytes = std::fs::read(media().join("audio_refs.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for stem in [
        "stereo44k_pcm16",
        "stereo8k_pcm16",
        "mono48k_float",
        "mono22k_pcm24",
    ] {
        let wave = f32s(&st, &format!("{stem}.waveform16k"));
        let (err, ..) = compare(stem, &wave, &st);
        assert!(err < 1e-3, "{stem}: features differ by {err}");
    }
}

#[test]
fn resampled_inputs_stay_close_to_reference() {
    // The reference resamples with SciPy's resample_poly; ours is the same filter.
    let bytes = std::fs::read(media().join("audio_refs.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for stem in [
        "stereo44k_pcm16",
        "stereo8k_pcm16",
        "mono48k_float",
        "mono22k_pcm24",
    ] {
        let samples = load_wav_16k(&media().join(format!("{stem}.wav"))).unwrap();
        let wave = f32s(&st, &format!("{stem}.waveform16k"));
        assert_eq!(samples.len(), wave.len(), "{stem}: resampled length");
        let werr = samples
            .iter()
            .zip(&wave)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let (err, ..) = compare(stem, &samples, &st);
        eprintln!("{stem}: waveform max diff {werr:.2e}, log-mel max diff {err:.2e}");
        assert!(werr < 1e-5, "{stem}: resampled waveform differs by {werr}");
        assert!(err < 1e-3, "{stem}: features differ by {err}");
    }
}

#[test]
fn bad_audio_inputs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Zero-length WAV.
    let empty = dir.path().join("empty.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    hound::WavWriter::create(&empty, spec)
        .unwrap()
        .finalize()
        .unwrap();
    let e = read_wav(&empty).unwrap_err().to_string();
    assert!(e.contains("no audio"), "{e}");
    // One-sample WAV: valid, gives no full frame but no panic.
    let one = dir.path().join("one.wav");
    let mut w = hound::WavWriter::create(&one, spec).unwrap();
    w.write_sample(1000i16).unwrap();
    w.finalize().unwrap();
    let s = load_wav_16k(&one).unwrap();
    let f = LogMelExtractor::new().extract(&s);
    assert!(f.mask.iter().all(|m| !m) || f.frames <= 1);
    // Not a WAV at all.
    let junk = dir.path().join("junk.wav");
    std::fs::write(&junk, b"RIFF\x00\x00definitely not wave data").unwrap();
    let e = read_wav(&junk).unwrap_err().to_string();
    assert!(e.contains("not a readable WAV"), "{e}");
    // Missing file.
    let e = read_wav(&dir.path().join("missing.wav"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot read"), "{e}");
}

#[test]
fn long_audio_is_refused_or_split() {
    // Two hours at 8 kHz stereo: refused from the header, before reading samples.
    let dir = tempfile::tempdir().unwrap();
    let long = dir.path().join("long.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 8_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&long, spec).unwrap();
    {
        let mut i16w = w.get_i16_writer(2 * 8_000 * 7_200);
        for _ in 0..2 * 8_000 * 7_200 {
            i16w.write_sample(0i16);
        }
        i16w.flush().unwrap();
    }
    w.finalize().unwrap();
    let e = read_wav(&long).unwrap_err().to_string();
    assert!(e.contains("longer than"), "{e}");
    // 70 s of samples split into 30 s clips.
    let clips = LogMelExtractor::new().extract_clips(&vec![0.01f32; 16_000 * 70]);
    assert_eq!(clips.len(), 3);
}
