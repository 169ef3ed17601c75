//! `cellm pull` against a mock hub (app/tests/scripts/mock_hub.py) that serves the real
//! endpoints and headers: resume after a dropped connection (HTTP Range), a sha256 mismatch
//! refused, the gated-repo explanation, --include, and the huggingface_hub cache layout shared
//! with the `huggingface_hub` package itself (which proves the mock faithful: it downloads the
//! same files from it). Prints SKIP when python3 (or, for the last test, huggingface_hub) is
//! missing; CI installs both.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct Mock {
    child: Child,
    endpoint: String,
    log: PathBuf,
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Mock {
    fn start(dir: &Path, cut_lfs: usize) -> Self {
        let log = dir.join("mock.log");
        let mut child = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/mock_hub.py"))
            .arg("--log")
            .arg(&log)
            .args(["--cut-lfs", &cut_lfs.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the mock hub");
        let mut port = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut port)
            .unwrap();
        Self {
            child,
            endpoint: format!("http://127.0.0.1:{}", port.trim()),
            log,
        }
    }

    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn pull(mock: &Mock, home: &Path, cache: &Path, args: &[&str], token: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cellm"));
    cmd.arg("pull")
        .args(args)
        .arg("--dir")
        .arg(cache)
        .env("HF_ENDPOINT", &mock.endpoint)
        .env("HF_HOME", home)
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_CACHE");
    if let Some(t) = token {
        cmd.env("HF_TOKEN", t);
    }
    cmd.output().expect("run cellm pull")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every file and symlink under `root`, relative, with the link target or the content's length.
fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_symlink() {
                out.push(format!(
                    "{rel} -> {}",
                    std::fs::read_link(&p).unwrap().display()
                ));
            } else if meta.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(format!("{rel} ({} bytes)", meta.len()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

macro_rules! need_python {
    () => {
        if !python_has("json") {
            println!("SKIP: python3 is needed for the mock hub");
            return;
        }
    };
}

#[test]
fn pull_resumes_after_a_cut_and_links_the_snapshot() {
    need_python!();
    let tmp = tempfile::tempdir().unwrap();
    let mock = Mock::start(tmp.path(), 500_000);
    let cache = tmp.path().join("cache");
    let first = pull(&mock, tmp.path(), &cache, &["org/tiny"], None);
    assert!(!first.status.success(), "the cut should fail the first run");
    assert!(text(&first).contains("resume"), "{}", text(&first));
    let blobs = cache.join("models--org--tiny/blobs");
    let partial: Vec<_> = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".incomplete"))
        .collect();
    assert_eq!(partial.len(), 1, "{:?}", tree(&cache));
    assert_eq!(partial[0].metadata().unwrap().len(), 500_000);

    let second = pull(&mock, tmp.path(), &cache, &["org/tiny"], None);
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        mock.requests()
            .iter()
            .any(|r| r.starts_with("GET /cdn/") && r.ends_with("bytes=500000-")),
        "no Range request: {:?}",
        mock.requests()
    );
    let out = text(&second);
    assert!(out.contains("cellm convert"), "{out}");
    let snapshot = PathBuf::from(String::from_utf8_lossy(&second.stdout).trim());
    assert!(
        snapshot.ends_with(
            Path::new("snapshots")
                .join(std::fs::read_to_string(cache.join("models--org--tiny/refs/main")).unwrap())
        )
    );
    let weights = std::fs::read(snapshot.join("model.safetensors")).unwrap();
    assert_eq!(weights.len(), 1_500_000);
    assert!(snapshot.join("sub/notes.txt").is_file());
    assert!(
        !tree(&cache).iter().any(|l| l.contains(".incomplete")),
        "{:?}",
        tree(&cache)
    );
}

#[test]
fn pull_refuses_a_sha256_mismatch() {
    need_python!();
    let tmp = tempfile::tempdir().unwrap();
    let mock = Mock::start(tmp.path(), 0);
    let cache = tmp.path().join("cache");
    let out = pull(&mock, tmp.path(), &cache, &["org/corrupt"], None);
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("sha256") && msg.contains("model.safetensors"),
        "{msg}"
    );
    let blobs = tree(&cache.join("models--org--corrupt/blobs"));
    assert!(
        !blobs
            .iter()
            .any(|b| b.split(' ').next().is_some_and(|name| name.len() >= 64)),
        "a bad LFS blob was kept: {blobs:?}"
    );
    assert!(
        !cache
            .join("models--org--corrupt/snapshots")
            .read_dir()
            .unwrap()
            .flatten()
            .any(|d| d.path().join("model.safetensors").exists())
    );
}

#[test]
fn pull_explains_gated_repos_and_uses_hf_token() {
    need_python!();
    let tmp = tempfile::tempdir().unwrap();
    let mock = Mock::start(tmp.path(), 0);
    let cache = tmp.path().join("cache");
    let out = pull(&mock, tmp.path(), &cache, &["org/gated"], None);
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("gated") && msg.contains("licence") && msg.contains("HF_TOKEN"),
        "{msg}"
    );
    let out = pull(&mock, tmp.path(), &cache, &["org/gated"], Some("hf_bad"));
    assert!(
        text(&out).contains("token given was refused"),
        "{}",
        text(&out)
    );
    let out = pull(
        &mock,
        tmp.path(),
        &cache,
        &["org/gated", "--include", "*.json"],
        Some("hf_good"),
    );
    assert!(out.status.success(), "{}", text(&out));
    let missing = pull(&mock, tmp.path(), &cache, &["org/nothing"], None);
    assert!(text(&missing).contains("not found"), "{}", text(&missing));
    let bad = pull(&mock, tmp.path(), &cache, &["not-a-repo"], None);
    assert!(text(&bad).contains("ORG/NAME"), "{}", text(&bad));
}

