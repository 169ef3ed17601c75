//! `cellm convert --target-kl` (profile auto) on the tiny Gemma 3 fixture: the file, the scan
//! JSON, `cellm inspect`'s plan lines, and the flag errors.

use std::path::{Path, PathBuf};
use std::process::Command;

fn cellm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cellm"))
}

fn fixture() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/tiny-gemma3");
    p.join("config.json").is_file().then_some(p)
}

#[test]
fn target_kl_converts_dumps_the_scan_and_inspect_shows_the_plan() {
    let Some(src) = fixture() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (out, json) = (tmp.path().join("a.cellm"), tmp.path().join("scan.json"));
    let r = cellm()
        .arg("convert")
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .args(["--target-kl", "0.02", "--threads", "2", "--scan-json"])
        .arg(&json)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{stderr}");
    assert!(stderr.contains("scanning"), "progress on stderr: {stderr}");
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(stdout.contains("fidelity: KL mean"), "{stdout}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["target_kl"], 0.02);
    assert!(v["fidelity"]["kl_mean"].as_f64().unwrap() <= 0.02);
    assert!(!v["scan"].as_array().unwrap().is_empty());
    assert!(v["scan"][0]["kl_q4"].as_f64().is_some());

    let r = cellm().arg("inspect").arg(&out).output().unwrap();
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success());
    assert!(text.contains("profile auto"), "{text}");
    assert!(text.contains("auto plan     target KL 0.02"), "{text}");
    assert!(text.contains("most sensitive at int4"), "{text}");
}

#[test]
fn auto_flag_errors() {
    let Some(src) = fixture() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.cellm");
    for (args, want) in [
        (vec!["--profile", "auto"], "needs --target-kl"),
        (
            vec!["--profile", "int8", "--target-kl", "0.01"],
            "applies to --profile auto only",
        ),
        (vec!["--target-kl=-1"], "must be a number >= 0"),
        (
            vec!["--scan-json", "x.json"],
            "applies to --profile auto only",
        ),
    ] {
        let r = cellm()
            .arg("convert")
            .arg(&src)
            .arg("-o")
            .arg(&out)
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!out.exists());
    }
}
