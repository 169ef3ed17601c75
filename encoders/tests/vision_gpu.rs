//! The vision tower on the GPU against the CPU tower, on testdata/tiny-gemma4 converted to f32
//! and int4, for images of several patch counts (skips where no GPU adapter exists).

#![cfg(feature = "gpu")]

use cellm_convert::{ConvertOptions, Profile, convert, open_source};
use cellm_encoders::vision::gpu::VisionGpu;
use cellm_encoders::vision::preprocess::{PreprocessedImage, preprocess_file};
use cellm_encoders::vision::tower::VisionTower;
use cellm_engine::format::CellmFile;
use cellm_engine::kernels::gpu::GpuContext;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(rel)
}

/// The test images: the fixture's own (540 patches, 60 soft tokens), a photo at budget 140, and
/// that photo with every 5th patch turned into padding (a patch count no pooling window or
/// workgroup divides, and pooling slots with fewer than 9 patches).
fn images() -> Vec<(&'static str, PreprocessedImage)> {
    let tiny = preprocess_file(&testdata("tiny-gemma4/tiny_image.png"), 70).unwrap();
    let wide = preprocess_file(&testdata("media/wide_517x333.png"), 140).unwrap();
    let mut ragged = wide.clone();
    let mut dropped = 0;
    for (i, p) in ragged.positions.iter_mut().enumerate() {
        if *p != (-1, -1) && i % 5 == 2 {
            *p = (-1, -1);
            dropped += 1;
        }
    }
    ragged.num_patches -= dropped;
    vec![
        ("tiny_image", tiny),
        ("wide_517x333", wide),
        ("ragged", ragged),
    ]
}

fn gpu() -> Option<Arc<GpuContext>> {
    match GpuContext::new() {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            eprintln!("SKIP vision GPU tests: {e}");
            None
        }
    }
}

/// (max |a - b|, ‖a − b‖ / ‖b‖).
fn errors(a: &[f32], b: &[f32]) -> (f32, f64) {
    assert_eq!(a.len(), b.len());
    let (mut num, mut den, mut max) = (0f64, 0f64, 0f32);
    for (x, y) in a.iter().zip(b) {
        max = max.max((x - y).abs());
        num += (*x as f64 - *y as f64).powi(2);
        den += (*y as f64).powi(2);
    }
    (max, (num / den.max(1e-30)).sqrt())
}

#[test]
fn vision_gpu_matches_cpu_tower() {
    let Some(ctx) = gpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let source = open_source(&testdata("tiny-gemma4")).unwrap();
    // (profile, max-abs bound, relative bound): int4 differs more because the CPU quantizes
    // its activations to int8 and the GPU multiplies f32 activations
    for (profile, max_abs, rel) in [(Profile::F32, 1e-4, 1e-5), (Profile::Int4, 2e-2, 5e-3)] {
        let path = dir.path().join(format!("tiny-{profile}.cellm"));
        convert(
            source.as_ref(),
            &path,
            &ConvertOptions::new(profile),
            &mut |_| {},
        )
        .unwrap();
        let file = CellmFile::open(&path).unwrap();
        let tower = VisionTower::load(&file).unwrap().expect("a vision tower");
        let gpu = VisionGpu::new(ctx.clone(), &tower).unwrap();
        let mut counts = Vec::new();
        for (name, image) in images() {
            let want = tower.encode(&image).unwrap();
            let got = gpu.encode(&tower, &image).unwrap();
            let (m, r) = errors(&got, &want);
            println!(
                "{profile} {name}: {} patches, {} soft tokens, max abs {m:.2e}, relative {r:.2e}",
                image.num_patches,
                want.len() / tower.output_dim()
            );
            assert!(got.iter().all(|v| v.is_finite()), "{profile} {name}");
            assert!(m < max_abs && r < rel, "{profile} {name}: max {m}, rel {r}");
            counts.push(image.num_patches);
        }
        assert!(
            counts.iter().any(|c| c % 9 != 0 && c % 64 != 0),
            "{counts:?}"
        );
    }
}

#[test]
fn vision_gpu_rejects_bad_input() {
    let Some(ctx) = gpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let source = open_source(&testdata("tiny-gemma4")).unwrap();
    let path = dir.path().join("tiny.cellm");
    convert(
        source.as_ref(),
        &path,
        &ConvertOptions::new(Profile::F32),
        &mut |_| {},
    )
    .unwrap();
    let file = CellmFile::open(&path).unwrap();
    let tower = VisionTower::load(&file).unwrap().unwrap();
    let gpu = VisionGpu::new(ctx, &tower).unwrap();
    let mut image = images().remove(0).1;
    image.pixel_values.pop();
    assert!(gpu.encode(&tower, &image).is_err());
    image.pixel_values.push(0.5);
    image.positions.iter_mut().for_each(|p| *p = (-1, -1));
    assert!(gpu.encode(&tower, &image).is_err());
}
