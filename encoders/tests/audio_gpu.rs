//! The audio tower on the GPU against the CPU tower on the tiny Gemma 4 fixture: the reference
//! clip, padded and truncated variants (frame counts that are not multiples of the attention
//! chunk, of 4 or of the workgroup sizes), the media WAVs, and a quantized conversion. Skips
//! where no GPU adapter exists.

#![cfg(feature = "gpu")]

use cellm_convert::{ConvertOptions, Profile, convert, open_source};
use cellm_encoders::audio::tower::gpu::AudioGpu;
use cellm_encoders::audio::{AudioTower, LogMelExtractor, LogMelFeatures, load_wav_16k};
use cellm_engine::format::CellmFile;
use cellm_engine::kernels::gpu::GpuContext;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(name)
}

/// One context for the test binary, or None (with a note) where there is no adapter.
fn ctx() -> Option<Arc<GpuContext>> {
    static CTX: OnceLock<Option<Arc<GpuContext>>> = OnceLock::new();
    CTX.get_or_init(|| match GpuContext::new() {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            eprintln!("SKIP audio GPU tests: {e}");
            None
        }
    })
    .clone()
}

fn convert_fixture(profile: Profile, dir: &Path) -> PathBuf {
    let out = dir.join(format!("{}.cellm", profile.name()));
    let source = open_source(&testdata("tiny-gemma4")).expect("open source");
    convert(&*source, &out, &ConvertOptions::new(profile), &mut |_| {}).expect("convert");
    out
}

/// (max |a − b|, ‖a − b‖ / ‖b‖).
fn errors(got: &[f32], want: &[f32]) -> (f32, f64) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let (mut num, mut den, mut max) = (0f64, 0f64, 0f32);
    for (&a, &b) in got.iter().zip(want) {
        max = max.max((a - b).abs());
        num += ((a - b) as f64).powi(2);
        den += (b as f64).powi(2);
    }
    (max, (num / den.max(1e-30)).sqrt())
}

/// The clips the tests encode: the fixture's clip, the same with invalid leading frames, with
/// 13 invalid padding frames, cut to 97 frames (25 sub-sampled frames, the last from a partial group of 4), and every
/// media WAV.
fn clips() -> Vec<(String, LogMelFeatures)> {
    let ex = LogMelExtractor::new();
    let base = ex.extract(&load_wav_16k(&testdata("tiny-gemma4/tiny_audio.wav")).unwrap());
    let mut padded = base.clone();
    padded.values.extend(std::iter::repeat_n(0.0, 13 * 128));
    padded.mask.extend(std::iter::repeat_n(false, 13));
    padded.frames += 13;
    let cut = 97.min(base.frames);
    let truncated = LogMelFeatures {
        frames: cut,
        values: base.values[..cut * 128].to_vec(),
        mask: base.mask[..cut].to_vec(),
    };
    // Invalid leading frames: the first sub-sampled queries see no valid key at all.
    let mut late = base.clone();
    late.mask[..8].fill(false);
    let mut out = vec![
        ("tiny_audio, first 8 frames invalid".to_string(), late),
        ("tiny_audio".to_string(), base),
        ("tiny_audio+13 invalid".to_string(), padded),
        (format!("tiny_audio[..{cut}]"), truncated),
    ];
    let mut wavs: Vec<PathBuf> = std::fs::read_dir(testdata("media"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wav"))
        .collect();
    wavs.sort();
    for p in wavs {
        let samples = load_wav_16k(&p).unwrap();
        for (i, clip) in ex.extract_clips(&samples).into_iter().enumerate() {
            let name = p.file_name().unwrap().to_string_lossy();
            out.push((format!("{name}#{i}"), clip));
        }
    }
    out
}

/// Encodes every clip on both backends and checks the GPU against the CPU.
fn compare(profile: Profile, max_abs: f32, max_rel: f64) {
    let Some(ctx) = ctx() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = CellmFile::open(convert_fixture(profile, dir.path())).unwrap();
    let tower = AudioTower::load(&file).unwrap().expect("audio tower");
    let gpu = AudioGpu::new(ctx, &tower).unwrap();
    assert_eq!(gpu.text_hidden(), tower.text_hidden().unwrap());
    for (name, clip) in clips() {
        let want = tower.encode(&clip).unwrap();
        let got = gpu.encode(&clip).unwrap();
        let (abs, rel) = errors(&got, &want);
        eprintln!(
            "{profile} {name}: {} frames -> {} tokens, max abs {abs:.2e}, rel {rel:.2e}",
            clip.frames,
            want.len() / gpu.text_hidden()
        );
        assert!(abs < max_abs && rel < max_rel, "{profile} {name}");
    }
}

#[test]
fn audio_gpu_matches_cpu_f32() {
    compare(Profile::F32, 1e-3, 1e-4);
}

#[test]
fn audio_gpu_matches_cpu_int4() {
    // The CPU quantizes activations to int8 for q4/q8 weights, the GPU multiplies f32
    // activations, so the two differ by about the activation quantization.
    compare(Profile::Int4, 0.1, 2e-2);
}

#[test]
fn audio_gpu_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<AudioGpu>();
}

#[test]
fn audio_gpu_degenerate_inputs() {
    let Some(ctx) = ctx() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = CellmFile::open(convert_fixture(Profile::F32, dir.path())).unwrap();
    let tower = AudioTower::load(&file).unwrap().unwrap();
    let gpu = AudioGpu::new(ctx, &tower).unwrap();
    let empty = LogMelFeatures {
        frames: 0,
        values: vec![],
        mask: vec![],
    };
    assert!(gpu.encode(&empty).unwrap().is_empty());
    // Every frame invalid: no token, as on the CPU.
    let silent = LogMelFeatures {
        frames: 8,
        values: vec![0.5; 8 * 128],
        mask: vec![false; 8],
    };
    assert_eq!(gpu.encode(&silent).unwrap(), tower.encode(&silent).unwrap());
    let broken = LogMelFeatures {
        frames: 3,
        values: vec![0.0; 10],
        mask: vec![true; 3],
    };
    assert!(gpu.encode(&broken).is_err());
}
