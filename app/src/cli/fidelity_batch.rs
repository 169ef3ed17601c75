//! `cellm compare --prompts SET.jsonl`: the divergence harness over a prompt set. Each JSONL line
//! is `{"id": .., "reference": "file relative to the JSONL", "text": ..}`; every reference is
//! compared teacher-forced (all its positions) and, with `--free-run N`, free-running: greedy
//! decoding from its first `prompt_len` ids, checked token by token against its `greedy_ids`.
//! Results per prompt and in aggregate, graded against the health thresholds below, as JSON,
//! text or Markdown.

use super::{Args, Reference, Report, compare};
use anyhow::{Context, bail};
use cellm_engine::sampler::SamplingParams;
use cellm_engine::session::{GenerateParams, Prompt, Session};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Health thresholds (from the seed projects' divergence reports).
pub mod thresholds {
    pub const KL_HEALTHY: f64 = 0.01;
    pub const KL_CONCERNING: f64 = 0.1;
    pub const CORR_HEALTHY: f64 = 0.99;
    pub const CORR_CONCERNING: f64 = 0.95;
    pub const TOP1_HEALTHY: f64 = 0.98;
    pub const TOP1_CONCERNING: f64 = 0.90;
    /// Mean entropy (nats) of our distribution below this: the model collapsed.
    pub const ENTROPY_COLLAPSE: f64 = 0.1;
}

/// Greedy decoding from the prompt against the reference's greedy continuation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FreeRun {
    /// Tokens compared.
    pub tokens: usize,
    /// First step (0-based) where our greedy token differs; `None` if all match.
    pub first_divergence: Option<usize>,
    /// Fraction of steps whose tokens are equal.
    pub match_rate: f64,
    /// Our greedy tokens.
    pub ids: Vec<u32>,
}

/// Greedily decodes `min(n, greedy_ids.len())` tokens from the reference's prompt part and
/// compares them with its greedy continuation. `None` when the reference carries neither
/// `prompt_len` nor `greedy_ids`, or `n` is 0.
pub fn free_run(
    session: &mut Session,
    reference: &Reference,
    n: usize,
) -> anyhow::Result<Option<FreeRun>> {
    let (Some(p), Some(want)) = (reference.prompt_len, reference.greedy_ids.as_ref()) else {
        return Ok(None);
    };
    let n = n.min(want.len());
    if n == 0 {
        return Ok(None);
    }
    let prompt = reference.ids[..p].to_vec();
    // Decode exactly n tokens: no early stop, plain argmax.
    let saved = session.stop_ids().to_vec();
    session.set_stop_ids(Vec::new());
    session.reset();
    let params = GenerateParams {
        sampling: SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            ..SamplingParams::default()
        },
        // The last sampled token is not fed back, so ask for one more to have n in the context.
        max_new_tokens: n + 1,
    };
    let result = session.generate(&Prompt::Tokens(prompt), &params, &mut |_| {});
    session.set_stop_ids(saved);
    result.context("free-running decode")?;
    let ours: Vec<u32> = session
        .context_tokens()
        .get(p..)
        .unwrap_or(&[])
        .iter()
        .take(n)
        .copied()
        .collect();
    session.reset();
    let matched = ours.iter().zip(want).filter(|(a, b)| a == b).count();
    let first_divergence = (0..n).find(|&i| ours.get(i) != Some(&want[i]));
    Ok(Some(FreeRun {
        tokens: n,
        first_divergence,
        match_rate: matched as f64 / n as f64,
        ids: ours,
    }))
}

/// "healthy", "watch" (between the thresholds) or "concerning".
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Grade {
    Healthy,
    Watch,
    Concerning,
}

impl Grade {
    fn mark(self) -> &'static str {
        match self {
            Grade::Healthy => "✓",
            Grade::Watch => "~",
            Grade::Concerning => "✗",
        }
    }
}

/// Grades of one report's metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub kl: Grade,
    pub correlation: Grade,
    pub top1: Grade,
    /// Our mean entropy fell below the collapse threshold.
    pub entropy_collapse: bool,
}

/// The grade of `v` between a healthy and a concerning bound; `lower_is_better` for KL-like
/// measures, else (correlation, match rates) higher is better.
fn grade_between(v: f64, healthy: f64, concerning: f64, lower_is_better: bool) -> Grade {
    let (good, bad) = if lower_is_better {
        (v < healthy, v > concerning)
    } else {
        (v > healthy, v < concerning)
    };
    if good {
        Grade::Healthy
    } else if bad {
        Grade::Concerning
    } else {
        Grade::Watch
    }
}

