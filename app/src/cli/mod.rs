//! Command-line subcommands, one file each. The flags are a stable interface (scripts and tests
//! depend on them); see docs/architecture.md.

pub mod bench;
pub mod bounds;
pub mod compare;
pub mod convert;
pub mod convert_auto;
pub mod inspect;
pub mod media;
pub mod pull;
pub mod run;
pub mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "cellm",
    version,
    about = "Run Gemma models locally; convert checkpoints to .cellm"
)]
pub struct Cli {
    /// Model to open in the desktop app (when no subcommand is given).
    #[arg(short = 'm', long = "model")]
    pub model: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Convert a Hugging Face folder or a .gguf file into a .cellm model.
    Convert(convert::Args),
    /// Generate a reply, streamed to stdout (stats to stderr).
    Run(run::Args),
    /// Compare the engine's logits with reference logits (KL, correlation, top-1 match).
    Compare(compare::Args),
    /// Measure load time, prefill and decode speed, peak memory.
    Bench(bench::Args),
    /// Print a .cellm file's header, tensor table and sizes.
    Inspect(inspect::Args),
    /// Serve a model over an OpenAI-compatible HTTP API (chat, completions, streaming).
    Serve(serve::Args),
    /// Download a model repository from the Hugging Face hub into its cache.
    Pull(pull::Args),
}

pub fn dispatch(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Convert(a) => convert::main(a),
        Command::Run(a) => run::main(a),
        Command::Compare(a) => compare::main(a),
        Command::Bench(a) => bench::main(a),
        Command::Inspect(a) => inspect::main(a),
        Command::Serve(a) => serve::main(a),
        Command::Pull(a) => pull::main(a),
    }
}

/// Backend choice shared by run / compare / bench.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendArg {
    /// The CPU kernels.
    #[default]
    Cpu,
    /// The GPU (wgpu); the CPU, with a message, when no adapter works.
    Gpu,
    /// Whichever decodes faster here, by a short probe cached per model and machine
    /// (CELLM_NO_PROBE_CACHE=1: probe every time; CELLM_PROBE_SOFTWARE=1: probe software
    /// adapters such as lavapipe too).
    Auto,
}
