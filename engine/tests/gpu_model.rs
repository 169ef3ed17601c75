//! Whole-model GPU backend against the CPU path on the tiny Gemma 3 / Gemma 4 fixtures: teacher-forced
//! logits (KL < 1e-4 per position) and 16 greedy tokens, with the weights in f32 and quantized.
//! Skips, with a note, where no GPU adapter exists (CI runs lavapipe).

#![cfg(feature = "gpu")]

mod common;

use cellm_engine::kernels::gpu::GpuContext;
use cellm_engine::kv_cache::KvPrecision;
use cellm_engine::sampler::SamplingParams;
use cellm_engine::session::{Backend, GenerateParams, Prompt, Session, SessionOptions};
use cellm_engine::tensor::DType;
use common::{WriteOptions, ids, log_softmax, testdata, write_cellm};
use safetensors::SafeTensors;

/// Largest KL(a || b) over positions.
fn max_kl(a: &[f32], b: &[f32], vocab: usize) -> f64 {
    assert_eq!(a.len(), b.len());
    (0..a.len() / vocab)
        .map(|t| {
            let (la, lb) = (
                log_softmax(&a[t * vocab..(t + 1) * vocab]),
                log_softmax(&b[t * vocab..(t + 1) * vocab]),
            );
            la.iter().zip(&lb).map(|(x, y)| x.exp() * (x - y)).sum()
        })
        .fold(0.0, f64::max)
}

fn greedy(s: &mut Session, prompt: &[u32], n: usize) -> Vec<u32> {
    let params = GenerateParams {
        sampling: SamplingParams {
            temperature: 0.0,
            ..Default::default()
        },
        max_new_tokens: n + 1,
    };
    s.set_stop_ids(vec![]);
    s.generate(&Prompt::Tokens(prompt.to_vec()), &params, &mut |_| {})
        .unwrap();
    s.context_tokens()[prompt.len()..].to_vec()
}

fn check(name: &str, family: &str, dtype: DType, kv: KvPrecision) {
    if let Err(e) = GpuContext::new() {
        println!("SKIP gpu model test: {e}");
        return;
    }
    let dir = testdata(name);
    let tmp = tempfile::tempdir().unwrap();
    let (path, ref_path) = (tmp.path().join("m.cellm"), tmp.path().join("ref.cellm"));
    write_cellm(
        &dir,
        family,
        &path,
        WriteOptions {
            dtype,
            ..Default::default()
        },
    );
    // The CPU reference runs the same weight values in f32: quantized CPU matmuls round the
    // activations to int8, the GPU's do not (KL ~1e-2 on this tiny random model).
    write_cellm(
        &dir,
        family,
        &ref_path,
        WriteOptions {
            dtype,
            dequantized: true,
            ..Default::default()
        },
    );
    let refb = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let r = SafeTensors::deserialize(&refb).unwrap();
    let input = ids(&r, "input_ids");

    let opts = |backend| SessionOptions {
        threads: Some(2),
        kv_precision: kv,
        backend,
        ..Default::default()
    };
    let mut cpu = Session::load(&ref_path, opts(Backend::Cpu)).unwrap();
    let mut gpu = Session::load(&path, opts(Backend::Gpu)).unwrap();
    assert_eq!(cpu.backend(), "cpu");
    assert!(gpu.backend().starts_with("gpu"), "{}", gpu.backend());
    let vocab = cpu.info().vocab_size;

    let want = cpu.logits_for(&input, &[]).unwrap();
    let got = gpu.logits_for(&input, &[]).unwrap();
    let kl = max_kl(&want, &got, vocab);
    println!(
        "{name} {dtype} {kv:?} on {}: max KL {kl:.3e} over {} positions",
        gpu.backend(),
        input.len()
    );
    assert!(kl < 1e-4, "{name} {dtype}: KL {kl}");

    // Prefill in window-sized chunks, then 16 single-token steps.
    let a = greedy(&mut cpu, &input, 16);
    let b = greedy(&mut gpu, &input, 16);
    assert_eq!(a, b, "{name} {dtype}: greedy ids");

    // Prefix reuse on the device cache gives what a fresh run gives.
    let mut longer = gpu.context_tokens().to_vec();
    longer.push(a[0]);
    let c = greedy(&mut gpu, &longer, 4);
    let d = greedy(&mut cpu, &longer, 4);
    assert_eq!(c, d, "{name} {dtype}: after prefix reuse");
}

