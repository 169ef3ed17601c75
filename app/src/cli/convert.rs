use anyhow::Context;
use cellm_convert::{ConvertOptions, Phase, Profile, SYNTHETIC_PREFIX};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A Hugging Face model folder or a .gguf file.
    pub input: PathBuf,
    /// Output .cellm path.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Gemma 4 GGUF: the mmproj GGUF holding the vision and audio towers. Default: the one
    /// .gguf file next to the model whose name contains "mmproj", if any (else text only).
    #[arg(long)]
    pub mmproj: Option<PathBuf>,
    /// Quantization profile: f32, f16, bf16, int8, int4, mixed-int4, awq-int4
    /// (int4 with activation-aware scales from --calib), lut4, lut6, auto (the smallest
    /// f16/int8/int4 mix meeting --target-kl). Default int8, or auto when --target-kl is given.
    #[arg(long)]
    pub profile: Option<String>,
    /// Profile auto: largest mean KL(f32 || converted) on the calibration text (--calib,
    /// default assets/calibration.txt), e.g. 0.01. Implies --profile auto.
    #[arg(long, value_parser = super::bounds::target_kl)]
    pub target_kl: Option<f64>,
    /// Profile auto: write the sensitivity scan, plan and measured points as JSON to FILE.
    #[arg(long)]
    pub scan_json: Option<PathBuf>,
    /// Profile auto: worker threads for the scan (default: all cores).
    #[arg(long, value_parser = super::bounds::threads)]
    pub threads: Option<usize>,
    /// Group size for int8/int4 weights (32, 64, 128).
    #[arg(long, value_parser = super::bounds::group_size)]
    pub group_size: Option<usize>,
    /// lut4/lut6: rows sharing one palette (default 8; 0 = one palette per tensor).
    #[arg(long, value_parser = super::bounds::group_size)]
    pub lut_group: Option<usize>,
    /// lut4/lut6: storage of the embeddings / LM head: lut4, lut6, int8 or f16 (default int8).
    #[arg(long)]
    pub head_lut: Option<String>,
    /// Layers kept at f16 whatever the profile, e.g. 0,1,17.
    #[arg(long, value_delimiter = ',', value_parser = super::bounds::layer)]
    pub exclude_layers: Vec<usize>,
    /// Calibration text (for awq-int4 and fidelity measurement).
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// After converting, measure KL / top-1 / correlation against an f32 conversion of the same
    /// input on the calibration text (--calib, default assets/calibration.txt) and store them in
    /// the file's header (shown by `cellm inspect`).
    #[arg(long = "measure-fidelity")]
    pub measure_fidelity: bool,
}

/// True when `a` and `b` name the same existing file or folder.
fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", units[u])
    }
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let profile: Profile = match (&args.profile, args.target_kl) {
        (Some(p), _) => p.parse()?,
        (None, Some(_)) => Profile::Auto,
        (None, None) => Profile::Int8,
    };
    super::convert_auto::check_args(&args, profile)?;
    if args.calib.is_some()
        && !args.measure_fidelity
        && !matches!(profile, Profile::AwqInt4 | Profile::Auto)
    {
        anyhow::bail!(
            "--calib is used by --profile awq-int4, --profile auto and --measure-fidelity only"
        );
    }
    let is_synthetic = args.input.to_string_lossy().starts_with(SYNTHETIC_PREFIX);
    if !is_synthetic && same_path(&args.input, &args.output) {
        anyhow::bail!(
            "refusing to overwrite the input {}; choose another output path",
            args.input.display()
        );
    }
    let parent = match args.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        anyhow::bail!("output directory {} does not exist", parent.display());
    }

    let source = cellm_convert::open_source_with_mmproj(&args.input, args.mmproj.as_deref())
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    let mut options = ConvertOptions::new(profile);
    options.group_size = args.group_size;
    options.exclude_layers = args.exclude_layers.clone();
    if profile == Profile::AwqInt4
        && let Some(c) = &args.calib
    {
        options.calibration = Some(cellm_convert::quant::awq::CalibrationText {
            name: c.display().to_string(),
            text: std::fs::read_to_string(c)
                .with_context(|| format!("reading calibration text {}", c.display()))?,
        });
    }
    options.lut_group = args.lut_group;
    options.head_lut = args.head_lut.clone();
    if profile == Profile::Auto {
        return super::convert_auto::main(&args, source.as_ref(), options);
    }

    eprintln!(
        "converting {} ({}, {} tensors) to {} with profile {}",
        args.input.display(),
        source.family(),
        source.tensors().len(),
        args.output.display(),
        profile
    );
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template(
        "{prefix:>9} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {wide_msg}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    let mut phase = None;
    let summary = cellm_convert::convert(source.as_ref(), &args.output, &options, &mut |p| {
        if phase != Some(p.phase) {
            phase = Some(p.phase);
            bar.reset();
            bar.set_prefix(match p.phase {
                Phase::Hashing => "hashing",
                Phase::Converting => "writing",
            });
        }
        bar.set_length(p.bytes_total);
        bar.set_position(p.bytes_done);
        if p.phase == Phase::Converting && p.index < p.count {
            bar.set_message(format!("{}/{} {}", p.index + 1, p.count, p.name));
        } else {
            bar.set_message(p.name);
        }
    });
    bar.finish_and_clear();
    let summary = summary.with_context(|| format!("converting {}", args.input.display()))?;

    for note in &summary.notes {
        eprintln!("note: {note}");
    }
    println!(
        "wrote {}: {} tensors, {} in {:.1} s",
        summary.output.display(),
        summary.tensors,
        human_bytes(summary.file_bytes),
        summary.elapsed.as_secs_f64()
    );
    for (dtype, (n, bytes)) in &summary.by_dtype {
        println!("  {dtype:>4}: {n:>5} tensors, {}", human_bytes(*bytes));
    }
    if args.measure_fidelity {
        measure_fidelity(&args, source.as_ref(), profile)?;
    }
    Ok(())
}

/// `--measure-fidelity`: compares the new file with an f32 conversion of the same input and
/// stores the result in its header.
fn measure_fidelity(
    args: &Args,
    source: &dyn cellm_convert::source::Source,
    profile: Profile,
) -> anyhow::Result<()> {
    use cellm_convert::fidelity::{FidelityOptions, measure, store};
    if profile == Profile::F32 {
        eprintln!("note: an f32 file is its own reference; fidelity not measured");
        return Ok(());
    }
    let mut opts = FidelityOptions::default();
    if let Some(c) = &args.calib {
        opts.calibration_text = std::fs::read_to_string(c)
            .with_context(|| format!("reading calibration text {}", c.display()))?;
        opts.calibration_name = c.display().to_string();
    }
    eprintln!(
        "measuring fidelity against an f32 conversion on {} ...",
        opts.calibration_name
    );
    let f = measure(source, &args.output, &opts).context("measuring fidelity")?;
    store(&args.output, &f).context("storing fidelity in the header")?;
    println!(
        "fidelity: KL mean {:.3e} (max {:.3e}), top-1 {:.1}%, correlation {:.5} over {} positions",
        f.kl_mean,
        f.kl_max,
        f.top1_match * 100.0,
        f.correlation,
        f.positions
    );
    Ok(())
}
