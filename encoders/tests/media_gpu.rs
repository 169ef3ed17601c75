//! `MediaEncoders` with the towers' GPU copies (`TowersGpu`, as the app and `cellm run` use them
//! when the session runs on the GPU) against the CPU towers, on files: an image at the default
//! budget, an image matched to a token count, and a WAV (skips where no GPU adapter exists).

#![cfg(feature = "gpu")]

use cellm_convert::{ConvertOptions, Profile, convert, open_source};
use cellm_encoders::MediaEncoders;
use cellm_encoders::gpu::TowersGpu;
use cellm_engine::format::CellmFile;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(rel)
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn media_encoders_on_the_gpu_match_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.cellm");
    let source = open_source(&testdata("tiny-gemma4")).unwrap();
    convert(
        source.as_ref(),
        &path,
        &ConvertOptions::new(Profile::F32),
        &mut |_| {},
    )
    .unwrap();
    let file = CellmFile::open(&path).unwrap();
    let cpu = MediaEncoders::load(&file).unwrap();
    let towers = match TowersGpu::load(&cpu) {
        Ok(t) => Arc::new(t),
        Err(e) => return eprintln!("SKIP media GPU test: {e}"),
    };
    let gpu = MediaEncoders::load(&file).unwrap().with_gpu(towers);
    assert_eq!(cpu.device(), "cpu");
    assert!(gpu.device().starts_with("gpu: "), "{}", gpu.device());

    let image = testdata("media/photo_640x480.jpg");
    let (a, b) = (
        cpu.encode_image(&image).unwrap(),
        gpu.encode_image(&image).unwrap(),
    );
    assert_eq!(a.tokens, b.tokens);
    assert!(max_abs(&a.embeddings, &b.embeddings) < 1e-4, "image");

    let (a, b) = (
        cpu.encode_image_matching(&image, a.tokens).unwrap(),
        gpu.encode_image_matching(&image, a.tokens).unwrap(),
    );
    assert!(
        max_abs(&a.embeddings, &b.embeddings) < 1e-4,
        "matched image"
    );

    let wav = testdata("tiny-gemma4/tiny_audio.wav");
    let (a, b) = (
        cpu.encode_audio(&wav).unwrap(),
        gpu.encode_audio(&wav).unwrap(),
    );
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.tokens, y.tokens);
        assert!(max_abs(&x.embeddings, &y.embeddings) < 1e-3, "audio");
    }
}
