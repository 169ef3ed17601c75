//! `cellm pull`: downloads a model repository from the Hugging Face hub (or any server with its
//! API, via `HF_ENDPOINT`) into the huggingface_hub cache layout, with resume, sha256 checks of
//! LFS files, progress and cancel.
//!
//! The file list comes from `GET {endpoint}/api/models/{repo}/revision/{rev}?blobs=true`
//! (siblings with blob ids and LFS sha256); each file from
//! `{endpoint}/{repo}/resolve/{commit}/{file}`, following redirects, resuming an
//! `.incomplete` blob with an HTTP Range request.

pub mod cache;

use cache::RepoCache;
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("'{0}' is not a repository id: use ORG/NAME, e.g. google/gemma-3-270m")]
    BadRepo(String),
    #[error("bad --include pattern '{pattern}': {source}")]
    BadPattern {
        pattern: String,
        #[source]
        source: glob::PatternError,
    },
    #[error(
        "{repo} is gated: its licence must be accepted first. Open {endpoint}/{repo} in a \
         browser, log in, accept the licence, then create a read token at \
         {endpoint}/settings/tokens and run again with HF_TOKEN=<token> in the environment{}",
        if *.token_sent { " (the token given was refused: check that it belongs to the account that accepted the licence)" } else { "" }
    )]
    Gated {
        repo: String,
        endpoint: String,
        token_sent: bool,
    },
    #[error(
        "{repo} was not found at {endpoint} (HTTP {status}); check the name, and for a private \
         repository set HF_TOKEN"
    )]
    NotFound {
        repo: String,
        endpoint: String,
        status: u16,
    },
    #[error("revision '{revision}' of {repo} was not found")]
    RevisionNotFound { repo: String, revision: String },
    #[error("HTTP {status} from {url}: {message}")]
    Http {
        url: String,
        status: u16,
        message: String,
    },
    #[error("cannot reach {url}: {source}")]
    Network {
        url: String,
        #[source]
        source: ureq::Error,
    },
    #[error("reading from {url}: {source} (run the same command again to resume)")]
    Interrupted {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the hub's answer from {url} is not understood: {why}")]
    BadResponse { url: String, why: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{file}: sha256 {actual} does not match the hub's {expected}; the download was \
         discarded, run again to fetch it anew"
    )]
    Checksum {
        file: String,
        expected: String,
        actual: String,
    },
    #[error(
        "{file}: got {actual} bytes, the hub lists {expected} (run the same command again to \
         resume)"
    )]
    Size {
        file: String,
        expected: u64,
        actual: u64,
    },
    #[error("no file of {repo} matches {patterns:?}")]
    NoMatch { repo: String, patterns: Vec<String> },
    #[error("cancelled (run the same command again to resume)")]
    Cancelled,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PullError + '_ {
    move |source| PullError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[derive(Clone, Debug)]
pub struct PullOptions {
    /// `ORG/NAME`.
    pub repo: String,
    /// Branch, tag or commit.
    pub revision: String,
    /// Globs (fnmatch style: `*` also crosses `/`) selecting files; empty: all files.
    pub include: Vec<String>,
    /// The hub cache root (see [`cache::default_cache_dir`]).
    pub cache_dir: PathBuf,
    /// e.g. `https://huggingface.co`, without a trailing slash.
    pub endpoint: String,
    pub token: Option<String>,
    /// Set from another thread to stop; the partial file is kept for a resume.
    pub cancel: Arc<AtomicBool>,
}

impl PullOptions {
    /// Options with the hub tools' shared environment: `HF_ENDPOINT`, `HF_TOKEN` (else the token
    /// file `hf auth login` writes), `HF_HUB_CACHE` / `HF_HOME`.
    pub fn from_env(repo: &str) -> Self {
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let token = std::env::var("HF_TOKEN")
            .ok()
            .or_else(|| std::fs::read_to_string(cache::hf_home().join("token")).ok())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        Self {
            repo: repo.to_string(),
            revision: "main".into(),
            include: Vec::new(),
            cache_dir: cache::default_cache_dir(),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
            cancel: Arc::default(),
        }
    }
}

/// One file of the repository, as the hub lists it.
#[derive(Clone, Debug)]
pub struct RepoFile {
    pub path: String,
    /// The cache's blob name: the LFS sha256, or the git blob id for small files (what the
    /// hub's ETag / X-Linked-Etag headers carry).
    pub etag: String,
    pub size: Option<u64>,
    /// For LFS files, the sha256 the content must have.
    pub sha256: Option<String>,
}