pub fn grade_kl(kl: f64) -> Grade {
    grade_between(kl, thresholds::KL_HEALTHY, thresholds::KL_CONCERNING, true)
}

pub fn grade_correlation(c: f64) -> Grade {
    grade_between(
        c,
        thresholds::CORR_HEALTHY,
        thresholds::CORR_CONCERNING,
        false,
    )
}

pub fn grade_top1(m: f64) -> Grade {
    grade_between(
        m,
        thresholds::TOP1_HEALTHY,
        thresholds::TOP1_CONCERNING,
        false,
    )
}

fn status(kl: f64, corr: f64, top1: f64, entropy_ours: f64) -> Status {
    Status {
        kl: grade_kl(kl),
        correlation: grade_correlation(corr),
        top1: grade_top1(top1),
        entropy_collapse: entropy_ours < thresholds::ENTROPY_COLLAPSE,
    }
}

#[derive(Debug, serde::Serialize)]
pub struct PromptReport {
    pub id: String,
    pub reference: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(flatten)]
    pub report: Report,
    pub status: Status,
}

/// Free-running results over all prompts that have a greedy continuation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FreeRunAggregate {
    pub prompts: usize,
    pub tokens: usize,
    /// Mean first divergence step, counting a prompt that never diverges as its token count.
    pub first_divergence_mean: f64,
    pub first_divergence_min: Option<usize>,
    /// Prompts whose whole continuation matched.
    pub prompts_matching: usize,
    /// Matching tokens over all compared tokens.
    pub match_rate: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Aggregate {
    pub prompts: usize,
    pub positions: usize,
    /// Means over all positions of all prompts.
    pub kl_mean: f64,
    pub kl_max: f64,
    pub correlation: f64,
    pub top1_match: f64,
    pub entropy_ref_mean: f64,
    pub entropy_ours_mean: f64,
    /// Prompts with at least one concerning metric or an entropy collapse.
    pub prompts_concerning: usize,
    pub free_run: Option<FreeRunAggregate>,
    pub status: Status,
}

#[derive(Debug, serde::Serialize)]
pub struct BatchReport {
    pub model: String,
    pub profile: String,
    pub kv: String,
    pub prompt_set: String,
    pub free_run_tokens: Option<usize>,
    pub thresholds: serde_json::Value,
    pub prompts: Vec<PromptReport>,
    pub aggregate: Aggregate,
}

/// One line of the prompt set.
struct Entry {
    id: String,
    reference: PathBuf,
    shown: String,
    text: Option<String>,
}

fn read_set(path: &Path) -> anyhow::Result<Vec<Entry>> {
    let body =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (i, line) in body.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))?;
        let id = match v.get("id") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => format!("line{}", i + 1),
        };
        let Some(r) = v.get("reference").and_then(|r| r.as_str()) else {
            bail!(
                "{} line {}: missing \"reference\" (a path relative to the JSONL)",
                path.display(),
                i + 1
            );
        };
        out.push(Entry {
            id,
            reference: base.join(r),
            shown: r.to_string(),
            text: v.get("text").and_then(|t| t.as_str()).map(str::to_string),
        });
    }
    if out.is_empty() {
        bail!("{} lists no prompts", path.display());
    }
    Ok(out)
}

