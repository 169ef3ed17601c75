//! Times the vision tower on one image at Gemma 4 E2B shapes with random weights.
//! `cargo run --release -p cellm-encoders --example bench_vision -- [threads] [max_soft_tokens] [dtype]`
//! (defaults: 2 threads, 280 soft tokens, f32; dtype one of f32, f16, bf16, q8, q4). The E2B
//! vision config is read from /work/shared/models/gemma-4-e2b-config.json when present.

use cellm_encoders::vision::preprocess::{RgbImage, preprocess_rgb};
use cellm_encoders::vision::tower::VisionTower;
use cellm_engine::format::{CellmFile, CellmWriter, Header, TensorPlan};
use cellm_engine::tensor::{DType, encode};
use std::time::Instant;

fn e2b_config() -> serde_json::Value {
    let p = "/work/shared/models/gemma-4-e2b-config.json";
    match std::fs::read_to_string(p) {
        Ok(s) => serde_json::from_str(&s).expect("config json"),
        Err(_) => serde_json::json!({
            "text_config": {"hidden_size": 1536},
            "vision_config": {"hidden_size": 768, "intermediate_size": 3072,
                "num_hidden_layers": 16, "num_attention_heads": 12, "num_key_value_heads": 12,
                "head_dim": 64, "patch_size": 16, "pooling_kernel_size": 3,
                "position_embedding_size": 10240, "use_clipped_linears": true,
                "standardize": false}
        }),
    }
}

/// Deterministic pseudo-random values in [-a, a].
fn random(n: usize, seed: u64, a: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
        })
        .collect()
}

/// User + system CPU seconds of this process so far (Linux /proc; 0 elsewhere). On a shared
/// machine CPU time / threads is a better guide than wall time.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the ")" of the command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2);
    let budget: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(280);
    let dtype = match args.get(3).map(String::as_str).unwrap_or("f32") {
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        "q8" => DType::Q8,
        "q4" => DType::Q4,
        _ => DType::F32,
    };
    let config = e2b_config();
    let v = &config["vision_config"];
    let h = v["hidden_size"].as_u64().unwrap() as usize;
    let inter = v["intermediate_size"].as_u64().unwrap() as usize;
    let layers = v["num_hidden_layers"].as_u64().unwrap() as usize;
    let heads = v["num_attention_heads"].as_u64().unwrap() as usize;
    let hd = v["head_dim"].as_u64().unwrap() as usize;
    let pes = v["position_embedding_size"].as_u64().unwrap() as usize;
    let th = config["text_config"]["hidden_size"].as_u64().unwrap() as usize;

    // (name, shape, init scale, matrix?)
    let mut tensors: Vec<(String, Vec<usize>, f32, bool)> = vec![
        (
            "model.vision_tower.patch_embedder.input_proj.weight".into(),
            vec![h, 768],
            (1.0 / 768f32).sqrt(),
            true,
        ),
        (
            "model.vision_tower.patch_embedder.position_embedding_table".into(),
            vec![2, pes, h],
            0.5,
            false,
        ),
        (
            "model.embed_vision.embedding_projection.weight".into(),
            vec![th, h],
            (1.0 / h as f32).sqrt(),
            true,
        ),
    ];
    for l in 0..layers {
        let p = format!("model.vision_tower.encoder.layers.{l}");
        for (n, o, i) in [
            ("self_attn.q_proj", heads * hd, h),
            ("self_attn.k_proj", heads * hd, h),
            ("self_attn.v_proj", heads * hd, h),
            ("self_attn.o_proj", h, heads * hd),
            ("mlp.gate_proj", inter, h),
            ("mlp.up_proj", inter, h),
            ("mlp.down_proj", h, inter),
        ] {
            tensors.push((
                format!("{p}.{n}.linear.weight"),
                vec![o, i],
                (1.0 / i as f32).sqrt(),
                true,
            ));
            for b in ["input_min", "input_max", "output_min", "output_max"] {
                tensors.push((
                    format!("{p}.{n}.{b}"),
                    vec![],
                    if b.ends_with("min") { -100.0 } else { 100.0 },
                    false,
                ));
            }
        }
        for n in [
            "input_layernorm",
            "post_attention_layernorm",
            "pre_feedforward_layernorm",
            "post_feedforward_layernorm",
        ] {
            tensors.push((format!("{p}.{n}.weight"), vec![h], 1.0, false));
        }
        for n in ["q_norm", "k_norm"] {
            tensors.push((format!("{p}.self_attn.{n}.weight"), vec![hd], 1.0, false));
        }
    }
    let plan: Vec<TensorPlan> = tensors
        .iter()
        .map(|(name, shape, _, matrix)| TensorPlan {
            name: name.clone(),
            dtype: if *matrix { dtype } else { DType::F32 },
            shape: shape.clone(),
            group_size: if *matrix && dtype.is_quantized() {
                32
            } else {
                0
            },
        })
        .collect();
    let header = Header {
        family: "gemma4".into(),
        config: config.clone(),
        tokenizer: Default::default(),
        quantization: Default::default(),
        provenance: Default::default(),
        fidelity: None,
        tensors: vec![],
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vision.cellm");
    let t0 = Instant::now();
    let mut w = CellmWriter::create(&path, header, plan.clone()).expect("writer");
    for (i, (name, shape, scale, _)) in tensors.iter().enumerate() {
        let n: usize = shape.iter().product::<usize>().max(1);
        let vals = if name.ends_with("_min") || name.ends_with("_max") {
            vec![*scale]
        } else if name.ends_with("norm.weight") {
            random(n, i as u64, 0.1)
                .into_iter()
                .map(|x| 1.0 + x)
                .collect()
        } else {
            random(n, i as u64, *scale * 3f32.sqrt())
        };
        let bytes = encode(plan[i].dtype, &vals, shape, plan[i].group_size).expect("encode");
        w.write_tensor(name, &bytes).expect("write");
    }
    w.finish().expect("finish");
    eprintln!(
        "wrote random E2B vision tower ({dtype}) in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let file = CellmFile::open(&path).expect("open");
    let tower = VisionTower::load(&file).expect("load").expect("tower");
    // A 1024x768 test pattern (4:3 photo shape).
    let (iw, ih) = (1024, 768);
    let data: Vec<u8> = (0..iw * ih * 3)
        .map(|i| ((i * 7 + (i / (iw * 3)) * 13) % 251) as u8)
        .collect();
    let img = RgbImage {
        width: iw,
        height: ih,
        data,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool");
    pool.install(|| {
        let t = Instant::now();
        let pre = preprocess_rgb(&img, budget).expect("preprocess");
        let tp = t.elapsed().as_secs_f64();
        for run in 0..2 {
            let t = Instant::now();
            let c0 = cpu_seconds();
            let out = tower.encode(&pre).expect("encode");
            let te = t.elapsed().as_secs_f64();
            let cpu = cpu_seconds() - c0;
            println!(
                "run {run}: {threads} threads, {dtype}, budget {budget}: {}x{} -> {} patches, {} soft tokens x {}: preprocess {:.3} s, tower {:.2} s wall, {:.2} s CPU",
                pre.width, pre.height, pre.num_patches, out.len() / th, th, tp, te, cpu
            );
        }
    });
}
