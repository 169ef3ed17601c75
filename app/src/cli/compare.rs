use super::BackendArg;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// safetensors with `input_ids` [T] (i64) and `logits` [T, V] (f32 or f16).
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
    let _ = args;
    anyhow::bail!("`cellm compare` is not yet implemented")
}