#[test]
fn gpu_tiny_gemma3_f32_matches_cpu() {
    check("tiny-gemma3", "gemma3", DType::F32, KvPrecision::F32);
    check("tiny-gemma3", "gemma3", DType::F16, KvPrecision::F16);
}

#[test]
fn gpu_tiny_gemma3_quantized_matches_cpu() {
    check("tiny-gemma3", "gemma3", DType::Q8, KvPrecision::F16);
    check("tiny-gemma3", "gemma3", DType::Q4, KvPrecision::F16);
}

#[test]
fn gpu_tiny_gemma3_lut_matches_cpu() {
    check("tiny-gemma3", "gemma3", DType::Lut4, KvPrecision::F16);
    check("tiny-gemma3", "gemma3", DType::Lut6, KvPrecision::F16);
}

#[test]
fn gpu_tiny_gemma4_matches_cpu() {
    check("tiny-gemma4", "gemma4", DType::F32, KvPrecision::F32);
    check("tiny-gemma4", "gemma4", DType::Q4, KvPrecision::F16);
}

/// `auto` considers the GPU only on a hardware adapter (lavapipe is a CPU-type adapter); there
/// a measured probe decides (tests/backend_probe.rs).
#[test]
fn auto_backend_skips_software_adapters() {
    let dir = testdata("tiny-gemma3");
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.cellm");
    write_cellm(&dir, "gemma3", &path, WriteOptions::default());
    // Explicit settings: no user cache file, and no software override from the environment.
    let s = Session::load_with_probe(
        &path,
        SessionOptions {
            threads: Some(2),
            backend: Backend::Auto,
            ..Default::default()
        },
        &cellm_engine::backend_probe::ProbeSettings::default(),
    )
    .unwrap();
    let hardware = GpuContext::new().is_ok_and(|c| {
        matches!(
            c.adapter().device_type.as_str(),
            "DiscreteGpu" | "IntegratedGpu"
        )
    });
    if !hardware {
        assert!(s.backend().starts_with("cpu"), "{}", s.backend());
    }
}

/// Media soft tokens replace embedding rows (and, in Gemma 4, the PLE token part) the same way
/// on both backends, through the `TextModel` trait directly.
#[test]
fn gpu_media_rows_match_cpu() {
    use cellm_engine::kv_cache::KvCache;
    use cellm_engine::models::{self, Logits, MediaRows};
    common::on_tiny_models(|name, (mut cpu, mut gpu)| {
        let cfg = cpu.config().clone();
        let (h, vocab) = (cfg.hidden_size, cfg.vocab_size);
        let ids: Vec<u32> = (0..20).map(|i| (i * 37 % vocab) as u32).collect();
        let positions = [3usize, 4, 5, 11];
        let rows: Vec<f32> = (0..positions.len() * h)
            .map(|i| ((i as f32) * 0.37).sin())
            .collect();
        let media = MediaRows {
            positions: &positions,
            rows: &rows,
        };
        let run = |m: &mut Box<dyn models::TextModel + '_>| {
            let mut cache = KvCache::new(&cfg, 64, models::chunk_size(&cfg), KvPrecision::F32);
            m.forward(&ids, Some(media), 0, &mut cache, Logits::All)
                .unwrap()
                .to_vec()
        };
        let (want, got) = (run(&mut cpu), run(&mut gpu));
        let kl = max_kl(&want, &got, vocab);
        println!("{name} with media rows: max KL {kl:.3e}");
        assert!(kl < 1e-6, "{name}: KL {kl}");
    });
}