#[derive(Clone, Debug)]
pub enum Progress {
    /// The file list is known: files selected, their total size, bytes still to fetch.
    Listed {
        commit: String,
        files: usize,
        total_bytes: u64,
        to_fetch: u64,
    },
    /// A file is being fetched, starting at `resumed_from` bytes of `size`.
    Start {
        file: String,
        size: Option<u64>,
        resumed_from: u64,
    },
    /// More bytes of the current file arrived.
    Bytes(u64),
    /// A file is in place (`reused`: it was already in the cache).
    Done { file: String, reused: bool },
}

#[derive(Clone, Debug)]
pub struct PullResult {
    pub commit: String,
    /// `snapshots/<commit>`: a folder laid out like the repository.
    pub snapshot: PathBuf,
    pub files: Vec<String>,
    pub reused: usize,
    pub fetched_bytes: u64,
}

/// The HTTP client: rustls, hub-style redirects (the token is kept only on the same host),
/// errors as statuses rather than `Err`.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
        .user_agent(concat!("cellm/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Percent-encodes one path segment (or a path, keeping `/` when `keep_slash`).
fn quote(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let plain = b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/');
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn check_repo(repo: &str) -> Result<(), PullError> {
    let parts: Vec<&str> = repo.split('/').collect();
    let ok = parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        });
    if ok {
        Ok(())
    } else {
        Err(PullError::BadRepo(repo.to_string()))
    }
}

/// A repository file path that is safe to join under the snapshot folder.
fn safe_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !p.contains('\\')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// The commit `revision` resolves to and the repository's files.
pub fn list_files(options: &PullOptions) -> Result<(String, Vec<RepoFile>), PullError> {
    check_repo(&options.repo)?;
    let url = format!(
        "{}/api/models/{}/revision/{}?blobs=true",
        options.endpoint,
        options.repo,
        quote(&options.revision, false)
    );
    let agent = agent();
    let mut request = agent.get(&url);
    if let Some(t) = &options.token {
        request = request.header("Authorization", &format!("Bearer {t}"));
    }
    let mut response = request.call().map_err(|source| PullError::Network {
        url: url.clone(),
        source,
    })?;
    let status = response.status().as_u16();
    let error_code = response
        .headers()
        .get("x-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|source| PullError::Network {
            url: url.clone(),
            source,
        })?;
    if status != 200 {
        return Err(api_error(options, &url, status, &error_code, &body));
    }
    let bad = |why: String| PullError::BadResponse {
        url: url.clone(),
        why,
    };
    let info: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| bad(format!("not JSON: {e}")))?;
    let commit = info["sha"]
        .as_str()
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric()))
        .ok_or_else(|| bad("no commit sha".into()))?
        .to_string();
    let siblings = info["siblings"]
        .as_array()
        .ok_or_else(|| bad("no siblings list".into()))?;
    let mut files = Vec::with_capacity(siblings.len());
    for s in siblings {
        let path = s["rfilename"]
            .as_str()
            .ok_or_else(|| bad("a sibling has no rfilename".into()))?;
        if !safe_path(path) {
            return Err(bad(format!("unsafe file name '{path}'")));
        }
        let sha256 = s["lfs"]["sha256"].as_str().map(str::to_string);
        let etag = sha256
            .clone()
            .or_else(|| s["blobId"].as_str().map(str::to_string))
            .ok_or_else(|| bad(format!("{path}: no blobId (the ?blobs=true form)")))?;
        if etag.is_empty() || !etag.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(bad(format!("{path}: odd blob id '{etag}'")));
        }
        let size = s["lfs"]["size"].as_u64().or_else(|| s["size"].as_u64());
        files.push(RepoFile {
            path: path.to_string(),
            etag,
            size,
            sha256,
        });
    }
    Ok((commit, files))
}

/// The plain explanation of a failed API call (gated, missing, revision unknown).
fn api_error(options: &PullOptions, url: &str, status: u16, code: &str, body: &str) -> PullError {
    let repo = options.repo.clone();
    let endpoint = options.endpoint.clone();
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.chars().take(200).collect());
    match (status, code) {
        (_, "GatedRepo") | (403, _) => PullError::Gated {
            repo,
            endpoint,
            token_sent: options.token.is_some(),
        },
        (_, "RevisionNotFound") => PullError::RevisionNotFound {
            repo,
            revision: options.revision.clone(),
        },
        (401, _) if message.to_lowercase().contains("gated") => PullError::Gated {
            repo,
            endpoint,
            token_sent: options.token.is_some(),
        },
        (401 | 404, _) => PullError::NotFound {
            repo,
            endpoint,
            status,
        },
        _ => PullError::Http {
            url: url.to_string(),
            status,
            message,
        },
    }
}

