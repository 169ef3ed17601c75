//! `--profile auto` on the tiny Gemma 3 fixture: the target holds, the file shrinks, a zero
//! target keeps everything float; and the scan's shortcuts (overrides, mid-stack restarts, the
//! vocabulary subset) agree with plain full evaluations.

use cellm_convert::fidelity::{FidelityOptions, compare_files};
use cellm_convert::quant::auto::{AutoOptions, AutoReport, Level, convert_auto};
use cellm_convert::quant::sensitivity::{EncodedCache, Evaluator};
use cellm_convert::{ConvertOptions, Profile, convert, open_source};
use cellm_engine::format::CellmFile;
use cellm_engine::kv_cache::{KvCache, KvPrecision};
use cellm_engine::models::{self, weights::TensorOverrides};
use cellm_engine::session::{Prompt, Session, SessionOptions};
use cellm_engine::tensor::DType;
use std::path::{Path, PathBuf};

fn fixture() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/tiny-gemma3");
    if p.join("config.json").is_file() {
        Some(p)
    } else {
        println!("note: {} is absent; skipping", p.display());
        None
    }
}

fn auto(dir: &Path, out: &Path, target: f64) -> AutoReport {
    let source = open_source(dir).unwrap();
    let mut o = AutoOptions::new(target);
    o.threads = Some(2);
    o.plot_points = false;
    convert_auto(
        source.as_ref(),
        out,
        &ConvertOptions::new(Profile::Auto),
        &o,
        &mut |_| {},
    )
    .unwrap()
}

fn f16_size(dir: &Path, tmp: &Path) -> u64 {
    let source = open_source(dir).unwrap();
    let out = tmp.join("f16.cellm");
    convert(
        source.as_ref(),
        &out,
        &ConvertOptions::new(Profile::F16),
        &mut |_| {},
    )
    .unwrap()
    .file_bytes
}

#[test]
fn auto_meets_the_target_and_is_smaller_than_f16() {
    let Some(dir) = fixture() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let f16 = f16_size(&dir, tmp.path());
    for target in [0.01, 0.05] {
        let out = tmp.path().join(format!("auto-{target}.cellm"));
        let r = auto(&dir, &out, target);
        let f = r.fidelity.clone().unwrap();
        assert!(f.kl_mean <= target, "target {target}: KL {}", f.kl_mean);
        assert!(r.file_bytes < f16, "{} >= f16 {f16}", r.file_bytes);
        assert!(r.mix.contains_key("int8") || r.mix.contains_key("int4"));
        // The header says what was done, and the written file's KL is what was stored.
        let file = CellmFile::open(&out).unwrap();
        file.verify_checksums().unwrap();
        let h = file.header();
        assert_eq!(h.quantization.profile, "auto");
        let fid = h.fidelity.as_ref().unwrap();
        assert_eq!(fid["kl_mean"].as_f64().unwrap(), f.kl_mean);
        assert_eq!(fid["auto"]["target_kl"].as_f64().unwrap(), target);
        assert_eq!(fid["auto"]["scan"].as_array().unwrap().len(), r.scan.len());
        for (name, level) in &r.plan {
            let e = file.tensor_entry(name).unwrap();
            assert_eq!(e.dtype.name(), level.replace("int", "q"), "{name}");
        }
        // An independent measurement of the file agrees.
        let again = cellm_convert::fidelity::measure(
            open_source(&dir).unwrap().as_ref(),
            &out,
            &FidelityOptions {
                max_positions: r.verify_positions,
                ..FidelityOptions::default()
            },
        )
        .unwrap();
        assert!((again.kl_mean - f.kl_mean).abs() < 1e-9);
    }
}

#[test]
fn a_zero_target_keeps_everything_float() {
    let Some(dir) = fixture() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("auto0.cellm");
    let r = auto(&dir, &out, 0.0);
    assert_eq!(r.fidelity.unwrap().kl_mean, 0.0);
    let file = CellmFile::open(&out).unwrap();
    assert!(file.tensors().iter().all(|t| t.dtype == DType::F32));
    // A target just above f16's own KL gives f16 candidates (no int8 / int4).
    let f16_kl = r
        .points
        .iter()
        .find(|p| p.label == "f16")
        .map(|p| p.kl)
        .unwrap();
    let out = tmp.path().join("auto-tiny.cellm");
    let r = auto(&dir, &out, f16_kl * 1.01);
    assert_eq!(r.mix.keys().collect::<Vec<_>>(), vec!["f16"]);
    let file = CellmFile::open(&out).unwrap();
    assert!(
        file.tensors()
            .iter()
            .all(|t| matches!(t.dtype, DType::F16 | DType::F32))
    );
}

