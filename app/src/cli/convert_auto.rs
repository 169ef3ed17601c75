//! `cellm convert --profile auto --target-kl X`: the sensitivity scan, the chosen mix and its
//! measured KL (progress on stderr, summary on stdout, `--scan-json` for the whole report).

use super::convert::Args;
use anyhow::Context;
use cellm_convert::ConvertOptions;
use cellm_convert::Profile;
use cellm_convert::quant::auto::{AutoOptions, AutoProgress, AutoStage, convert_auto};
use cellm_convert::source::Source;
use std::io::Write;
use std::time::Instant;

/// Flag combinations of the auto profile.
pub fn check_args(args: &Args, profile: Profile) -> anyhow::Result<()> {
    let auto = profile == Profile::Auto;
    if auto && args.target_kl.is_none() {
        anyhow::bail!("--profile auto needs --target-kl (e.g. --target-kl 0.01)");
    }
    if !auto {
        for (given, flag) in [
            (args.target_kl.is_some(), "--target-kl"),
            (args.scan_json.is_some(), "--scan-json"),
            (args.threads.is_some(), "--threads"),
        ] {
            if given {
                anyhow::bail!("{flag} applies to --profile auto only (profile is {profile})");
            }
        }
    }
    if let Some(t) = args.target_kl
        && (!t.is_finite() || t < 0.0)
    {
        anyhow::bail!("--target-kl must be a number >= 0, e.g. 0.01 (got {t})");
    }
    if auto && args.measure_fidelity {
        eprintln!("note: --profile auto always measures and stores the fidelity");
    }
    Ok(())
}

fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
}

pub fn main(args: &Args, source: &dyn Source, options: ConvertOptions) -> anyhow::Result<()> {
    let target = args.target_kl.context("--profile auto needs --target-kl")?;
    if let Some(path) = &args.scan_json {
        let mut inputs = vec![args.input.as_path(), args.output.as_path()];
        inputs.extend(args.calib.as_deref());
        cellm_engine::atomic_file::check_not_input(path, &inputs).map_err(anyhow::Error::msg)?;
    }
    let mut auto = AutoOptions::new(target);
    auto.threads = args.threads;
    if let Some(c) = &args.calib {
        auto.calibration_text = std::fs::read_to_string(c)
            .with_context(|| format!("reading calibration text {}", c.display()))?;
        auto.calibration_name = c.display().to_string();
    }
    eprintln!(
        "converting {} ({}, {} tensors) to {} with profile auto, target KL {target}",
        args.input.display(),
        source.family(),
        source.tensors().len(),
        args.output.display(),
    );
    // One line per stage change and every few seconds within one (stderr may be a log file).
    let start = Instant::now();
    let mut last: Option<(AutoStage, Instant)> = None;
    let mut report_line = |p: AutoProgress| {
        let now = Instant::now();
        let due = match last {
            Some((stage, at)) => stage != p.stage || now.duration_since(at).as_secs_f64() >= 5.0,
            None => true,
        };
        if !due {
            return;
        }
        last = Some((p.stage, now));
        let count =
            if p.total > 1 && matches!(p.stage, AutoStage::Scanning | AutoStage::Calibrating) {
                format!(" {}/{}", p.done, p.total)
            } else if p.total > 1 {
                format!(" {:.0}%", 100.0 * p.done as f64 / p.total as f64)
            } else {
                String::new()
            };
        eprintln!(
            "[{:6.1}s] {:<11}{count} {}",
            start.elapsed().as_secs_f64(),
            p.stage.name(),
            p.what
        );
        let _ = std::io::stderr().flush();
    };
    let report = convert_auto(source, &args.output, &options, &auto, &mut report_line)
        .with_context(|| format!("converting {}", args.input.display()))?;

    if let Some(path) = &args.scan_json {
        let json = serde_json::to_string_pretty(&report)?;
        cellm_engine::atomic_file::write_atomic(path, json.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    for note in &report.notes {
        eprintln!("note: {note}");
    }
    let mix: Vec<String> = report.mix.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!(
        "wrote {}: {} ({} tensors chosen: {}) in {:.1} s (scan {:.1} s, {} positions)",
        args.output.display(),
        mib(report.file_bytes),
        report.plan.len(),
        mix.join(", "),
        report.total_seconds,
        report.scan_seconds,
        report.scan_positions
    );
    if let Some(f) = &report.fidelity {
        println!(
            "fidelity: KL mean {:.3e} (target {target}, predicted {:.3e}) max {:.3e}, top-1 {:.1}%, \
             correlation {:.5} over {} positions",
            f.kl_mean,
            report.predicted_kl,
            f.kl_max,
            f.top1_match * 100.0,
            f.correlation,
            f.positions
        );
    }
    Ok(())
}

/// Readable lines for the header's `fidelity.auto` object (`cellm inspect`).
pub fn describe(a: &serde_json::Value) -> Vec<String> {
    let num = |k: &str| {
        a.get(k)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(f64::NAN)
    };
    let mut lines = Vec::new();
    let mix: Vec<String> = a
        .get("mix")
        .and_then(serde_json::Value::as_object)
        .map(|m| m.iter().map(|(k, n)| format!("{n} {k}")).collect())
        .unwrap_or_default();
    lines.push(format!(
        "target KL {}: {} (predicted {:.3e}, measured {:.3e}, {} round(s)); scan {} positions \
         in {:.1} s",
        num("target_kl"),
        mix.join(", "),
        num("predicted_kl"),
        num("calibration_kl"),
        num("rounds"),
        num("scan_positions"),
        num("scan_seconds"),
    ));
    // Which kinds went where, e.g. "int4: up_proj 5, v_proj 3".
    if let Some(plan) = a.get("plan").and_then(serde_json::Value::as_object) {
        let mut by: std::collections::BTreeMap<&str, std::collections::BTreeMap<String, usize>> =
            Default::default();
        for (name, level) in plan {
            let stem = name.strip_suffix(".weight").unwrap_or(name);
            let kind = stem.rsplit('.').next().unwrap_or(stem).to_string();
            *by.entry(level.as_str().unwrap_or("?"))
                .or_default()
                .entry(kind)
                .or_default() += 1;
        }
        for (level, kinds) in by {
            let k: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
            lines.push(format!("{level}: {}", k.join(", ")));
        }
    }
    // The five tensors that cost most at int4.
    if let Some(scan) = a.get("scan").and_then(serde_json::Value::as_array) {
        let mut rows: Vec<(&str, f64)> = scan
            .iter()
            .filter_map(|r| Some((r.get(0)?.as_str()?, r.get(2)?.as_f64()?)))
            .collect();
        rows.sort_by(|x, y| y.1.total_cmp(&x.1));
        let top: Vec<String> = rows
            .iter()
            .take(5)
            .map(|(n, kl)| {
                let short = n.strip_prefix("model.").unwrap_or(n);
                format!(
                    "{} {kl:.1e}",
                    short.strip_suffix(".weight").unwrap_or(short)
                )
            })
            .collect();
        lines.push(format!(
            "most sensitive at int4 ({} scanned): {}",
            rows.len(),
            top.join(", ")
        ));
    }
    if let Some(points) = a.get("points").and_then(serde_json::Value::as_array) {
        let p: Vec<String> = points
            .iter()
            .filter_map(|p| {
                let label = p.get("label")?.as_str()?;
                let bytes = p.get("bytes")?.as_f64()?;
                let kl = p.get("kl")?.as_f64()?;
                Some(format!("{label} {} KL {kl:.2e}", mib(bytes as u64)))
            })
            .collect();
        lines.push(format!("measured: {}", p.join("; ")));
    }
    lines
}
