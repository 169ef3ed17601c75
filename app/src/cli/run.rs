use super::BackendArg;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The .cellm model.
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// The prompt; `-` reads standard input.
    #[arg(short = 'p', long = "prompt")]
    pub prompt: Option<String>,
    /// Images to attach (repeatable).
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
    /// Audio clips to attach (repeatable).
    #[arg(long = "audio")]
    pub audio: Vec<PathBuf>,
    /// Maximum new tokens.
    #[arg(short = 'n', long = "max-new", default_value_t = 256)]
    pub max_new: usize,
    #[arg(long, default_value_t = 0.0)]
    pub temp: f32,
    #[arg(long = "top-k", default_value_t = 64)]
    pub top_k: usize,
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Feed the prompt without the chat template.
    #[arg(long)]
    pub raw: bool,
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    pub backend: BackendArg,
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("`cellm run` is not yet implemented")
}
