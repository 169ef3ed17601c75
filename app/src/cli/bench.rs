use super::BackendArg;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    #[arg(long = "prompt-tokens", default_value_t = 128)]
    pub prompt_tokens: usize,
    #[arg(long = "gen-tokens", default_value_t = 64)]
    pub gen_tokens: usize,
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    pub backend: BackendArg,
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    #[arg(long)]
    pub csv: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("`cellm bench` is not yet implemented")
}
