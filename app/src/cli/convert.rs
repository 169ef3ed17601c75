use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A Hugging Face model folder or a .gguf file.
    pub input: PathBuf,
    /// Output .cellm path.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Quantization profile: f32, f16, bf16, int8, int4, mixed-int4.
    #[arg(long, default_value = "int8")]
    pub profile: String,
    /// Group size for int8/int4 weights (32, 64, 128).
    #[arg(long)]
    pub group_size: Option<usize>,
    /// Layers kept at f16 whatever the profile, e.g. 0,1,17.
    #[arg(long, value_delimiter = ',')]
    pub exclude_layers: Vec<usize>,
    /// Calibration text (for awq-int4 and fidelity measurement).
    #[arg(long)]
    pub calib: Option<PathBuf>,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("`cellm convert` is not yet implemented")
}
