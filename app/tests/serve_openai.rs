//! `cellm serve` against the official `openai` Python client (app/tests/scripts/openai_client.py):
//! streaming and not, chat and completions, an image, an audio clip, stop sequences, bad
//! requests, a disconnect mid-stream, two concurrent clients, the API key and the body limit, on
//! the tiny Gemma 4 (it has both towers). Prints SKIP when python3 or `openai` is missing (CI
//! installs them).

mod parity;

use cellm_convert::Profile;
use parity::{convert_to, testdata};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn script(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scripts")
        .join(name)
}

/// Runs `cmd` to completion within `limit`, returning (success, stdout, stderr).
fn run_with_timeout(mut cmd: Command, limit: Duration) -> (bool, String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = child.stdout.take().expect("stdout");
    let err = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || std::io::read_to_string(out).unwrap_or_default());
    let err_t = std::thread::spawn(move || std::io::read_to_string(err).unwrap_or_default());
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (o, e) = (out_t.join().unwrap(), err_t.join().unwrap());
    (status.is_some_and(|s| s.success()), o, e)
}

#[test]
fn openai_client_against_cellm_serve() {
    if !python_has("openai") {
        println!("SKIP: python3 with the `openai` package is needed (pip install openai)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = convert_to(&testdata("tiny-gemma4"), Profile::F32, tmp.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_cellm"))
        .args(["serve", "-m"])
        .arg(&model)
        .args([
            "--port",
            "0",
            "--api-key",
            "sk-test",
            "--max-body-mb",
            "1",
            "--threads",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cellm serve");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let server = Server(child);
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let mut url = String::new();
    BufReader::new(stdout).read_line(&mut url).unwrap();
    let url = url.trim().to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/v1"),
        "server did not print its URL: {url:?}; log: {:?}",
        log.lock().unwrap()
    );

    let mut cmd = Command::new("python3");
    cmd.arg(script("openai_client.py"))
        .arg(&url)
        .arg("sk-test")
        .arg(testdata("tiny-gemma4/tiny_image.png"))
        .arg(testdata("tiny-gemma4/tiny_audio.wav"));
    let (ok, out, err) = run_with_timeout(cmd, Duration::from_secs(600));
    // Give the log thread a moment to drain.
    std::thread::sleep(Duration::from_millis(300));
    let log = log.lock().unwrap().join("\n");
    assert!(
        ok && out.contains("ALL OK"),
        "openai client failed\n--- stdout\n{out}\n--- stderr\n{err}\n--- server log\n{log}"
    );
    println!("{out}");
    assert!(
        log.contains("client disconnected"),
        "no cancelled generation in the server log:\n{log}"
    );
    // Prefix reuse: some request computed fewer prompt tokens than it had.
    let reused = log.lines().any(|l| {
        let nums: Vec<usize> = l
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|w| w.parse().ok())
            .collect();
        l.contains(" prompt tokens (") && nums.len() >= 2 && nums[1] < nums[0]
    });
    assert!(reused, "no request reused the KV prefix:\n{log}");
    drop(server);
}

#[test]
fn serve_refuses_a_missing_model_and_a_busy_port() {
    let out = Command::new(env!("CARGO_BIN_EXE_cellm"))
        .args(["serve", "-m", "/nonexistent/model.cellm", "--port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a model file"), "{err}");
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m.cellm");
    std::fs::write(&model, b"not a model").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cellm"))
        .args(["serve", "-m"])
        .arg(&model)
        .args(["--port", &port])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen"), "{err}");
}
