use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The .cellm file.
    pub model: PathBuf,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("`cellm inspect` is not yet implemented")
}
