use super::BackendArg;
use anyhow::{Context, bail};
use cellm_engine::sampler::SamplingParams;
use cellm_engine::session::{
    GenerateParams, Message, Prompt, Role, Session, SessionOptions, StopReason,
};
use std::io::{Read, Write};
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
    #[arg(short = 'n', long = "max-new", default_value_t = 256, value_parser = super::bounds::tokens)]
    pub max_new: usize,
    #[arg(long, default_value_t = 0.0, value_parser = super::bounds::temperature)]
    pub temp: f32,
    #[arg(long = "top-k", default_value_t = 64, value_parser = super::bounds::top_k)]
    pub top_k: usize,
    #[arg(long = "top-p", default_value_t = 0.95, value_parser = super::bounds::top_p)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Feed the prompt without the chat template.
    #[arg(long)]
    pub raw: bool,
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    pub backend: BackendArg,
    #[arg(long, value_parser = super::bounds::threads)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub kv: super::compare::KvArgs,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let has_media = !args.images.is_empty() || !args.audio.is_empty();
    if has_media && args.raw {
        bail!("--raw cannot be combined with --image/--audio: media needs the chat template");
    }
    super::media::check_readable(&args.images, &args.audio)?;
    let text = match (args.prompt.as_deref(), default_media_prompt(&args)) {
        (None, Some(default)) => default.to_string(),
        (arg, _) => read_prompt(arg)?,
    };
    if text.trim().is_empty() {
        bail!("the prompt is empty");
    }
    let mut session = Session::load(
        &args.model,
        SessionOptions {
            threads: args.threads,
            kv_precision: args.kv.kv,
            kv_rotation: args.kv.rotation(),
            backend: backend(args.backend),
            ..SessionOptions::default()
        },
    )
    .with_context(|| format!("loading {}", args.model.display()))?;
    let media = super::media::media_embeddings(&session, &args.images, &args.audio)?;
    let prompt = if args.raw {
        Prompt::Raw(text)
    } else {
        Prompt::Chat(vec![Message {
            role: Role::User,
            text,
            media,
        }])
    };
    let params = GenerateParams {
        sampling: SamplingParams {
            temperature: args.temp,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
            ..SamplingParams::default()
        },
        max_new_tokens: args.max_new,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut write_error = None;
    let stats = session.generate(&prompt, &params, &mut |piece| {
        if write_error.is_none()
            && let Err(e) = out.write_all(piece.as_bytes()).and_then(|_| out.flush())
        {
            write_error = Some(e);
        }
    })?;
    if let Some(e) = write_error {
        // A closed pipe (e.g. `| head`) is not worth an error message.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e).context("writing to stdout");
        }
    }
    writeln!(out).and_then(|_| out.flush()).ok();
    let stop = match stats.stop {
        StopReason::EndOfTurn => "end of turn",
        StopReason::MaxTokens => "max tokens",
        StopReason::Cancelled => "cancelled",
        StopReason::ContextFull => "context full",
    };
    eprintln!(
        "[{} prompt tokens ({} computed) at {:.1} tok/s, {} generated at {:.1} tok/s, stop: {stop}]",
        stats.prompt_tokens,
        stats.prefill_tokens,
        stats.prefill_tok_s(),
        stats.generated_tokens,
        stats.decode_tok_s(),
    );
    Ok(())
}

/// The prompt used when media is given without `-p`.
fn default_media_prompt(args: &Args) -> Option<&'static str> {
    match (args.images.is_empty(), args.audio.is_empty()) {
        (false, true) => Some("Describe this image."),
        (true, false) => Some("Transcribe this audio."),
        (false, false) => Some("Describe this image and transcribe this audio."),
        (true, true) => None,
    }
}

/// The `-p` argument, or standard input for `-p -`.
fn read_prompt(arg: Option<&str>) -> anyhow::Result<String> {
    match arg {
        None => bail!("give a prompt with -p TEXT (or -p - to read standard input)"),
        Some("-") => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("reading the prompt from standard input")?;
            String::from_utf8(bytes).map_err(|e| {
                anyhow::anyhow!(
                    "standard input is not valid UTF-8 (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                )
            })
        }
        Some(p) => Ok(p.to_string()),
    }
}

/// The session's backend for `--backend` (a GPU that is missing falls back to the CPU there).
pub(super) fn backend(b: BackendArg) -> cellm_engine::session::Backend {
    use cellm_engine::session::Backend;
    match b {
        BackendArg::Cpu => Backend::Cpu,
        BackendArg::Gpu => Backend::Gpu,
        BackendArg::Auto => Backend::Auto,
    }
}
