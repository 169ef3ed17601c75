use super::BackendArg;
use anyhow::{Context, bail};
use cellm_engine::kv_cache::{KvPrecision, KvRotation};
use cellm_engine::session::{Session, SessionOptions};
use safetensors::{Dtype, SafeTensors};
use std::path::PathBuf;

/// Batch mode (`--prompts`): per-prompt and aggregate reports, free-running decoding, Markdown.
#[path = "fidelity_batch.rs"]
pub mod batch;

/// KV-cache storage flags shared by run / compare / bench.
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct KvArgs {
    /// KV-cache storage: f16 (default), f32, q8 (int8) or q4 (int4), one scale per head and
    /// position.
    #[arg(long = "kv", default_value = "f16", value_parser = parse_kv)]
    pub kv: KvPrecision,
    /// Rotate K/V rows by a fixed randomized Hadamard transform before quantizing (q8/q4 only).
    #[arg(long = "kv-rotate")]
    pub kv_rotate: bool,
}

fn parse_kv(s: &str) -> Result<KvPrecision, String> {
    s.parse()
}

impl KvArgs {
    pub fn rotation(&self) -> KvRotation {
        if self.kv_rotate {
            KvRotation::Hadamard
        } else {
            KvRotation::None
        }
    }

    /// Session options with these KV settings.
    pub fn options(&self, threads: Option<usize>) -> SessionOptions {
        SessionOptions {
            threads,
            kv_precision: self.kv,
            kv_rotation: self.rotation(),
            ..SessionOptions::default()
        }
    }

    /// "q8", or "q8+rot" when rotating a quantized cache.
    pub fn label(&self) -> String {
        match (self.kv, self.kv_rotate) {
            (KvPrecision::Q8 | KvPrecision::Q4, true) => format!("{}+rot", self.kv),
            (k, _) => k.to_string(),
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// safetensors with `input_ids` [T] (i64) and either `logits` [T, V] (f32, f16 or bf16), or
    /// the compact form `topk_ids` [T, K] + `topk_logits` [T, K] + `logsumexp` [T]. With the
    /// compact form, KL(ref || ours) is computed over the reference's top-K tokens plus one
    /// bucket holding the remaining (tail) probability mass of each side; this is a lower bound
    /// of the full KL, tight when K covers most of the mass. Correlation then uses the K logits.
    #[arg(long, required_unless_present = "prompts", conflicts_with = "prompts")]
    pub reference: Option<PathBuf>,
    /// A prompt set: JSONL, one `{"id": .., "reference": "file relative to the JSONL", "text":
    /// ..}` per line; reports per prompt and in aggregate, with health thresholds.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Write a Markdown summary of the batch report to this file.
    #[arg(long, requires = "prompts")]
    pub markdown: Option<PathBuf>,
    /// Also greedily decode up to N tokens from each reference's prompt part (`prompt_len`) and
    /// compare them with its greedy continuation (`greedy_ids`).
    #[arg(long = "free-run", value_name = "N", value_parser = super::bounds::tokens)]
    pub free_run: Option<usize>,
    #[command(flatten)]
    pub kv: KvArgs,
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
    #[arg(long = "audio")]
    pub audio: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    pub backend: BackendArg,
    #[arg(long, value_parser = super::bounds::threads)]
    pub threads: Option<usize>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    super::media::check_readable(&args.images, &args.audio)?;
    if let Some(set) = &args.prompts {
        return batch::main(&args, set);
    }
    let Some(ref_path) = &args.reference else {
        bail!("give --reference FILE or --prompts SET.jsonl");
    };
    let bytes =
        std::fs::read(ref_path).with_context(|| format!("reading {}", ref_path.display()))?;
    let reference = Reference::parse(&bytes)
        .with_context(|| format!("reading reference {}", ref_path.display()))?;
    let options = SessionOptions {
        backend: super::run::backend(args.backend),
        ..args.kv.options(args.threads)
    };
    let mut session = Session::load(&args.model, options)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let vocab = session.info().vocab_size;
    let media = super::media::media_embeddings_for_ids(
        &session,
        &args.images,
        &args.audio,
        &reference.ids,
    )?;
    let ours = session.logits_for(&reference.ids, &media)?;
    let mut report = compare(&reference, &ours, vocab)?;
    if let Some(n) = args.free_run {
        report.free_run = batch::free_run(&mut session, &reference, n)?;
    }
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
        println!("mean entropy (ours) {:.4}", report.entropy_ours_mean);
        if let Some(f) = &report.free_run {
            println!(
                "free-running       {} tokens, first divergence {}, greedy match {:.1}%",
                f.tokens,
                f.first_divergence
                    .map_or("none".to_string(), |p| format!("step {p}")),
                f.match_rate * 100.0
            );
        }
    }
    Ok(())
}

/// Reference logits read from a safetensors file.
pub struct Reference {
    pub ids: Vec<u32>,
    pub kind: RefLogits,
    /// How many of `ids` are the prompt (the rest is the reference's greedy continuation).
    pub prompt_len: Option<usize>,
    /// The reference model's own greedy continuation of the prompt.
    pub greedy_ids: Option<Vec<u32>>,
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
        let prompt_len = if names.iter().any(|s| s == "prompt_len") {
            let (v, _) = ints(&st, "prompt_len")?;
            match v.as_slice() {
                [p] if *p as usize >= 1 && *p as usize <= n => Some(*p as usize),
                _ => bail!("prompt_len must be one value in 1..={n}, found {v:?}"),
            }
        } else {
            None
        };
        let greedy_ids = if names.iter().any(|s| s == "greedy_ids") {
            Some(ints(&st, "greedy_ids")?.0)
        } else {
            None
        };
        // Without `prompt_len`, a greedy continuation continues the whole input.
        let prompt_len = prompt_len.or(greedy_ids.as_ref().map(|_| n));
        Ok(Self {
            ids,
            kind,
            prompt_len,
            greedy_ids,
        })
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
    /// Mean entropy (nats) of the reference distribution.
    pub entropy_mean: f64,
    /// Mean entropy (nats) of our full distribution (near 0: collapse).
    pub entropy_ours_mean: f64,
    /// Greedy decoding from the prompt part against the reference's continuation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_run: Option<batch::FreeRun>,
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
    let mut ent_ours_sum = 0.0f64;
    let mut matches = 0usize;
    let mut first_divergence = None;
    for t in 0..n {
        let q = &ours[t * vocab..(t + 1) * vocab];
        let lq = log_sum_exp(q);
        ent_ours_sum -= q
            .iter()
            .map(|&b| {
                let l = b as f64 - lq;
                l.exp() * l
            })
            .sum::<f64>();
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
        entropy_ours_mean: ent_ours_sum / nf,
        free_run: None,
    })
}
