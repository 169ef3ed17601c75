use super::BackendArg;
use anyhow::{Context, bail};
use cellm_engine::session::{Session, SessionOptions};
use safetensors::{Dtype, SafeTensors};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// safetensors with `input_ids` [T] (i64) and either `logits` [T, V] (f32, f16 or bf16), or
    /// the compact form `topk_ids` [T, K] + `topk_logits` [T, K] + `logsumexp` [T]. With the
    /// compact form, KL(ref || ours) is computed over the reference's top-K tokens plus one
    /// bucket holding the remaining (tail) probability mass of each side; this is a lower bound
    /// of the full KL, tight when K covers most of the mass. Correlation then uses the K logits.
    #[arg(long)]
    pub reference: PathBuf,
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
    #[arg(long = "audio")]
    pub audio: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    pub backend: BackendArg,
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    if !args.images.is_empty() || !args.audio.is_empty() {
        bail!(
            "--image and --audio are not yet supported by `cellm compare` (text references only for now)"
        );
    }
    if args.backend == BackendArg::Gpu {
        eprintln!("GPU backend not available yet, using CPU");
    }
    let bytes = std::fs::read(&args.reference)
        .with_context(|| format!("reading {}", args.reference.display()))?;
    let reference = Reference::parse(&bytes)
        .with_context(|| format!("reading reference {}", args.reference.display()))?;
    let mut session = Session::load(
        &args.model,
        SessionOptions {
            threads: args.threads,
            ..SessionOptions::default()
        },
    )
    .with_context(|| format!("loading {}", args.model.display()))?;
    let vocab = session.info().vocab_size;
    let ours = session.logits_for(&reference.ids, &[])?;
    let report = compare(&reference, &ours, vocab)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("positions          {}", report.positions);
        println!("reference form     {}", report.reference_form);
        println!("KL mean            {:.6}", report.kl_mean);
        println!("KL max             {:.6}", report.kl_max);
        println!("logit correlation  {:.6}", report.correlation);
        println!("top-1 match        {:.2}%", report.top1_match * 100.0);
        match report.first_divergence {
            Some(p) => println!("first divergence   position {p}"),
            None => println!("first divergence   none"),
        }
        println!("mean entropy (ref) {:.4}", report.entropy_mean);
    }
    Ok(())
}

/// Reference logits read from a safetensors file.
pub struct Reference {
    pub ids: Vec<u32>,
    pub kind: RefLogits,
}

pub enum RefLogits {
    /// [T, V].
    Full { logits: Vec<f32>, vocab: usize },
    /// [T, K] ids and logits, and each position's log-sum-exp over the whole vocabulary.
    TopK {
        ids: Vec<u32>,
        logits: Vec<f32>,
        k: usize,
        lse: Vec<f32>,
    },
}

fn floats(st: &SafeTensors<'_>, name: &str) -> anyhow::Result<(Vec<f32>, Vec<usize>)> {
    let t = st
        .tensor(name)
        .with_context(|| format!("tensor '{name}'"))?;
    let d = t.data();
    let v: Vec<f32> = match t.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => bail!("tensor '{name}' has dtype {other:?}; expected f32, f16 or bf16"),
    };
    Ok((v, t.shape().to_vec()))
}

fn ints(st: &SafeTensors<'_>, name: &str) -> anyhow::Result<(Vec<u32>, Vec<usize>)> {
    let t = st
        .tensor(name)
        .with_context(|| format!("tensor '{name}'"))?;
    let d = t.data();
    let v: Vec<i64> = match t.dtype() {
        Dtype::I64 => d
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .collect(),
        Dtype::I32 => d
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
            .collect(),
        other => bail!("tensor '{name}' has dtype {other:?}; expected i64 or i32"),
    };
    let v = v
        .into_iter()
        .map(|x| {
            u32::try_from(x)
                .map_err(|_| anyhow::anyhow!("tensor '{name}' holds the invalid id {x}"))
        })
        .collect::<anyhow::Result<Vec<u32>>>()?;
    Ok((v, t.shape().to_vec()))
}

impl Reference {
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Self> {
        let st = SafeTensors::deserialize(bytes).context("not a safetensors file")?;
        let (ids, shape) = ints(&st, "input_ids")?;
        let n = ids.len();
        if shape.len() != 1 && !(shape.len() == 2 && shape[0] == 1) {
            bail!("input_ids must be [T], found {shape:?}");
        }
        if n == 0 {
            bail!("input_ids is empty");
        }
        let names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        let kind = if names.iter().any(|s| s == "logits") {
            let (logits, shape) = floats(&st, "logits")?;
            let vocab = *shape.last().unwrap_or(&0);
            if vocab == 0 || logits.len() != n * vocab {
                bail!("logits {shape:?} do not match {n} input ids");
            }
            RefLogits::Full { logits, vocab }
        } else if names.iter().any(|s| s == "topk_ids") {
            let (tids, shape) = ints(&st, "topk_ids")?;
            let k = *shape.last().unwrap_or(&0);
            let (logits, lshape) = floats(&st, "topk_logits")?;
            let (lse, _) = floats(&st, "logsumexp")?;
            if k == 0 || tids.len() != n * k || lshape != shape || lse.len() != n {
                bail!(
                    "topk_ids {shape:?} / topk_logits {lshape:?} / logsumexp do not match {n} input ids"
                );
            }
            RefLogits::TopK {
                ids: tids,
                logits,
                k,
                lse,
            }
        } else {
            bail!("the reference has neither `logits` nor `topk_ids`/`topk_logits`/`logsumexp`");
        };
        Ok(Self { ids, kind })
    }
}