/// One-token steps recorded ahead (after each submit the GPU model records the step at the next
/// position): step logits match the CPU's, and steps that are not the recorded one (a rewind, a
/// jump, a chunk, the context's last position) still give the right logits.
#[test]
fn gpu_steps_recorded_ahead_match_cpu() {
    use cellm_engine::kv_cache::KvCache;
    use cellm_engine::models::{self, Logits};
    common::on_tiny_models(|name, (mut cpu, mut gpu)| {
        let cfg = cpu.config().clone();
        let vocab = cfg.vocab_size;
        let limit = 24;
        let ids: Vec<u32> = (0..limit).map(|i| (i * 53 % vocab) as u32).collect();
        // (first position, tokens) of each forward: prefill, steps, a rewind, a jump back, a
        // two-token chunk, steps up to the context's last position.
        let mut calls = vec![(0usize, 6usize)];
        calls.extend((6..12).map(|p| (p, 1)));
        calls.extend([(10, 1), (11, 1), (4, 1), (5, 2), (7, 1)]);
        calls.extend((8..limit).map(|p| (p, 1)));
        let run = |m: &mut Box<dyn models::TextModel + '_>| {
            let mut cache = KvCache::new(&cfg, limit, models::chunk_size(&cfg), KvPrecision::F32);
            calls
                .iter()
                .map(|&(p, n)| {
                    cache.set_len(p);
                    m.forward(&ids[p..p + n], None, p, &mut cache, Logits::Last)
                        .unwrap()
                        .to_vec()
                })
                .collect::<Vec<_>>()
        };
        let (want, got) = (run(&mut cpu), run(&mut gpu));
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            let kl = max_kl(w, g, vocab);
            assert!(kl < 1e-6, "{name}: call {i} {:?}: KL {kl}", calls[i]);
        }
        println!("{name}: {} steps recorded ahead match the CPU", calls.len());
    });
}

/// Mean KL(a || b) over positions.
fn mean_kl(a: &[f32], b: &[f32], vocab: usize) -> f64 {
    let n = a.len() / vocab;
    (0..n)
        .map(|t| {
            let (la, lb) = (
                log_softmax(&a[t * vocab..(t + 1) * vocab]),
                log_softmax(&b[t * vocab..(t + 1) * vocab]),
            );
            la.iter()
                .zip(&lb)
                .map(|(x, y)| x.exp() * (x - y))
                .sum::<f64>()
        })
        .sum::<f64>()
        / n as f64
}

/// The real-layout fixtures on the GPU backend against transformers itself: f32 weights, f32 KV
/// cache, the text prompt and the multimodal one (transformers' soft tokens merged): mean KL
/// over positions < 1e-6, no position above 1e-3.
fn check_gpu_vs_transformers(name: &str) {
    use cellm_engine::session::{MediaEmbedding, MediaKind};
    if let Err(e) = GpuContext::new() {
        println!("SKIP gpu model test: {e}");
        return;
    }
    let dir = testdata(name);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.cellm");
    let special = [("image".to_string(), 302u32), ("audio".to_string(), 303u32)]
        .into_iter()
        .collect();
    write_cellm(
        &dir,
        "gemma4",
        &path,
        WriteOptions {
            dtype: DType::F32,
            special_tokens: special,
            ..Default::default()
        },
    );
    let refb = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let r = SafeTensors::deserialize(&refb).unwrap();
    let mut gpu = Session::load(
        &path,
        SessionOptions {
            threads: Some(2),
            kv_precision: KvPrecision::F32,
            backend: Backend::Gpu,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(gpu.backend().starts_with("gpu"), "{}", gpu.backend());
    let vocab = gpu.info().vocab_size;
    let (want, _) = common::f32s(&r, "logits");
    let got = gpu.logits_for(&ids(&r, "input_ids"), &[]).unwrap();
    let (kl, worst) = (mean_kl(&want, &got, vocab), max_kl(&want, &got, vocab));
    println!(
        "{name} text on {}: KL mean {kl:.3e} max {worst:.3e}",
        gpu.backend()
    );
    assert!(kl < 1e-6 && worst < 1e-3, "{name} text: KL {kl} / {worst}");

    let media: Vec<MediaEmbedding> = [
        ("vision_embedded", MediaKind::Image),
        ("audio_embedded", MediaKind::Audio),
    ]
    .into_iter()
    .map(|(t, kind)| {
        let (embeddings, shape) = common::f32s(&r, t);
        MediaEmbedding {
            kind,
            embeddings,
            tokens: shape[0],
        }
    })
    .collect();
    let (want, _) = common::f32s(&r, "mm_logits");
    let got = gpu.logits_for(&ids(&r, "mm_input_ids"), &media).unwrap();
    let (kl, worst) = (mean_kl(&want, &got, vocab), max_kl(&want, &got, vocab));
    println!(
        "{name} image + audio on {}: KL mean {kl:.3e} max {worst:.3e}",
        gpu.backend()
    );
    assert!(
        kl < 1e-6 && worst < 1e-3,
        "{name} multimodal: KL {kl} / {worst}"
    );
}

#[test]
fn gpu_e2b_layout_matches_transformers() {
    check_gpu_vs_transformers("e2b-layout");
}

#[test]
fn gpu_mixed_layout_matches_transformers() {
    check_gpu_vs_transformers("mixed-layout");
}
