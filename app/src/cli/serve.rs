//! `cellm serve`: the OpenAI-compatible server (`crate::serve`) in the foreground until Ctrl-C.

use super::BackendArg;
use anyhow::{Context, bail};
use cellm_app::serve::{ServerOptions, start};
use cellm_engine::session::SessionOptions;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The .cellm model to serve.
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// Address to listen on; 127.0.0.1 keeps the server on this machine. Use 0.0.0.0 to let
    /// other machines in (then also set --api-key).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free port; the chosen one is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on every request.
    #[arg(long = "api-key")]
    pub api_key: Option<String>,
    /// The model id clients see in /v1/models (default: the file name without extension).
    #[arg(long = "model-id")]
    pub model_id: Option<String>,
    /// Largest request body in MiB (images and audio arrive base64-encoded inside it).
    #[arg(long = "max-body-mb", default_value_t = 32)]
    pub max_body_mb: usize,
    /// Cap on the context length (default: the model's own).
    #[arg(long = "ctx")]
    pub ctx: Option<usize>,
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    pub backend: BackendArg,
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub kv: super::compare::KvArgs,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    if !args.model.is_file() {
        bail!("{} is not a model file", args.model.display());
    }
    if args.max_body_mb == 0 {
        bail!("--max-body-mb must be at least 1");
    }
    let mut options = ServerOptions::new(args.model.clone());
    options.session = SessionOptions {
        threads: args.threads,
        max_context: args.ctx,
        kv_precision: args.kv.kv,
        kv_rotation: args.kv.rotation(),
        backend: super::run::backend(args.backend),
    };
    options.host = args.host.clone();
    options.port = args.port;
    options.api_key = args.api_key.clone().filter(|k| !k.is_empty());
    options.model_id = args.model_id.clone();
    options.max_body_bytes = args.max_body_mb.saturating_mul(1024 * 1024);
    options.on_log = Some(Box::new(|entry| eprintln!("{}", entry.text)));
    let server = start(options).with_context(|| format!("serving {}", args.model.display()))?;
    if args.host != "127.0.0.1" && args.host != "localhost" && args.host != "::1" {
        eprintln!(
            "note: listening on {}, reachable from other machines{}",
            args.host,
            if args.api_key.is_none() {
                "; consider --api-key"
            } else {
                ""
            }
        );
    }
    // The URL on stdout, alone, so scripts can read it.
    println!("{}", server.url());
    server.wait();
    Ok(())
}