#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub positions: usize,
    pub reference_form: &'static str,
    pub kl_mean: f64,
    pub kl_max: f64,
    pub correlation: f64,
    pub top1_match: f64,
    pub first_divergence: Option<usize>,
    pub entropy_mean: f64,
}

fn log_sum_exp(x: &[f32]) -> f64 {
    let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    m + x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln()
}

fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    if saa == 0.0 || sbb == 0.0 {
        return if saa == sbb { 1.0 } else { 0.0 };
    }
    sab / (saa * sbb).sqrt()
}

/// Compares our `[T, vocab]` logits with the reference.
pub fn compare(r: &Reference, ours: &[f32], vocab: usize) -> anyhow::Result<Report> {
    let n = r.ids.len();
    if ours.len() != n * vocab {
        bail!(
            "engine returned {} logits for {n} positions of {vocab}",
            ours.len()
        );
    }
    let (mut kl_sum, mut kl_max, mut corr_sum, mut ent_sum) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let mut matches = 0usize;
    let mut first_divergence = None;
    for t in 0..n {
        let q = &ours[t * vocab..(t + 1) * vocab];
        let lq = log_sum_exp(q);
        let (kl, corr, ent, ref_top) = match &r.kind {
            RefLogits::Full { logits, vocab: rv } => {
                if *rv != vocab {
                    bail!("reference vocabulary {rv} differs from the model's {vocab}");
                }
                let p = &logits[t * vocab..(t + 1) * vocab];
                let lp = log_sum_exp(p);
                let (mut kl, mut ent) = (0.0, 0.0);
                for (&a, &b) in p.iter().zip(q) {
                    let lpa = a as f64 - lp;
                    let pa = lpa.exp();
                    if pa > 0.0 {
                        kl += pa * (lpa - (b as f64 - lq));
                        ent -= pa * lpa;
                    }
                }
                let a: Vec<f64> = p.iter().map(|&v| v as f64).collect();
                let b: Vec<f64> = q.iter().map(|&v| v as f64).collect();
                (kl, pearson(&a, &b), ent, argmax(p))
            }
            RefLogits::TopK {
                ids,
                logits,
                k,
                lse,
            } => {
                let ids = &ids[t * k..(t + 1) * k];
                let ls = &logits[t * k..(t + 1) * k];
                let lp = lse[t] as f64;
                let (mut kl, mut ent, mut pm, mut qm) = (0.0, 0.0, 0.0, 0.0);
                let mut a = Vec::with_capacity(*k);
                let mut b = Vec::with_capacity(*k);
                for (&id, &l) in ids.iter().zip(ls) {
                    let id = id as usize;
                    if id >= vocab {
                        bail!("reference top-k id {id} is outside the vocabulary ({vocab})");
                    }
                    let lpa = l as f64 - lp;
                    let lqa = q[id] as f64 - lq;
                    let pa = lpa.exp();
                    kl += pa * (lpa - lqa);
                    ent -= pa * lpa;
                    pm += pa;
                    qm += lqa.exp();
                    a.push(l as f64);
                    b.push(q[id] as f64);
                }
                // The rest of the vocabulary as one bucket on each side.
                let (pt, qt) = ((1.0 - pm).max(0.0), (1.0 - qm).max(1e-30));
                if pt > 1e-12 {
                    kl += pt * (pt.ln() - qt.ln());
                    ent -= pt * pt.ln();
                }
                let top = ids[argmax(ls)] as usize;
                (kl.max(0.0), pearson(&a, &b), ent, top)
            }
        };
        kl_sum += kl;
        kl_max = kl_max.max(kl);
        corr_sum += corr;
        ent_sum += ent;
        if argmax(q) == ref_top {
            matches += 1;
        } else if first_divergence.is_none() {
            first_divergence = Some(t);
        }
    }
    let nf = n as f64;
    Ok(Report {
        positions: n,
        reference_form: match r.kind {
            RefLogits::Full { .. } => "full",
            RefLogits::TopK { .. } => "topk",
        },
        kl_mean: kl_sum / nf,
        kl_max,
        correlation: corr_sum / nf,
        top1_match: matches as f64 / nf,
        first_divergence,
        entropy_mean: ent_sum / nf,
    })
}
