//! Audio tower parity against transformers on the tiny Gemma 4 fixture
//! (testdata/tiny-gemma4/reference.safetensors, see testdata/README.md).

use cellm_convert::{ConvertOptions, Profile, convert, open_source};
use cellm_encoders::audio::tower::AudioTrace;
use cellm_encoders::audio::{AudioTower, LogMelExtractor, LogMelFeatures, encode_audio_file};
use cellm_engine::format::CellmFile;
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(name)
}

fn convert_to(input: &Path, profile: Profile, dir: &Path) -> PathBuf {
    let out = dir.join(format!("{}.cellm", profile.name()));
    let source = open_source(input).expect("open source");
    convert(&*source, &out, &ConvertOptions::new(profile), &mut |_| {}).expect("convert");
    out
}

struct Reference {
    bytes: Vec<u8>,
}

impl Reference {
    fn load() -> Self {
        let bytes = std::fs::read(testdata("tiny-gemma4/reference.safetensors")).unwrap();
        Self { bytes }
    }

    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }

    fn f32s(&self, name: &str) -> Vec<f32> {
        let st = self.st();
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    fn mask(&self, name: &str) -> Vec<bool> {
        let st = self.st();
        st.tensor(name)
            .unwrap()
            .data()
            .iter()
            .map(|&b| b != 0)
            .collect()
    }

    fn features(&self) -> LogMelFeatures {
        let values = self.f32s("input_features");
        let mask = self.mask("input_features_mask");
        LogMelFeatures {
            frames: mask.len(),
            values,
            mask,
        }
    }
}

/// ‖a − b‖ / ‖b‖.
fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let (mut num, mut den) = (0f64, 0f64);
    for (&a, &b) in got.iter().zip(want) {
        num += ((a - b) as f64).powi(2);
        den += (b as f64).powi(2);
    }
    (num / den.max(1e-30)).sqrt()
}

/// Runs the tower of a `profile` conversion of the fixture on the reference features.
fn run_profile(profile: Profile) -> (Vec<f32>, AudioTrace) {
    let dir = tempfile::tempdir().unwrap();
    let path = convert_to(&testdata("tiny-gemma4"), profile, dir.path());
    let file = CellmFile::open(&path).unwrap();
    let tower = AudioTower::load(&file)
        .unwrap()
        .expect("fixture has an audio tower");
    let mut trace = AudioTrace::default();
    let emb = tower
        .encode_traced(&Reference::load().features(), Some(&mut trace))
        .unwrap();
    (emb, trace)
}

#[test]
fn audio_tower_matches_reference_f32() {
    let r = Reference::load();
    let (emb, trace) = run_profile(Profile::F32);
    assert_eq!(trace.mask, r.mask("audio_subsample_mask"));
    assert_eq!(trace.mask, r.mask("audio_tower_mask"));
    let stages = [
        ("audio_subsample_out", &trace.subsample),
        ("audio_layer_out.0", &trace.layers[0]),
        ("audio_layer_out.1", &trace.layers[1]),
        ("audio_tower_out", &trace.tower_out),
        ("audio_embedded", &emb),
    ];
    for (name, got) in stages {
        let e = rel_err(got, &r.f32s(name));
        eprintln!("f32 {name}: relative error {e:.2e}");
        assert!(e < 1e-3, "{name}: relative error {e}");
    }
}

#[test]
fn audio_tower_quantized_profiles() {
    let r = Reference::load();
    let want = r.f32s("audio_embedded");
    for (profile, limit) in [
        (Profile::F16, 1e-2),
        (Profile::Int8, 5e-2),
        (Profile::Int4, 0.4),
    ] {
        let (emb, trace) = run_profile(profile);
        let tower = rel_err(&trace.tower_out, &r.f32s("audio_tower_out"));
        let e = rel_err(&emb, &want);
        eprintln!("{profile}: audio_tower_out rel err {tower:.2e}, audio_embedded rel err {e:.2e}");
        assert!(e < limit, "{profile}: relative error {e}");
    }
}

#[test]
fn audio_features_from_fixture_waveform_match() {
    let r = Reference::load();
    let got = LogMelExtractor::new().extract(&r.f32s("audio_waveform"));
    let want = r.features();
    assert_eq!(got.frames, want.frames);
    assert_eq!(got.mask, want.mask);
    let err = got
        .values
        .iter()
        .zip(&want.values)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("features max abs error {err:.2e}");
    assert!(err < 1e-3, "features differ by {err}");
}

#[test]
fn audio_file_gives_reference_soft_tokens() {
    let r = Reference::load();
    let dir = tempfile::tempdir().unwrap();
    let path = convert_to(&testdata("tiny-gemma4"), Profile::F32, dir.path());
    let file = CellmFile::open(&path).unwrap();
    let tower = AudioTower::load(&file).unwrap().unwrap();
    let media = encode_audio_file(&tower, &testdata("tiny-gemma4/tiny_audio.wav")).unwrap();
    assert_eq!(media.len(), 1);
    assert_eq!(media[0].tokens, 25);
    let e = rel_err(&media[0].embeddings, &r.f32s("audio_embedded"));
    assert!(e < 1e-3, "relative error {e}");

    // Padding frames marked invalid change nothing in the valid soft tokens.
    let mut feats = r.features();
    let extra = 13;
    feats.values.extend(std::iter::repeat_n(0.0, extra * 128));
    feats.mask.extend(std::iter::repeat_n(false, extra));
    feats.frames += extra;
    let padded = tower.encode(&feats).unwrap();
    let e = rel_err(&padded, &media[0].embeddings);
    assert!(e < 1e-6, "padding changed the tokens by {e}");

    // Degenerate input: no frames gives no tokens; inconsistent features are an error.
    let empty = LogMelFeatures {
        frames: 0,
        values: vec![],
        mask: vec![],
    };
    assert!(tower.encode(&empty).unwrap().is_empty());
    let broken = LogMelFeatures {
        frames: 3,
        values: vec![0.0; 10],
        mask: vec![true; 3],
    };
    assert!(tower.encode(&broken).is_err());

    // A one-sample WAV is too short for a token: a clear error, no panic.
    let wav = dir.path().join("one.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&wav, spec).unwrap();
    w.write_sample(1000i16).unwrap();
    w.finalize().unwrap();
    assert!(encode_audio_file(&tower, &wav).is_err());
}

#[test]
fn text_only_model_has_no_audio_tower() {
    let dir = tempfile::tempdir().unwrap();
    let path = convert_to(&testdata("tiny-gemma3"), Profile::F32, dir.path());
    let file = CellmFile::open(&path).unwrap();
    assert!(AudioTower::load(&file).unwrap().is_none());
}
