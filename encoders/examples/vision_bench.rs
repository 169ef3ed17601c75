//! Times the vision tower of a `.cellm` file on the CPU and on the GPU for one image, and checks
//! that both give the same soft tokens.
//!
//! `cargo run --release -p cellm-encoders --example vision_bench -- MODEL IMAGE [--budget 280[,560..]] [--runs 3] [--profile int4]`
//!
//! MODEL is a `.cellm` file, or a `synthetic:` source (say `synthetic:gemma4-e2b-media`, the
//! real E2B shapes with random weights) that is first converted with `--profile` into a
//! temporary file, or into `--keep FILE` to reuse it next time (as `cellm convert` would; for a
//! machine without the `cellm` binary).
//! Each side: one warm-up encode, then `--runs` timed encodes (mean and best printed);
//! `--gpu-only` skips the CPU.

use cellm_convert::{ConvertError, ConvertOptions, Profile, convert, open_source};
use cellm_encoders::vision::gpu::VisionGpu;
use cellm_encoders::vision::preprocess::preprocess_file;
use cellm_encoders::vision::tower::VisionTower;
use cellm_engine::format::CellmFile;
use cellm_engine::kernels::gpu::GpuContext;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

struct Args {
    model: PathBuf,
    image: PathBuf,
    budgets: Vec<usize>,
    runs: usize,
    profile: Profile,
    /// Where the converted synthetic model goes (reused when it exists); default: a temp dir.
    keep: Option<PathBuf>,
    /// Time the GPU only (no CPU encode, no comparison).
    gpu_only: bool,
}

fn parse_args() -> Result<Args, String> {
    let usage = "usage: vision_bench MODEL IMAGE [--budget 280[,560..]] [--runs 3] [--profile int4] [--keep FILE] [--gpu-only]";
    let mut pos = Vec::new();
    let (mut budgets, mut runs, mut profile) = (vec![280], 3, Profile::Int4);
    let (mut keep, mut gpu_only) = (None, false);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<usize, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} takes a number; {usage}"))
        };
        match a.as_str() {
            "--budget" => {
                let v = it.next().unwrap_or_default();
                budgets = v
                    .split(',')
                    .map(|b| b.parse().map_err(|_| format!("--budget {v}; {usage}")))
                    .collect::<Result<_, _>>()?;
            }
            "--runs" => runs = num("--runs")?.max(1),
            "--gpu-only" => gpu_only = true,
            "--keep" => keep = Some(PathBuf::from(it.next().ok_or("--keep takes a path")?)),
            "--profile" => {
                let v = it.next().ok_or("--profile takes a name")?;
                profile = v.parse().map_err(|e: ConvertError| e.to_string())?;
            }
            _ if a.starts_with("--") => return Err(format!("unknown flag {a}; {usage}")),
            _ => pos.push(PathBuf::from(a)),
        }
    }
    match <[PathBuf; 2]>::try_from(pos) {
        Ok([model, image]) => Ok(Args {
            model,
            image,
            budgets,
            runs,
            profile,
            keep,
            gpu_only,
        }),
        Err(_) => Err(usage.into()),
    }
}

/// Runs `f` once to warm up, then `runs` times; returns the last result and the mean and best
/// milliseconds of the timed runs.
fn time<T>(runs: usize, mut f: impl FnMut() -> Result<T, String>) -> Result<(T, f64, f64), String> {
    f()?;
    let mut ms = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        last = Some(f()?);
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let best = ms.iter().cloned().fold(f64::INFINITY, f64::min);
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    last.map(|v| (v, mean, best))
        .ok_or_else(|| "no timed run".into())
}

/// Converts a `synthetic:` source into `out` (unless it is already there).
fn convert_synthetic(spec: &Path, profile: Profile, out: PathBuf) -> Result<PathBuf, String> {
    if out.exists() {
        return Ok(out);
    }
    let t = Instant::now();
    let source = open_source(spec).map_err(|e| e.to_string())?;
    convert(
        source.as_ref(),
        &out,
        &ConvertOptions::new(profile),
        &mut |_| {},
    )
    .map_err(|e| e.to_string())?;
    eprintln!(
        "converted {} ({profile}) in {:.1} s",
        spec.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(out)
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let model = if args.model.to_string_lossy().starts_with("synthetic:") {
        let out = args
            .keep
            .clone()
            .unwrap_or_else(|| dir.path().join("synthetic.cellm"));
        convert_synthetic(&args.model, args.profile, out)?
    } else {
        args.model.clone()
    };
    let file = CellmFile::open(&model).map_err(|e| e.to_string())?;
    let tower = VisionTower::load(&file)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{} has no vision tower", args.model.display()))?;
    let ctx = Arc::new(GpuContext::new().map_err(|e| e.to_string())?);
    let t = Instant::now();
    let gpu = VisionGpu::new(ctx.clone(), &tower).map_err(|e| e.to_string())?;
    ctx.wait().map_err(|e| e.to_string())?;
    println!(
        "{} layers, hidden {}; GPU {}: weights uploaded in {:.0} ms",
        tower.config.layers,
        tower.config.hidden,
        ctx.adapter(),
        t.elapsed().as_secs_f64() * 1e3
    );
    for &budget in &args.budgets {
        bench_budget(&args, &tower, &gpu, budget)?;
    }
    Ok(())
}

/// Times both towers on the image at one soft-token budget and compares their outputs.
fn bench_budget(
    args: &Args,
    tower: &VisionTower<'_>,
    gpu: &VisionGpu,
    budget: usize,
) -> Result<(), String> {
    let pre = preprocess_file(&args.image, budget).map_err(|e| e.to_string())?;
    println!(
        "{}, budget {budget}: {} patches -> {} soft tokens of {}",
        args.image.display(),
        pre.num_patches,
        tower.soft_tokens(&pre),
        tower.output_dim(),
    );
    let (gpu_out, gpu_mean, gpu_best) = time(args.runs, || {
        gpu.encode(tower, &pre).map_err(|e| e.to_string())
    })?;
    println!("  gpu: mean {gpu_mean:.1} ms, best {gpu_best:.1} ms");
    if args.gpu_only {
        return Ok(());
    }
    let (cpu_out, cpu_mean, cpu_best) =
        time(args.runs, || tower.encode(&pre).map_err(|e| e.to_string()))?;
    println!(
        "  cpu ({} threads): mean {cpu_mean:.1} ms, best {cpu_best:.1} ms",
        rayon::current_num_threads()
    );
    if gpu_out.len() != cpu_out.len() {
        return Err(format!(
            "GPU gave {} values, CPU {}",
            gpu_out.len(),
            cpu_out.len()
        ));
    }
    let (mut max, mut num, mut den) = (0f32, 0f64, 0f64);
    for (g, c) in gpu_out.iter().zip(&cpu_out) {
        max = max.max((g - c).abs());
        num += (*g as f64 - *c as f64).powi(2);
        den += (*c as f64).powi(2);
    }
    println!(
        "  gpu vs cpu: max abs diff {max:.3e}, relative {:.3e}, speed-up {:.1}x",
        (num / den.max(1e-30)).sqrt(),
        cpu_best / gpu_best
    );
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("vision_bench: {e}");
        std::process::exit(1);
    }
}
