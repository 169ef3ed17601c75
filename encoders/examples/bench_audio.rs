//! Speed of the audio tower at Gemma 4 E2B shapes with random weights: writes an E2B-shaped audio
//! tower (+ `embed_audio`) to a temporary .cellm, then encodes 10 s of noise.
//!
//! `cargo run --release -p cellm-encoders --example bench_audio -- [dtype] [threads] [seconds]`
//! dtype: f32, f16, bf16, q8 or q4 for the matrices (default q8); threads default 2; seconds 10.

use cellm_encoders::audio::{AudioTower, LogMelExtractor};
use cellm_engine::format::{
    CellmFile, CellmWriter, Header, Provenance, QuantizationInfo, TensorPlan, TokenizerInfo,
};
use cellm_engine::tensor::{DType, encode};
use std::time::Instant;

const H: usize = 1024;
const LAYERS: usize = 12;
const HEAD_DIM: usize = 128;
const TEXT_H: usize = 1536;
const OUT: usize = 1536;

struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// (name, shape, kind) of every tensor; kind: 'w' matrix, 'n' norm (≈1), 'b' clip bound,
/// 'c' conv / small tensor (≈ 1/sqrt(fan_in)), 'z' zeros.
fn tensors() -> Vec<(String, Vec<usize>, char)> {
    let t = "model.audio_tower";
    let mut v: Vec<(String, Vec<usize>, char)> = vec![
        (
            format!("{t}.subsample_conv_projection.layer0.conv.weight"),
            vec![128, 1, 3, 3],
            'c',
        ),
        (
            format!("{t}.subsample_conv_projection.layer0.norm.weight"),
            vec![128],
            'n',
        ),
        (
            format!("{t}.subsample_conv_projection.layer1.conv.weight"),
            vec![32, 128, 3, 3],
            'c',
        ),
        (
            format!("{t}.subsample_conv_projection.layer1.norm.weight"),
            vec![32],
            'n',
        ),
        (
            format!("{t}.subsample_conv_projection.input_proj_linear.weight"),
            vec![H, H],
            'w',
        ),
        (format!("{t}.output_proj.weight"), vec![OUT, H], 'w'),
        (format!("{t}.output_proj.bias"), vec![OUT], 'z'),
        (
            "model.embed_audio.embedding_projection.weight".into(),
            vec![TEXT_H, OUT],
            'w',
        ),
    ];
    let clipped = |v: &mut Vec<(String, Vec<usize>, char)>, p: String, out: usize, inp: usize| {
        v.push((format!("{p}.linear.weight"), vec![out, inp], 'w'));
        for b in ["input_min", "input_max", "output_min", "output_max"] {
            v.push((format!("{p}.{b}"), vec![], 'b'));
        }
    };
    for l in 0..LAYERS {
        let p = format!("{t}.layers.{l}");
        for f in ["feed_forward1", "feed_forward2"] {
            clipped(&mut v, format!("{p}.{f}.ffw_layer_1"), 4 * H, H);
            clipped(&mut v, format!("{p}.{f}.ffw_layer_2"), H, 4 * H);
            v.push((format!("{p}.{f}.pre_layer_norm.weight"), vec![H], 'n'));
            v.push((format!("{p}.{f}.post_layer_norm.weight"), vec![H], 'n'));
        }
        for q in ["q_proj", "k_proj", "v_proj", "post"] {
            clipped(&mut v, format!("{p}.self_attn.{q}"), H, H);
        }
        v.push((
            format!("{p}.self_attn.relative_k_proj.weight"),
            vec![H, H],
            'w',
        ));
        v.push((format!("{p}.self_attn.per_dim_scale"), vec![HEAD_DIM], 'z'));
        clipped(&mut v, format!("{p}.lconv1d.linear_start"), 2 * H, H);
        clipped(&mut v, format!("{p}.lconv1d.linear_end"), H, H);
        v.push((
            format!("{p}.lconv1d.depthwise_conv1d.weight"),
            vec![H, 1, 5],
            'c',
        ));
        for n in [
            "lconv1d.pre_layer_norm",
            "lconv1d.conv_norm",
            "norm_pre_attn",
            "norm_post_attn",
            "norm_out",
        ] {
            v.push((format!("{p}.{n}.weight"), vec![H], 'n'));
        }
    }
    v
}