/// Runs the whole set on a loaded session.
pub fn run_set(
    session: &mut Session,
    set: &Path,
    free_run_tokens: Option<usize>,
    kv_label: &str,
    model: &Path,
) -> anyhow::Result<BatchReport> {
    let entries = read_set(set)?;
    let vocab = session.info().vocab_size;
    let mut prompts = Vec::with_capacity(entries.len());
    for e in entries {
        let bytes = std::fs::read(&e.reference)
            .with_context(|| format!("prompt '{}': reading {}", e.id, e.reference.display()))?;
        let reference = Reference::parse(&bytes)
            .with_context(|| format!("prompt '{}': reference {}", e.id, e.reference.display()))?;
        let ours = session
            .logits_for(&reference.ids, &[])
            .with_context(|| format!("prompt '{}'", e.id))?;
        let mut report =
            compare(&reference, &ours, vocab).with_context(|| format!("prompt '{}'", e.id))?;
        if let Some(n) = free_run_tokens {
            report.free_run =
                free_run(session, &reference, n).with_context(|| format!("prompt '{}'", e.id))?;
        }
        let status = status(
            report.kl_mean,
            report.correlation,
            report.top1_match,
            report.entropy_ours_mean,
        );
        prompts.push(PromptReport {
            id: e.id,
            reference: e.shown,
            text: e.text,
            report,
            status,
        });
    }
    let aggregate = aggregate(&prompts);
    Ok(BatchReport {
        model: model.display().to_string(),
        profile: session.info().profile.clone(),
        kv: kv_label.to_string(),
        prompt_set: set.display().to_string(),
        free_run_tokens,
        thresholds: serde_json::json!({
            "kl": {"healthy_below": thresholds::KL_HEALTHY, "concerning_above": thresholds::KL_CONCERNING},
            "correlation": {"healthy_above": thresholds::CORR_HEALTHY, "concerning_below": thresholds::CORR_CONCERNING},
            "top1_match": {"healthy_above": thresholds::TOP1_HEALTHY, "concerning_below": thresholds::TOP1_CONCERNING},
            "entropy_collapse_below": thresholds::ENTROPY_COLLAPSE,
        }),
        prompts,
        aggregate,
    })
}

pub fn aggregate(prompts: &[PromptReport]) -> Aggregate {
    let positions: usize = prompts.iter().map(|p| p.report.positions).sum();
    let w = |f: &dyn Fn(&Report) -> f64| -> f64 {
        prompts
            .iter()
            .map(|p| f(&p.report) * p.report.positions as f64)
            .sum::<f64>()
            / positions.max(1) as f64
    };
    let kl_mean = w(&|r| r.kl_mean);
    let correlation = w(&|r| r.correlation);
    let top1_match = w(&|r| r.top1_match);
    let entropy_ours_mean = w(&|r| r.entropy_ours_mean);
    let runs: Vec<&FreeRun> = prompts
        .iter()
        .filter_map(|p| p.report.free_run.as_ref())
        .collect();
    let free_run = (!runs.is_empty()).then(|| {
        let tokens: usize = runs.iter().map(|r| r.tokens).sum();
        FreeRunAggregate {
            prompts: runs.len(),
            tokens,
            first_divergence_mean: runs
                .iter()
                .map(|r| r.first_divergence.unwrap_or(r.tokens) as f64)
                .sum::<f64>()
                / runs.len() as f64,
            first_divergence_min: runs.iter().filter_map(|r| r.first_divergence).min(),
            prompts_matching: runs.iter().filter(|r| r.first_divergence.is_none()).count(),
            match_rate: runs
                .iter()
                .map(|r| r.match_rate * r.tokens as f64)
                .sum::<f64>()
                / tokens.max(1) as f64,
        }
    });
    let prompts_concerning = prompts
        .iter()
        .filter(|p| {
            let s = &p.status;
            s.entropy_collapse || [s.kl, s.correlation, s.top1].contains(&Grade::Concerning)
        })
        .count();
    Aggregate {
        prompts: prompts.len(),
        positions,
        kl_mean,
        kl_max: prompts.iter().map(|p| p.report.kl_max).fold(0.0, f64::max),
        correlation,
        top1_match,
        entropy_ref_mean: w(&|r| r.entropy_mean),
        entropy_ours_mean,
        prompts_concerning,
        free_run,
        status: status(kl_mean, correlation, top1_match, entropy_ours_mean),
    }
}

fn free_run_cells(f: Option<&FreeRun>) -> (String, String) {
    match f {
        Some(f) => (
            f.first_divergence
                .map_or(format!("none/{}", f.tokens), |d| {
                    format!("{d}/{}", f.tokens)
                }),
            format!("{:.1}%", f.match_rate * 100.0),
        ),
        None => ("-".into(), "-".into()),
    }
}

