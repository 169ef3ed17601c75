//! Helpers shared by the parity tests: convert a fixture with the converter library, read
//! reference tensors, and measure KL / top-1 agreement.

#![allow(dead_code)]

use cellm_convert::{ConvertOptions, Profile, convert, open_source};
use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};

pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(name)
}

/// Converts `input` (HF folder or .gguf) with `profile` into `out_dir/<profile>.cellm`.
pub fn convert_to(input: &Path, profile: Profile, out_dir: &Path) -> PathBuf {
    let out = out_dir.join(format!("{}.cellm", profile.name()));
    let source = open_source(input).expect("open source");
    convert(&*source, &out, &ConvertOptions::new(profile), &mut |_| {}).expect("convert");
    out
}

pub fn floats(st: &SafeTensors<'_>, name: &str) -> (Vec<f32>, Vec<usize>) {
    let t = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("reference has no '{name}'"));
    let d = t.data();
    let v = match t.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => panic!("'{name}' has dtype {other:?}"),
    };
    (v, t.shape().to_vec())
}

pub fn ids(st: &SafeTensors<'_>, name: &str) -> Vec<u32> {
    let t = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("reference has no '{name}'"));
    assert_eq!(t.dtype(), Dtype::I64, "{name}");
    t.data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
        .collect()
}

fn log_sum_exp(x: &[f32]) -> f64 {
    let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    m + x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln()
}

pub fn argmax(x: &[f32]) -> usize {
    (0..x.len()).fold(0, |b, i| if x[i] > x[b] { i } else { b })
}

/// Agreement of our logits with a reference over all positions.
#[derive(Debug, Clone, Copy)]
pub struct Agreement {
    pub kl_mean: f64,
    pub kl_max: f64,
    pub top1: f64,
    pub positions: usize,
}

/// Full reference logits `[T, V]`.
pub fn agreement_full(reference: &[f32], ours: &[f32], vocab: usize) -> Agreement {
    let n = reference.len() / vocab;
    assert_eq!(ours.len(), n * vocab);
    let (mut sum, mut max, mut hit) = (0.0f64, 0.0f64, 0usize);
    for t in 0..n {
        let (r, o) = (
            &reference[t * vocab..(t + 1) * vocab],
            &ours[t * vocab..(t + 1) * vocab],
        );
        let (lr, lo) = (log_sum_exp(r), log_sum_exp(o));
        let kl: f64 = r
            .iter()
            .zip(o)
            .map(|(&a, &b)| {
                let la = a as f64 - lr;
                la.exp() * (la - (b as f64 - lo))
            })
            .sum();
        sum += kl;
        max = max.max(kl);
        hit += (argmax(r) == argmax(o)) as usize;
    }
    Agreement {
        kl_mean: sum / n as f64,
        kl_max: max,
        top1: hit as f64 / n as f64,
        positions: n,
    }
}

/// Compact reference (top-K ids and logits plus log-sum-exp): KL over the top-K tokens plus one
/// tail bucket on each side (a lower bound of the full KL; see `cellm compare --help`).
pub fn agreement_topk(
    topk_ids: &[u32],
    topk_logits: &[f32],
    lse: &[f32],
    k: usize,
    ours: &[f32],
    vocab: usize,
) -> Agreement {
    let n = lse.len();
    let (mut sum, mut max, mut hit) = (0.0f64, 0.0f64, 0usize);
    for t in 0..n {
        let o = &ours[t * vocab..(t + 1) * vocab];
        let lo = log_sum_exp(o);
        let (ids, ls) = (
            &topk_ids[t * k..(t + 1) * k],
            &topk_logits[t * k..(t + 1) * k],
        );
        let (mut kl, mut pm, mut qm) = (0.0f64, 0.0f64, 0.0f64);
        for (&id, &l) in ids.iter().zip(ls) {
            let lp = l as f64 - lse[t] as f64;
            let lq = o[id as usize] as f64 - lo;
            kl += lp.exp() * (lp - lq);
            pm += lp.exp();
            qm += lq.exp();
        }
        let (pt, qt) = ((1.0 - pm).max(0.0), (1.0 - qm).max(1e-30));
        if pt > 1e-12 {
            kl += pt * (pt.ln() - qt.ln());
        }
        let kl = kl.max(0.0);
        sum += kl;
        max = max.max(kl);
        hit += (ids[argmax(ls)] as usize == argmax(o)) as usize;
    }
    Agreement {
        kl_mean: sum / n as f64,
        kl_max: max,
        top1: hit as f64 / n as f64,
        positions: n,
    }
}