/// Whether `path` is selected by the patterns (all files when there are none).
fn selected(patterns: &[glob::Pattern], path: &str) -> bool {
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: false,
        require_literal_leading_dot: false,
    };
    patterns.is_empty() || patterns.iter().any(|p| p.matches_with(path, opts))
}

/// Lists, then fetches every selected file that the cache lacks.
pub fn pull(
    options: &PullOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<PullResult, PullError> {
    let patterns = options
        .include
        .iter()
        .map(|p| {
            glob::Pattern::new(p).map_err(|source| PullError::BadPattern {
                pattern: p.clone(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (commit, all) = list_files(options)?;
    let files: Vec<RepoFile> = all
        .into_iter()
        .filter(|f| selected(&patterns, &f.path))
        .collect();
    if files.is_empty() {
        return Err(PullError::NoMatch {
            repo: options.repo.clone(),
            patterns: options.include.clone(),
        });
    }
    let repo = RepoCache::new(&options.cache_dir, &options.repo);
    for sub in ["blobs", "snapshots", "refs"] {
        let dir = repo.root.join(sub);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    }
    repo.write_ref(&options.revision, &commit)
        .map_err(io_err(&repo.root.join("refs")))?;

    let cached = |f: &RepoFile| cached_size(&repo, &commit, f);
    let total_bytes = files.iter().map(|f| f.size.unwrap_or(0)).sum();
    let to_fetch = files
        .iter()
        .filter(|f| cached(f).is_none())
        .map(|f| f.size.unwrap_or(0))
        .sum();
    progress(&Progress::Listed {
        commit: commit.clone(),
        files: files.len(),
        total_bytes,
        to_fetch,
    });

    let agent = agent();
    let mut reused = 0;
    let mut fetched_bytes = 0;
    for f in &files {
        if options.cancel.load(Ordering::Relaxed) {
            return Err(PullError::Cancelled);
        }
        let pointer = repo.pointer(&commit, &f.path);
        if cached(f).is_some() {
            if !pointer.exists() {
                repo.link(&commit, &f.path, &f.etag)
                    .map_err(io_err(&pointer))?;
            }
            reused += 1;
            progress(&Progress::Done {
                file: f.path.clone(),
                reused: true,
            });
            continue;
        }
        fetched_bytes += fetch(&agent, options, &repo, &commit, f, progress)?;
        repo.link(&commit, &f.path, &f.etag)
            .map_err(io_err(&pointer))?;
        progress(&Progress::Done {
            file: f.path.clone(),
            reused: false,
        });
    }
    Ok(PullResult {
        snapshot: repo.snapshot(&commit),
        commit,
        files: files.into_iter().map(|f| f.path).collect(),
        reused,
        fetched_bytes,
    })
}

/// The size of the file's blob when the cache already holds it complete.
fn cached_size(repo: &RepoCache, commit: &str, f: &RepoFile) -> Option<u64> {
    // A snapshot entry for this commit that resolves to the right blob size, or the blob itself.
    let candidates = [repo.pointer(commit, &f.path), repo.blob(&f.etag)];
    candidates.iter().find_map(|p| {
        let len = std::fs::metadata(p).ok()?.len();
        match f.size {
            Some(s) if s != len => None,
            _ => Some(len),
        }
    })
}

/// Downloads one file into `blobs/<etag>`, resuming `blobs/<etag>.incomplete`; returns the bytes
/// transferred.
fn fetch(
    agent: &ureq::Agent,
    options: &PullOptions,
    repo: &RepoCache,
    commit: &str,
    f: &RepoFile,
    progress: &mut dyn FnMut(&Progress),
) -> Result<u64, PullError> {
    let url = format!(
        "{}/{}/resolve/{}/{}",
        options.endpoint,
        options.repo,
        commit,
        quote(&f.path, true)
    );
    let partial = repo.incomplete(&f.etag);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&partial)
        .map_err(io_err(&partial))?;
    let mut have = file.metadata().map_err(io_err(&partial))?.len();
    if f.size.is_some_and(|s| have > s) {
        have = 0;
    }
    let mut request = agent.get(&url).header("Accept-Encoding", "identity");
    if let Some(t) = &options.token {
        request = request.header("Authorization", &format!("Bearer {t}"));
    }
    let complete_already = have > 0 && f.size == Some(have);
    if have > 0 && !complete_already {
        request = request.header("Range", &format!("bytes={have}-"));
    }
    let mut hasher = Sha256::new();
    let mut fetched = 0u64;
    if !complete_already {
        let mut response = request.call().map_err(|source| PullError::Network {
            url: url.clone(),
            source,
        })?;
        let status = response.status().as_u16();
        match status {
            206 if have > 0 => {}
            200 => have = 0,
            416 => {
                // The partial file does not fit the file the hub has now: start over next time.
                let _ = std::fs::remove_file(&partial);
                return Err(PullError::Http {
                    url,
                    status,
                    message: "the partial download does not match; it was discarded, run again"
                        .into(),
                });
            }
            401 | 403 => {
                let code = response
                    .headers()
                    .get("x-error-code")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let body = response.body_mut().read_to_string().unwrap_or_default();
                return Err(api_error(options, &url, status, &code, &body));
            }
            _ => {
                let body = response.body_mut().read_to_string().unwrap_or_default();
                return Err(PullError::Http {
                    url,
                    status,
                    message: body.chars().take(200).collect(),
                });
            }
        }
        // Hash what is already on disk, then append the rest.
        file.set_len(have).map_err(io_err(&partial))?;
        file.rewind().map_err(io_err(&partial))?;
        hash_prefix(&mut file, have, &mut hasher).map_err(io_err(&partial))?;
        progress(&Progress::Start {
            file: f.path.clone(),
            size: f.size,
            resumed_from: have,
        });
        let mut body = response.body_mut().with_config().limit(u64::MAX).reader();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            if options.cancel.load(Ordering::Relaxed) {
                file.flush().ok();
                return Err(PullError::Cancelled);
            }
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    file.flush().ok();
                    return Err(PullError::Interrupted { url, source });
                }
            };
            file.write_all(&buf[..n]).map_err(io_err(&partial))?;
            hasher.update(&buf[..n]);
            fetched += n as u64;
            progress(&Progress::Bytes(n as u64));
        }
        file.flush().map_err(io_err(&partial))?;
    } else {
        file.rewind().map_err(io_err(&partial))?;
        hash_prefix(&mut file, have, &mut hasher).map_err(io_err(&partial))?;
    }
    drop(file);
    let len = std::fs::metadata(&partial).map_err(io_err(&partial))?.len();
    if let Some(expected) = f.size
        && expected != len
    {
        return Err(PullError::Size {
            file: f.path.clone(),
            expected,
            actual: len,
        });
    }
    if let Some(expected) = &f.sha256 {
        let actual = format!("{:x}", hasher.finalize());
        if !actual.eq_ignore_ascii_case(expected) {
            let _ = std::fs::remove_file(&partial);
            return Err(PullError::Checksum {
                file: f.path.clone(),
                expected: expected.clone(),
                actual,
            });
        }
    }
    let blob = repo.blob(&f.etag);
    std::fs::rename(&partial, &blob).map_err(io_err(&blob))?;
    Ok(fetched)
}

fn hash_prefix(file: &mut std::fs::File, len: u64, hasher: &mut Sha256) -> std::io::Result<()> {
    let copied = std::io::copy(&mut file.take(len), hasher)?;
    if copied != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the partial download is shorter than expected",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_and_paths() {
        assert!(check_repo("google/gemma-3-270m").is_ok());
        for bad in ["gemma", "a/b/c", "../x", "a/..", "a b/c", "/x"] {
            assert!(check_repo(bad).is_err(), "{bad}");
        }
        assert!(safe_path("a/b.json"));
        for bad in ["", "/etc/passwd", "a/../b", "./a", "a//b", "a\\b"] {
            assert!(!safe_path(bad), "{bad}");
        }
    }

    #[test]
    fn quoting_and_patterns() {
        assert_eq!(quote("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(quote("dir/a b.txt", true), "dir/a%20b.txt");
        let p = vec![glob::Pattern::new("*.json").unwrap()];
        assert!(selected(&p, "config.json"));
        assert!(selected(&p, "sub/x.json"), "fnmatch: * crosses /");
        assert!(!selected(&p, "model.safetensors"));
        assert!(selected(&[], "anything"));
    }
}