#[test]
fn pull_include_selects_files() {
    need_python!();
    let tmp = tempfile::tempdir().unwrap();
    let mock = Mock::start(tmp.path(), 0);
    let cache = tmp.path().join("cache");
    let out = pull(
        &mock,
        tmp.path(),
        &cache,
        &["org/tiny", "--include", "*.json"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let snap = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let mut names: Vec<String> = std::fs::read_dir(&snap)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["config.json", "tokenizer_config.json"]);
    assert!(
        !mock.requests().iter().any(|r| r.contains("/cdn/")),
        "the weights were fetched"
    );
}

#[test]
fn huggingface_hub_and_cellm_share_one_cache() {
    need_python!();
    if !python_has("huggingface_hub") {
        println!("SKIP: the huggingface_hub package is needed (pip install huggingface_hub)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mock = Mock::start(tmp.path(), 0);
    // huggingface_hub downloads from the mock into one cache...
    let theirs = tmp.path().join("theirs");
    let py = Command::new("python3")
        .args([
            "-c",
            "import sys; from huggingface_hub import snapshot_download; \
             print(snapshot_download('org/tiny', cache_dir=sys.argv[1]))",
        ])
        .arg(&theirs)
        .env("HF_ENDPOINT", &mock.endpoint)
        .env("HF_HOME", tmp.path())
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .env_remove("HF_TOKEN")
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", text(&py));
    // ...cellm into another: the same blobs, links and ref.
    let ours = tmp.path().join("ours");
    let out = pull(&mock, tmp.path(), &ours, &["org/tiny"], None);
    assert!(out.status.success(), "{}", text(&out));
    let layout = |root: &Path| -> Vec<String> {
        tree(&root.join("models--org--tiny"))
            .into_iter()
            .filter(|l| !l.starts_with("trees/"))
            .collect()
    };
    assert_eq!(layout(&theirs), layout(&ours));
    let refs = |root: &Path| std::fs::read_to_string(root.join("models--org--tiny/refs/main"));
    assert_eq!(refs(&theirs).unwrap(), refs(&ours).unwrap());

    // cellm reuses what huggingface_hub cached: no file is fetched again.
    let before = mock.requests().len();
    let again = pull(&mock, tmp.path(), &theirs, &["org/tiny"], None);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("4 reused"), "{}", text(&again));
    let fetched: Vec<String> = mock.requests()[before..]
        .iter()
        .filter(|r| r.contains("/resolve/") || r.contains("/cdn/"))
        .cloned()
        .collect();
    assert!(fetched.is_empty(), "fetched again: {fetched:?}");
}
