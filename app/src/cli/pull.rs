//! `cellm pull ORG/REPO`: downloads a model from the Hugging Face hub into its usual cache
//! (`crate::hub`), then prints the `cellm convert` command for it.

use anyhow::bail;
use cellm_app::hub::{Progress, PullError, PullOptions, pull};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The repository, e.g. google/gemma-3-270m-it.
    pub repo: String,
    /// Branch, tag or commit.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Only files matching this glob (repeatable), e.g. --include '*.json' --include
    /// '*.safetensors'. Default: every file.
    #[arg(long = "include")]
    pub include: Vec<String>,
    /// The hub cache folder (default: HF_HUB_CACHE, else $HF_HOME/hub, else
    /// ~/.cache/huggingface/hub, shared with other Hugging Face tools).
    #[arg(long = "dir")]
    pub dir: Option<PathBuf>,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let mut options = PullOptions::from_env(&args.repo);
    options.revision = args.revision.clone();
    options.include = args.include.clone();
    if let Some(d) = &args.dir {
        options.cache_dir = d.clone();
    }
    let cancel = options.cancel.clone();
    // First Ctrl-C: stop cleanly, keeping the partial file for a resume. Second: exit at once.
    let _ = ctrlc::set_handler(move || {
        if cancel.swap(true, Ordering::Relaxed) {
            std::process::exit(130);
        }
    });
    eprintln!(
        "{} ({}) from {}",
        args.repo, args.revision, options.endpoint
    );
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut on_progress = |p: &Progress| match p {
        Progress::Listed {
            commit,
            files,
            total_bytes,
            to_fetch,
        } => {
            bar.println(format!(
                "commit {commit}: {files} files, {}, {} to download",
                human(*total_bytes),
                human(*to_fetch)
            ));
            bar.set_length(*to_fetch);
        }
        Progress::Start {
            file, resumed_from, ..
        } => {
            bar.set_message(file.clone());
            if *resumed_from > 0 {
                bar.println(format!("{file}: resuming at {}", human(*resumed_from)));
                bar.inc_length(0);
            }
        }
        Progress::Bytes(n) => bar.inc(*n),
        Progress::Done { file, reused } => {
            if *reused {
                bar.println(format!("{file}: already in the cache"));
            }
        }
    };
    let result = pull(&options, &mut on_progress);
    bar.finish_and_clear();
    let result = match result {
        Ok(r) => r,
        Err(PullError::Cancelled) => bail!("{}", PullError::Cancelled),
        Err(e) => return Err(e.into()),
    };
    eprintln!(
        "{} files in {} ({} reused, {} downloaded)",
        result.files.len(),
        result.snapshot.display(),
        result.reused,
        human(result.fetched_bytes)
    );
    let name = args
        .repo
        .rsplit('/')
        .next()
        .unwrap_or("model")
        .to_lowercase();
    println!("{}", result.snapshot.display());
    eprintln!("next, convert it:");
    eprintln!(
        "  cellm convert {} -o {name}.cellm",
        shell_quote(&result.snapshot.display().to_string())
    );
    Ok(())
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+=:@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn human(n: u64) -> String {
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
        format!("{v:.1} {}", units[u])
    }
}
