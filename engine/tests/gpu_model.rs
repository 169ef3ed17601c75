//! Whole-model GPU backend against the CPU path on the tiny Gemma 3 / Gemma 4 fixtures: teacher-forced
//! logits (KL < 1e-4 per position) and 16 greedy tokens, with the weights in f32 and quantized.
//! Skips, with a note, where no GPU adapter exists (CI runs lavapipe).

#![cfg(feature = "gpu")]

use cellm_engine::format::{
    CellmWriter, Header, Provenance, QuantizationInfo, TensorPlan, TokenizerInfo,
};
use cellm_engine::kernels::gpu::GpuContext;
use cellm_engine::kv_cache::KvPrecision;
use cellm_engine::sampler::SamplingParams;
use cellm_engine::session::{Backend, GenerateParams, Prompt, Session, SessionOptions};
use cellm_engine::tensor::{DType, TensorView, encode};
use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(name)
}

fn f32s(st: &SafeTensors<'_>, name: &str) -> (Vec<f32>, Vec<usize>) {
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), Dtype::F32, "{name}");
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (v, t.shape().to_vec())
}

fn ids(st: &SafeTensors<'_>, name: &str) -> Vec<u32> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
        .collect()
}

/// Writes `dir`'s safetensors as a `.cellm`: matrices in `dtype` (group 32), vectors in f32.
/// `dequantized`: store the matrices' `dtype` values back in f32 instead (the exact weights a
/// `dtype` file holds, for a CPU reference without the CPU's int8 activations).
fn write_cellm(dir: &Path, family: &str, dtype: DType, dequantized: bool, out: &Path) {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    // Matrices in `dtype` where its layout allows (quantized: cols a multiple of 32).
    let matrix = |shape: &[usize]| {
        shape.len() == 2 && (!dtype.is_quantized() || shape[1].is_multiple_of(32))
    };
    let pick = |shape: &[usize]| {
        if matrix(shape) && dequantized {
            (DType::F32, 0)
        } else if matrix(shape) && dtype.is_quantized() {
            (dtype, 32)
        } else if matrix(shape) {
            (dtype, 0)
        } else {
            (DType::F32, 0)
        }
    };
    let plan = names
        .iter()
        .map(|n| {
            let shape = st.tensor(n).unwrap().shape().to_vec();
            let (dtype, group_size) = pick(&shape);
            TensorPlan {
                name: n.clone(),
                dtype,
                shape,
                group_size,
            }
        })
        .collect();
    let header = Header {
        family: family.into(),
        config,
        tokenizer: TokenizerInfo {
            tokenizer_json: std::fs::read_to_string(dir.join("tokenizer.json")).unwrap(),
            chat_template: None,
            bos_token_id: Some(2),
            eos_token_ids: vec![1],
            pad_token_id: Some(0),
            add_bos: true,
            special_tokens: Default::default(),
        },
        quantization: QuantizationInfo {
            profile: format!("{dtype}"),
            group_size: 32,
            excluded_layers: vec![],
        },
        provenance: Provenance::default(),
        fidelity: None,
        tensors: vec![],
    };
    let mut w = CellmWriter::create(out, header, plan).unwrap();
    for n in &names {
        let (mut v, shape) = f32s(&st, n);
        if dequantized && matrix(&shape) {
            let gs = if dtype.is_quantized() { 32 } else { 0 };
            let b = encode(dtype, &v, &shape, gs).unwrap();
            v = TensorView::new(dtype, &shape, gs, &b).unwrap().to_f32_vec();
        }
        let (dtype, gs) = pick(&shape);
        w.write_tensor(n, &encode(dtype, &v, &shape, gs).unwrap())
            .unwrap();
    }
    w.finish().unwrap();
}

fn log_softmax(x: &[f32]) -> Vec<f64> {
    let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let z = x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln() + m;
    x.iter().map(|&v| v as f64 - z).collect()
}

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
    write_cellm(&dir, family, dtype, false, &path);
    // The CPU reference runs the same weight values in f32: quantized CPU matmuls round the
    // activations to int8, the GPU's do not (KL ~1e-2 on this tiny random model).
    write_cellm(&dir, family, dtype, true, &ref_path);
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
fn gpu_tiny_gemma4_matches_cpu() {
    check("tiny-gemma4", "gemma4", DType::F32, KvPrecision::F32);
    check("tiny-gemma4", "gemma4", DType::Q4, KvPrecision::F16);
}

/// `auto` takes the GPU only on a hardware adapter (lavapipe is a CPU-type adapter).
#[test]
fn auto_backend_skips_software_adapters() {
    let dir = testdata("tiny-gemma3");
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.cellm");
    write_cellm(&dir, "gemma3", DType::F32, false, &path);
    let s = Session::load(
        &path,
        SessionOptions {
            threads: Some(2),
            backend: Backend::Auto,
            ..Default::default()
        },
    )
    .unwrap();
    let hardware = GpuContext::new().is_ok_and(|c| {
        matches!(
            c.adapter().device_type.as_str(),
            "DiscreteGpu" | "IntegratedGpu"
        )
    });
    assert_eq!(s.backend().starts_with("gpu"), hardware, "{}", s.backend());
}

/// Media soft tokens replace embedding rows (and, in Gemma 4, the PLE token part) the same way
/// on both backends, through the `TextModel` trait directly.
#[test]
fn gpu_media_rows_match_cpu() {
    use cellm_engine::format::CellmFile;
    use cellm_engine::kv_cache::KvCache;
    use cellm_engine::models::{self, Logits, MediaRows};
    if let Err(e) = GpuContext::new() {
        println!("SKIP gpu model test: {e}");
        return;
    }
    for (name, family) in [("tiny-gemma3", "gemma3"), ("tiny-gemma4", "gemma4")] {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("m.cellm");
        write_cellm(&testdata(name), family, DType::F32, false, &path);
        let file = CellmFile::open(&path).unwrap();
        let mut cpu = models::load_model(&file).unwrap();
        let ctx = GpuContext::new().unwrap();
        let mut gpu = models::gpu::load(&file, ctx, KvPrecision::F32).unwrap();
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
    }
}