/// The Markdown summary: settings, thresholds, one row per prompt and the aggregate.
pub fn markdown(r: &BatchReport) -> String {
    use thresholds::*;
    let mut s = String::new();
    let _ = writeln!(s, "# Divergence report\n");
    let _ = writeln!(
        s,
        "- model: `{}` (profile {}), KV cache {}\n- prompt set: `{}` ({} prompts, {} positions)",
        r.model, r.profile, r.kv, r.prompt_set, r.aggregate.prompts, r.aggregate.positions
    );
    if let Some(n) = r.free_run_tokens {
        let _ = writeln!(s, "- free-running: up to {n} greedy tokens per prompt");
    }
    let _ = writeln!(
        s,
        "- thresholds: KL healthy < {KL_HEALTHY}, concerning > {KL_CONCERNING}; correlation \
         healthy > {CORR_HEALTHY}, concerning < {CORR_CONCERNING}; top-1 healthy > {:.0}%, \
         concerning < {:.0}%; entropy collapse < {ENTROPY_COLLAPSE} nats. Marks: ✓ healthy, \
         ~ in between, ✗ concerning.\n",
        TOP1_HEALTHY * 100.0,
        TOP1_CONCERNING * 100.0
    );
    let _ = writeln!(
        s,
        "| prompt | positions | KL mean | KL max | correlation | top-1 | entropy ref / ours | \
         free-run first divergence | free-run match |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for p in &r.prompts {
        let (fd, fm) = free_run_cells(p.report.free_run.as_ref());
        let rep = &p.report;
        let _ = writeln!(
            s,
            "| {} | {} | {:.2e} {} | {:.2e} | {:.4} {} | {:.1}% {} | {:.3} / {:.3}{} | {fd} | {fm} |",
            p.id,
            rep.positions,
            rep.kl_mean,
            p.status.kl.mark(),
            rep.kl_max,
            rep.correlation,
            p.status.correlation.mark(),
            rep.top1_match * 100.0,
            p.status.top1.mark(),
            rep.entropy_mean,
            rep.entropy_ours_mean,
            if p.status.entropy_collapse {
                " ✗ collapse"
            } else {
                ""
            },
        );
    }
    let a = &r.aggregate;
    let (fd, fm) = match &a.free_run {
        Some(f) => (
            format!(
                "mean {:.1}, min {}",
                f.first_divergence_mean,
                f.first_divergence_min
                    .map_or("none".to_string(), |d| d.to_string())
            ),
            format!(
                "{:.1}% ({}/{} prompts all match)",
                f.match_rate * 100.0,
                f.prompts_matching,
                f.prompts
            ),
        ),
        None => ("-".into(), "-".into()),
    };
    let _ = writeln!(
        s,
        "| **all** | {} | {:.2e} {} | {:.2e} | {:.4} {} | {:.1}% {} | {:.3} / {:.3}{} | {fd} | {fm} |",
        a.positions,
        a.kl_mean,
        a.status.kl.mark(),
        a.kl_max,
        a.correlation,
        a.status.correlation.mark(),
        a.top1_match * 100.0,
        a.status.top1.mark(),
        a.entropy_ref_mean,
        a.entropy_ours_mean,
        if a.status.entropy_collapse {
            " ✗ collapse"
        } else {
            ""
        },
    );
    let _ = writeln!(
        s,
        "\n{} of {} prompts have a concerning metric.",
        a.prompts_concerning, a.prompts
    );
    s
}

pub fn main(args: &Args, set: &Path) -> anyhow::Result<()> {
    if !args.images.is_empty() || !args.audio.is_empty() {
        bail!("--image / --audio cannot be combined with --prompts (text prompt sets only)");
    }
    if let Some(md) = &args.markdown {
        cellm_engine::atomic_file::check_not_input(md, &[&args.model, set])
            .map_err(anyhow::Error::msg)?;
    }
    let mut session = Session::load(&args.model, args.kv.options(args.threads))
        .with_context(|| format!("loading {}", args.model.display()))?;
    let report = run_set(
        &mut session,
        set,
        args.free_run,
        &args.kv.label(),
        &args.model,
    )?;
    if let Some(md) = &args.markdown {
        cellm_engine::atomic_file::write_atomic(md, markdown(&report).as_bytes())
            .with_context(|| format!("writing {}", md.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for p in &report.prompts {
            let (fd, fm) = free_run_cells(p.report.free_run.as_ref());
            println!(
                "{:<16} {:>4} pos  KL {:.2e} (max {:.2e})  corr {:.4}  top-1 {:5.1}%  free-run {fd} {fm}",
                p.id,
                p.report.positions,
                p.report.kl_mean,
                p.report.kl_max,
                p.report.correlation,
                p.report.top1_match * 100.0
            );
        }
        let a = &report.aggregate;
        println!(
            "{:<16} {:>4} pos  KL {:.2e} (max {:.2e})  corr {:.4}  top-1 {:5.1}%  ({} concerning)",
            "all",
            a.positions,
            a.kl_mean,
            a.kl_max,
            a.correlation,
            a.top1_match * 100.0,
            a.prompts_concerning
        );
    }
    Ok(())
}
