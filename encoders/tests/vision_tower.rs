//! The vision tower against transformers' activations of testdata/tiny-gemma4 (f32 weights,
//! eager attention; see testdata/README.md), converted to .cellm by cellm-convert.

use cellm_convert::{ConvertOptions, Profile, convert, open_source};
use cellm_encoders::vision::preprocess::{self, PreprocessedImage};
use cellm_encoders::vision::tower::{VisionActivations, VisionTower};
use cellm_engine::format::CellmFile;
use std::path::{Path, PathBuf};

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/tiny-gemma4")
}

struct Refs {
    st: Vec<u8>,
}

impl Refs {
    fn load() -> Self {
        Self {
            st: std::fs::read(tiny().join("reference.safetensors")).unwrap(),
        }
    }
    fn f32(&self, name: &str) -> Vec<f32> {
        let st = safetensors::SafeTensors::deserialize(&self.st).unwrap();
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
    fn i64(&self, name: &str) -> Vec<i64> {
        let st = safetensors::SafeTensors::deserialize(&self.st).unwrap();
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::I64, "{name}");
        t.data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }
    /// The reference processor output as a PreprocessedImage.
    fn image(&self) -> PreprocessedImage {
        let pixel_values = self.f32("pixel_values");
        let ids = self.i64("image_position_ids");
        let positions: Vec<(i32, i32)> = ids
            .chunks_exact(2)
            .map(|p| (p[0] as i32, p[1] as i32))
            .collect();
        let num_patches = positions.iter().filter(|p| p.0 >= 0).count();
        let gw = positions.iter().map(|p| p.0).max().unwrap() as usize + 1;
        let gh = positions.iter().map(|p| p.1).max().unwrap() as usize + 1;
        PreprocessedImage {
            max_patches: positions.len(),
            pixel_values,
            positions,
            num_patches,
            width: gw * 16,
            height: gh * 16,
        }
    }
}

fn convert_tiny(dir: &Path, profile: Profile) -> PathBuf {
    let source = open_source(&tiny()).unwrap();
    let out = dir.join(format!("tiny-{profile}.cellm"));
    convert(
        source.as_ref(),
        &out,
        &ConvertOptions::new(profile),
        &mut |_| {},
    )
    .unwrap();
    out
}

/// ‖a − b‖ / ‖b‖ over all values.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut num, mut den) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        num += (*x as f64 - *y as f64).powi(2);
        den += (*y as f64).powi(2);
    }
    (num / den.max(1e-30)).sqrt()
}

fn compare(acts: &VisionActivations, refs: &Refs, h: usize, n_real: usize) -> Vec<(String, f64)> {
    let mut out = vec![(
        "vision_patch_embeddings".to_string(),
        rel_err(
            &acts.patch_embeddings,
            &refs.f32("vision_patch_embeddings")[..n_real * h],
        ),
    )];
    for (l, got) in acts.layer_out.iter().enumerate() {
        let name = format!("vision_layer_out.{l}");
        out.push((name.clone(), rel_err(got, &refs.f32(&name)[..n_real * h])));
    }
    out.push((
        "vision_soft_tokens".into(),
        rel_err(&acts.soft_tokens, &refs.f32("vision_soft_tokens")),
    ));
    out.push((
        "vision_embedded".into(),
        rel_err(&acts.embedded, &refs.f32("vision_embedded")),
    ));
    out
}

#[test]
fn vision_tower_matches_transformers_f32_and_reports_q8_q4() {
    let refs = Refs::load();
    let image = refs.image();
    assert_eq!(image.num_patches, 540);
    let dir = tempfile::tempdir().unwrap();
    for profile in [Profile::F32, Profile::Int8, Profile::Int4] {
        let path = convert_tiny(dir.path(), profile);
        let file = CellmFile::open(&path).unwrap();
        let tower = VisionTower::load(&file)
            .unwrap()
            .expect("tiny-gemma4 has a vision tower");
        let h = tower.config.hidden;
        assert_eq!(tower.soft_tokens(&image), 60);
        let acts = tower.forward(&image, true).unwrap();
        assert_eq!(acts.layer_out.len(), 2);
        assert_eq!(acts.embedded.len(), 60 * tower.output_dim());
        let errs = compare(&acts, &refs, h, 540);
        for (name, e) in &errs {
            println!("{profile}: {name}: relative error {e:.3e}");
            if profile == Profile::F32 {
                assert!(*e < 1e-3, "{profile} {name}: relative error {e}");
            }
        }
        // encode() gives the same as forward()
        if profile == Profile::F32 {
            assert_eq!(tower.encode(&image).unwrap(), acts.embedded);
        }
    }
}

#[test]
fn vision_preprocess_matches_reference_pixel_values() {
    let refs = Refs::load();
    let want = refs.image();
    let got = preprocess::preprocess_file(&tiny().join("tiny_image.png"), 70).unwrap();
    assert_eq!(got.positions, want.positions);
    assert_eq!(got.num_patches, want.num_patches);
    let max = got
        .pixel_values
        .iter()
        .zip(&want.pixel_values)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max < 1e-4, "max abs {max}");
}

#[test]
fn vision_tower_absent_is_none() {
    // tiny-gemma3 has no vision config
    let dir = tempfile::tempdir().unwrap();
    let source = open_source(&tiny().join("../tiny-gemma3")).unwrap();
    let out = dir.path().join("g3.cellm");
    convert(
        source.as_ref(),
        &out,
        &ConvertOptions::new(Profile::F32),
        &mut |_| {},
    )
    .unwrap();
    let file = CellmFile::open(&out).unwrap();
    assert!(VisionTower::load(&file).unwrap().is_none());
}