/// The E2B audio config from the shared model notes, or the class defaults (which equal E2B).
fn e2b_audio_config() -> serde_json::Value {
    std::fs::read_to_string("/work/shared/models/gemma-4-e2b-config.json")
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|c| c.get("audio_config").cloned())
        .unwrap_or_else(|| serde_json::json!({}))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dtype = match args.first().map(String::as_str).unwrap_or("q8") {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        "q8" => DType::Q8,
        "q4" => DType::Q4,
        other => return Err(format!("unknown dtype {other}").into()),
    };
    let threads: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(2);
    let seconds: f32 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(10.0);

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("audio-e2b.cellm");
    let specs = tensors();
    let plan: Vec<TensorPlan> = specs
        .iter()
        .map(|(name, shape, kind)| {
            let quant = *kind == 'w' && dtype.is_quantized();
            TensorPlan {
                name: name.clone(),
                dtype: if *kind == 'w' { dtype } else { DType::F32 },
                shape: shape.clone(),
                group_size: if quant { 32 } else { 0 },
            }
        })
        .collect();
    let config = serde_json::json!({
        "model_type": "gemma4",
        "text_config": {"hidden_size": TEXT_H},
        "audio_config": e2b_audio_config(),
    });
    let header = Header {
        family: "gemma4".into(),
        config,
        tokenizer: TokenizerInfo::default(),
        quantization: QuantizationInfo::default(),
        provenance: Provenance::default(),
        fidelity: None,
        tensors: vec![],
    };
    let t0 = Instant::now();
    let mut w = CellmWriter::create(&path, header, plan.clone())?;
    let mut rng = Rng(42);
    for ((name, shape, kind), p) in specs.iter().zip(&plan) {
        let n: usize = shape.iter().product::<usize>().max(1);
        let fan_in = shape.iter().skip(1).product::<usize>().max(1) as f32;
        let vals: Vec<f32> = match kind {
            'w' | 'c' => (0..n)
                .map(|_| rng.uniform() * (3.0 / fan_in).sqrt())
                .collect(),
            'n' => (0..n).map(|_| 1.0 + 0.1 * rng.uniform()).collect(),
            'b' if name.ends_with("min") => vec![-1e4; n],
            'b' => vec![1e4; n],
            _ => vec![0.0; n],
        };
        w.write_tensor(name, &encode(p.dtype, &vals, shape, p.group_size)?)?;
    }
    w.finish()?;
    eprintln!(
        "wrote random E2B audio tower ({dtype}) in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let file = CellmFile::open(&path)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let tower = AudioTower::load(&file)?.ok_or("no audio tower")?;
    let mut rng = Rng(7);
    let samples: Vec<f32> = (0..(seconds * 16_000.0) as usize)
        .map(|_| 0.1 * rng.uniform())
        .collect();
    let t1 = Instant::now();
    let feats = LogMelExtractor::new().extract(&samples);
    let t_feat = t1.elapsed().as_secs_f64();
    let mut best = f64::INFINITY;
    let mut tokens = 0;
    for _ in 0..3 {
        let t2 = Instant::now();
        let emb = pool.install(|| tower.encode(&feats))?;
        best = best.min(t2.elapsed().as_secs_f64());
        tokens = emb.len() / TEXT_H;
    }
    println!(
        "audio tower E2B {dtype}, {seconds} s audio ({} frames -> {tokens} tokens), {threads} threads: \
         features {:.3} s, tower+embed {:.3} s (best of 3)",
        feats.frames, t_feat, best
    );
    Ok(())
}