#[test]
fn scan_shortcuts_match_full_evaluations() {
    let Some(dir) = fixture() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let source = open_source(&dir).unwrap();
    let reference = tmp.path().join("ref.cellm");
    convert(
        source.as_ref(),
        &reference,
        &ConvertOptions::new(Profile::F32),
        &mut |_| {},
    )
    .unwrap();
    let file = CellmFile::open(&reference).unwrap();
    let session = Session::load(&reference, SessionOptions::default()).unwrap();
    let text = "The quick brown fox jumps over the lazy dog. It was a bright cold day in April.";
    let ids = session.tokenize(&Prompt::Raw(text.into())).unwrap();
    let ev = Evaluator::new(&file, vec![ids.clone()], Some(2), &mut |_, _| {}).unwrap();
    let n = ev.positions();
    assert_eq!(n, ids.len());

    // No overrides: the reference itself.
    let none = TensorOverrides::new();
    assert!(ev.kl(&none, n, None).unwrap().mean < 1e-9);

    // One layer-3 tensor at int4: starting at layer 3 from the reference's residual stream gives
    // the same KL as the full run.
    let name = "model.layers.3.mlp.up_proj.weight";
    let mut enc = EncodedCache::default();
    let mut ov = TensorOverrides::new();
    enc.apply(&file, &mut ov, name, DType::Q4, 32).unwrap();
    let full = ev.kl(&ov, n, None).unwrap();
    let mid = ev.kl(&ov, n, Some(3)).unwrap();
    assert!(full.mean > 1e-6);
    assert!(
        (full.mean - mid.mean).abs() <= 1e-6 * full.mean,
        "{full:?} vs {mid:?}"
    );

    // The same tensor written into a real file and measured by full logits (the tiny
    // vocabulary is kept whole by the subset, so they agree to rounding).
    let one = tmp.path().join("one.cellm");
    let mut opts = ConvertOptions::new(Profile::F32);
    opts.tensor_dtypes.insert(
        name.to_string(),
        cellm_convert::quant::TensorDecision {
            dtype: DType::Q4,
            group_size: 32,
        },
    );
    convert(source.as_ref(), &one, &opts, &mut |_| {}).unwrap();
    let exact = compare_files(
        &reference,
        &one,
        &FidelityOptions {
            calibration_text: text.into(),
            ..FidelityOptions::default()
        },
    )
    .unwrap();
    assert_eq!(exact.positions, n);
    assert!(
        (exact.kl_mean - full.mean).abs() <= 1e-3 * exact.kl_mean,
        "exact {} vs scan {}",
        exact.kl_mean,
        full.mean
    );

    // The embedding at int8 (also the tied LM head, whose input the engine quantizes).
    let head = ev.head().to_string();
    let mut ov = TensorOverrides::new();
    enc.apply(&file, &mut ov, &head, DType::Q8, 32).unwrap();
    let scan = ev.kl(&ov, n, None).unwrap();
    let emb = tmp.path().join("emb.cellm");
    let mut opts = ConvertOptions::new(Profile::F32);
    opts.tensor_dtypes.insert(
        head.clone(),
        cellm_convert::quant::TensorDecision {
            dtype: DType::Q8,
            group_size: 32,
        },
    );
    convert(source.as_ref(), &emb, &opts, &mut |_| {}).unwrap();
    let exact = compare_files(
        &reference,
        &emb,
        &FidelityOptions {
            calibration_text: text.into(),
            ..FidelityOptions::default()
        },
    )
    .unwrap();
    assert!(
        (exact.kl_mean - scan.mean).abs() <= 1e-3 * exact.kl_mean,
        "exact {} vs scan {}",
        exact.kl_mean,
        scan.mean
    );
}

#[test]
fn overrides_replace_file_tensors() {
    let Some(dir) = fixture() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let source = open_source(&dir).unwrap();
    let (a, b) = (tmp.path().join("f32.cellm"), tmp.path().join("int8.cellm"));
    convert(
        source.as_ref(),
        &a,
        &ConvertOptions::new(Profile::F32),
        &mut |_| {},
    )
    .unwrap();
    convert(
        source.as_ref(),
        &b,
        &ConvertOptions::new(Profile::Int8),
        &mut |_| {},
    )
    .unwrap();
    let (fa, fb) = (CellmFile::open(&a).unwrap(), CellmFile::open(&b).unwrap());
    // The f32 file with every int8 tensor of the other swapped in runs exactly like it.
    let mut ov = TensorOverrides::new();
    for e in fb.tensors() {
        let t = fb.tensor(&e.name).unwrap();
        ov.insert(&e.name, t.dtype, t.shape, t.group_size, t.data)
            .unwrap();
    }
    // A bad length is refused.
    assert!(
        TensorOverrides::new()
            .insert("x", DType::Q8, &[64, 64], 32, &[0u8; 10])
            .is_err()
    );
    let tokens = [2u32, 10, 20, 30, 40];
    let logits = |m: &mut dyn models::TextModel| {
        let mut cache = KvCache::new(m.config(), 16, 16, KvPrecision::F32);
        m.forward(&tokens, None, 0, &mut cache, models::Logits::All)
            .unwrap()
            .to_vec()
    };
    let want = logits(models::load_model(&fb).unwrap().as_mut());
    let got = logits(models::load_model_with(&fa, &ov).unwrap().as_mut());
    assert_eq!(want, got);
    let plain = logits(models::load_model(&fa).unwrap().as_mut());
    assert_ne!(plain, got);
    // Levels name their dtypes.
    assert_eq!(Level::Q4.dtype(), DType::Q4);
}

#[test]
fn gemma4_auto_meets_the_target_and_the_scan_matches_the_file() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/tiny-gemma4");
    if !p.join("config.json").is_file() {
        println!("note: {} is absent; skipping", p.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("auto.cellm");
    let r = auto(&p, &out, 0.02);
    let f = r.fidelity.clone().unwrap();
    assert!(f.kl_mean <= 0.02, "KL {}", f.kl_mean);
    assert!(r.file_bytes < f16_size(&p, tmp.path()));
    // The scan's vocabulary-subset measurement of the chosen mix is the written file's KL.
    assert!(
        (r.calibration_kl - f.kl_mean).abs() <= 1e-3 * f.kl_mean.max(1e-9),
        "scan {} vs file {}",
        r.calibration_kl,
        f.kl_mean
    );
}
