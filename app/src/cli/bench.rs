use super::BackendArg;
use anyhow::{Context, bail};
use cellm_engine::kernels::cpu::measure_read_bandwidth;
use cellm_engine::sampler::SamplingParams;
use cellm_engine::session::{GenerateParams, MemoryBreakdown, Prompt, Session, SessionOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    #[arg(long = "prompt-tokens", default_value_t = 128, value_parser = super::bounds::tokens)]
    pub prompt_tokens: usize,
    #[arg(long = "gen-tokens", default_value_t = 64, value_parser = super::bounds::tokens)]
    pub gen_tokens: usize,
    #[arg(long, value_parser = super::bounds::threads)]
    pub threads: Option<usize>,
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    pub backend: BackendArg,
    #[arg(long, default_value_t = 1, value_parser = super::bounds::repeat)]
    pub repeat: usize,
    #[arg(long)]
    pub csv: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub kv: super::compare::KvArgs,
}

#[derive(Debug, serde::Serialize)]
struct BenchRow {
    model: String,
    profile: String,
    /// Where the model ran, with `auto`'s probe result (e.g. "cpu (auto: CPU 63 vs GPU 40 tok/s)").
    backend: String,
    threads: usize,
    prompt_tokens: usize,
    gen_tokens: usize,
    load_secs: f64,
    /// From the start of the load to the first generated token of the first run.
    first_token_secs: f64,
    prefill_tok_s: f64,
    decode_tok_s: f64,
    peak_rss_mb: f64,
    weight_bytes_per_token: usize,
    /// The memory read bandwidth decode is held against: the CPU's (a multi-threaded read of
    /// host memory) or, on the GPU backend, the adapter's (a streaming read kernel).
    read_bandwidth_gb_s: f64,
    /// Whose bandwidth `read_bandwidth_gb_s` is: "cpu" or "gpu".
    bandwidth_of: &'static str,
    /// Decode's weight traffic as a share of the measured read bandwidth.
    bandwidth_use_pct: f64,
    /// Where the memory goes after the last run (before the bandwidth probe).
    memory: MemoryBreakdown,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    if args.prompt_tokens == 0 || args.gen_tokens == 0 || args.repeat == 0 {
        bail!("--prompt-tokens, --gen-tokens and --repeat must be at least 1");
    }
    if let Some(csv) = &args.csv {
        cellm_engine::atomic_file::check_not_input(csv, &[&args.model])
            .map_err(anyhow::Error::msg)?;
    }
    let t0 = Instant::now();
    let mut session = Session::load(
        &args.model,
        SessionOptions {
            threads: args.threads,
            kv_precision: args.kv.kv,
            kv_rotation: args.kv.rotation(),
            backend: super::run::backend(args.backend),
            ..SessionOptions::default()
        },
    )
    .with_context(|| format!("loading {}", args.model.display()))?;
    let load_secs = t0.elapsed().as_secs_f64();
    eprintln!("backend: {}", session.backend());
    // Decode exactly --gen-tokens: no stop ids.
    session.set_stop_ids(Vec::new());
    let ids = random_prompt(&session, args.prompt_tokens);
    let params = GenerateParams {
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        max_new_tokens: args.gen_tokens,
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let (mut best_prefill, mut best_decode) = (0f64, 0f64);
    let mut first_token_secs = 0.0;
    for r in 0..args.repeat {
        session.reset();
        let stats = session.generate(&Prompt::Tokens(ids.clone()), &params, &mut |_| {})?;
        if r == 0 {
            // The first token is sampled from the prefill's logits.
            first_token_secs = load_secs + stats.prefill_secs;
        }
        // The first sampled token comes from the prefill logits: decode runs one forward fewer.
        let forwards = stats.generated_tokens.saturating_sub(1).max(1);
        let decode = forwards as f64 / stats.decode_secs.max(1e-9);
        eprintln!(
            "run {}: prefill {:.1} tok/s, decode {:.2} tok/s",
            r + 1,
            stats.prefill_tok_s(),
            decode
        );
        best_prefill = best_prefill.max(stats.prefill_tok_s());
        best_decode = best_decode.max(decode);
    }
    // Before the bandwidth probe, which allocates a large buffer of its own.
    let memory = session.memory();
    let peak_rss = memory.process.map_or(0, |p| p.peak_rss_bytes);
    // Decode on the GPU reads its weights from device memory: hold it against the adapter's
    // read bandwidth, not the CPU's.
    let on_gpu = session.backend().starts_with("gpu");
    let (bandwidth, bandwidth_of) = if on_gpu {
        (gpu_read_bandwidth()?, "gpu")
    } else {
        let cpu = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map(|p| p.install(measure_read_bandwidth))
            .unwrap_or_else(|_| measure_read_bandwidth());
        (cpu, "cpu")
    };
    let bytes = session.weight_bytes_per_token();
    let row = BenchRow {
        model: args.model.display().to_string(),
        profile: session.info().profile.clone(),
        backend: session.backend().to_owned(),
        threads,
        prompt_tokens: args.prompt_tokens,
        gen_tokens: args.gen_tokens,
        load_secs,
        first_token_secs,
        prefill_tok_s: best_prefill,
        decode_tok_s: best_decode,
        peak_rss_mb: peak_rss as f64 / 1e6,
        weight_bytes_per_token: bytes,
        read_bandwidth_gb_s: bandwidth,
        bandwidth_of,
        bandwidth_use_pct: 100.0 * bytes as f64 * best_decode / (bandwidth * 1e9),
        memory,
    };
    if args.json {
        println!("{}", serde_json::to_string(&row)?);
    } else {
        println!("model              {} ({})", row.model, row.profile);
        println!("backend            {}", row.backend);
        println!("threads            {}", row.threads);
        println!("load               {:.3} s", row.load_secs);
        println!("to first token     {:.3} s", row.first_token_secs);
        println!(
            "prefill            {:.1} tok/s ({} tokens)",
            row.prefill_tok_s, row.prompt_tokens
        );
        println!(
            "decode             {:.2} tok/s ({} tokens)",
            row.decode_tok_s, row.gen_tokens
        );
        println!("peak RSS           {:.1} MB", row.peak_rss_mb);
        print_memory(&row.memory);
        println!(
            "weights per token  {:.1} MB",
            row.weight_bytes_per_token as f64 / 1e6
        );
        let whose = match row.bandwidth_of {
            "gpu" => "GPU (measured read kernel)",
            _ => "CPU (measured)",
        };
        println!(
            "read bandwidth     {:.1} GB/s, {whose}",
            row.read_bandwidth_gb_s
        );
        println!(
            "bandwidth use      {:.1}% of the {} read bandwidth",
            row.bandwidth_use_pct,
            row.bandwidth_of.to_uppercase()
        );
    }
    if let Some(path) = &args.csv {
        write_csv(path, &row).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The GPU adapter's device-memory read bandwidth (GB/s), measured on a context of its own.
fn gpu_read_bandwidth() -> anyhow::Result<f64> {
    use cellm_engine::kernels::gpu::{GpuContext, bandwidth};
    let ctx = GpuContext::new().context("GPU bandwidth probe")?;
    bandwidth::measure_read_bandwidth(&ctx).context("GPU bandwidth probe")
}

/// `n` token ids drawn from the ordinary part of the vocabulary (a fixed seed, after BOS).
fn random_prompt(session: &Session, n: usize) -> Vec<u32> {
    let vocab = session.info().vocab_size as u64;
    let tok = session.tokenizer();
    let mut ids = Vec::with_capacity(n);
    if let Some(bos) = tok.bos_id() {
        ids.push(bos);
    }
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    // Skip the low ids, where Gemma keeps its control tokens.
    let lo = 256.min(vocab / 2);
    while ids.len() < n {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ids.push((lo + (state >> 33) % (vocab - lo)) as u32);
    }
    ids
}

/// The breakdown as indented lines under "peak RSS".
fn print_memory(m: &MemoryBreakdown) {
    let mb = |b: u64| b as f64 / 1e6;
    if let Some(p) = m.process {
        println!(
            "  resident now     {:.1} MB anonymous + {:.1} MB file-backed",
            mb(p.rss_anon_bytes),
            mb(p.rss_file_bytes)
        );
    }
    match m.mapped_resident_bytes {
        Some(r) => println!(
            "  mapped weights   {:.1} MB resident of a {:.1} MB file",
            mb(r),
            mb(m.file_bytes)
        ),
        None => println!("  mapped weights   {:.1} MB file", mb(m.file_bytes)),
    }
    println!("  tokenizer        {:.1} MB", mb(m.tokenizer_bytes));
    println!("  KV cache         {:.1} MB", mb(m.kv_cache_bytes));
    println!("  scratch          {:.1} MB", mb(m.scratch_bytes));
    println!("  logits           {:.1} MB", mb(m.logits_bytes));
    if m.device_weight_bytes + m.device_state_bytes > 0 {
        println!(
            "  on the device    {:.1} MB weights + {:.1} MB state",
            mb(m.device_weight_bytes),
            mb(m.device_state_bytes)
        );
    }
    if let Some(o) = m.other_anon_bytes {
        println!("  other anonymous  {:.1} MB", mb(o));
    }
}

fn write_csv(path: &std::path::Path, row: &BenchRow) -> anyhow::Result<()> {
    // Appends a row by rewriting the whole file atomically: an interrupted run never leaves a
    // torn row.
    let mut f: Vec<u8> = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if f.is_empty() {
        writeln!(
            f,
            "model,profile,threads,prompt_tokens,gen_tokens,load_secs,prefill_tok_s,decode_tok_s,peak_rss_mb,weight_bytes_per_token,read_bandwidth_gb_s,bandwidth_use_pct"
        )?;
    }
    writeln!(
        f,
        "{},{},{},{},{},{:.4},{:.2},{:.3},{:.1},{},{:.2},{:.2}",
        row.model.replace(',', "_"),
        row.profile,
        row.threads,
        row.prompt_tokens,
        row.gen_tokens,
        row.load_secs,
        row.prefill_tok_s,
        row.decode_tok_s,
        row.peak_rss_mb,
        row.weight_bytes_per_token,
        row.read_bandwidth_gb_s,
        row.bandwidth_use_pct
    )?;
    cellm_engine::atomic_file::write_atomic(path, &f)
        .with_context(|| format!("writing {}", path.display()))
}
