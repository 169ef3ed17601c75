//! `cellm run` on bad input: clear messages and a non-zero exit, never a panic.

mod parity;

use cellm_convert::Profile;
use cellm_engine::format::update_header;
use std::io::Write;
use std::process::{Command, Stdio};

fn cellm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cellm"))
}

/// Runs `cellm run` and returns (success, stderr).
fn run(model: &std::path::Path, args: &[&str], stdin: Option<&[u8]>) -> (bool, String) {
    let mut child = cellm()
        .arg("run")
        .arg("-m")
        .arg(model)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cellm");
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "cellm panicked: {err}");
    (out.status.success(), err)
}

#[test]
fn bad_prompts_and_models_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let model = parity::convert_to(&parity::testdata("tiny-gemma3"), Profile::F32, dir.path());

    let (ok, err) = run(&model, &["-p", "", "--raw"], None);
    assert!(!ok && err.contains("empty"), "{err}");

    let (ok, err) = run(&model, &["-p", "-", "--raw"], Some(b"\xff\xfe not utf-8"));
    assert!(!ok && err.contains("not valid UTF-8"), "{err}");

    // Longer than the context: the tiny model's context comes from its config.
    let long = "hello world ".repeat(20_000);
    let (ok, err) = run(
        &model,
        &["-p", "-", "--raw", "-n", "1"],
        Some(long.as_bytes()),
    );
    assert!(!ok && err.contains("context"), "{err}");

    // A model of another family.
    let other = dir.path().join("other.cellm");
    std::fs::copy(&model, &other).unwrap();
    update_header(&other, |h| h.family = "llama".into()).unwrap();
    let (ok, err) = run(&other, &["-p", "hi", "--raw"], None);
    assert!(!ok && err.contains("llama"), "{err}");

    // Not a model at all.
    let junk = dir.path().join("junk.cellm");
    std::fs::write(&junk, b"definitely not a model").unwrap();
    let (ok, err) = run(&junk, &["-p", "hi"], None);
    assert!(!ok && err.contains("not a .cellm file"), "{err}");

    // A working run for contrast.
    let (ok, err) = run(&model, &["-p", "hello", "--raw", "-n", "4"], None);
    assert!(ok, "{err}");
}
