//! Broken files: every one is rejected by `CellmFile::open` with a clear error, never a panic.

use crate::common::*;
use cellm_engine::format::{CellmFile, FormatError};
use serde_json::json;
use std::path::{Path, PathBuf};

fn sample(dir: &Path) -> PathBuf {
    write_sample(dir, "m.cellm")
}

fn open_err(path: &Path) -> FormatError {
    match CellmFile::open(path) {
        Ok(_) => panic!("{} was accepted", path.display()),
        Err(e) => e,
    }
}

fn patch(path: &Path, at: usize, bytes: &[u8]) {
    let mut b = std::fs::read(path).unwrap();
    b[at..at + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, b).unwrap();
}

#[test]
fn truncated_files_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample(dir.path());
    let full = std::fs::read(&path).unwrap();
    let header_len = read_u64(&full, 16) as usize;
    let data_offset = read_u64(&full, 24) as usize;
    let cuts = [
        0,
        5,
        8,
        20,
        31,
        32,
        32 + 10,
        32 + header_len - 1,
        data_offset,
        data_offset + 1,
        data_offset + 100,
        full.len() - 1,
    ];
    let cut_path = dir.path().join("cut.cellm");
    for cut in cuts {
        std::fs::write(&cut_path, &full[..cut]).unwrap();
        let err = open_err(&cut_path);
        assert!(
            matches!(err, FormatError::Truncated { .. }),
            "cut at {cut}: {err}"
        );
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}

#[test]
fn bad_magic() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample(dir.path());
    patch(&path, 0, b"GGUF");
    assert!(matches!(open_err(&path), FormatError::BadMagic(_)));

    let text = dir.path().join("hello.txt");
    std::fs::write(&text, b"hi").unwrap();
    let err = open_err(&text);
    assert!(matches!(err, FormatError::BadMagic(_)));
    assert!(err.to_string().contains("not a .cellm file"), "{err}");
}

#[test]
fn wrong_version_names_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample(dir.path());
    patch(&path, 8, &7u32.to_le_bytes());
    let err = open_err(&path);
    assert!(
        matches!(
            err,
            FormatError::Version {
                found: 7,
                expected: 1,
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("version 7") && msg.contains("version 1"),
        "{msg}"
    );
}

#[test]
fn unknown_flags() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample(dir.path());
    patch(&path, 12, &1u32.to_le_bytes());
    assert!(open_err(&path).to_string().contains("flags"));
}

#[test]
fn bad_preamble_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample(dir.path());
    let full = std::fs::read(&path).unwrap();
    let data_offset = read_u64(&full, 24);

    patch(&path, 24, &(data_offset + 8).to_le_bytes());
    assert!(open_err(&path).to_string().contains("multiple of 64"));
    patch(&path, 24, &(data_offset - 64).to_le_bytes());
    assert!(open_err(&path).to_string().contains("inside the header"));
    patch(&path, 24, &(data_offset + (1 << 30)).to_le_bytes());
    assert!(matches!(open_err(&path), FormatError::Truncated { .. }));
    patch(&path, 24, &data_offset.to_le_bytes());
    patch(&path, 16, &u64::MAX.to_le_bytes());
    let err = open_err(&path);
    assert!(matches!(err, FormatError::Header { .. }), "{err}");
    patch(&path, 16, &(u64::MAX - 40).to_le_bytes());
    let err = open_err(&path);
    assert!(matches!(err, FormatError::Truncated { .. }), "{err}");
}

#[test]
fn corrupted_json_shows_serde_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample(dir.path());
    patch(&path, 32, b"x");
    let err = open_err(&path);
    let msg = err.to_string();
    assert!(matches!(err, FormatError::Header { .. }));
    assert!(
        msg.contains("header JSON") && msg.contains("line 1"),
        "{msg}"
    );

    // Missing field and unknown dtype name the problem.
    let path = sample(dir.path());
    edit_header_raw(&path, |v| {
        v.as_object_mut().unwrap().remove("family");
    });
    assert!(open_err(&path).to_string().contains("family"));
    let path = sample(dir.path());
    edit_header_raw(&path, |v| v["tensors"][0]["dtype"] = json!("lut4"));
    assert!(open_err(&path).to_string().contains("lut4"));
}

/// Edits tensor `i` of a fresh sample file and returns the open error.
fn tensor_edit_err(i: usize, f: impl FnOnce(&mut serde_json::Value)) -> FormatError {
    let dir = tempfile::tempdir().unwrap();
    let path = sample(dir.path());
    edit_header_raw(&path, |v| f(&mut v["tensors"][i]));
    open_err(&path)
}

#[test]
fn tensor_out_of_bounds() {
    let err = tensor_edit_err(3, |t| t["offset"] = json!(1u64 << 40));
    assert!(matches!(err, FormatError::Truncated { .. }), "{err}");
    assert!(err.to_string().contains("q_proj"), "{err}");
    let err = tensor_edit_err(3, |t| t["offset"] = json!(u64::MAX - 63));
    assert!(matches!(err, FormatError::Truncated { .. }), "{err}");
}

#[test]
fn overlapping_tensors() {
    let err = tensor_edit_err(1, |t| t["offset"] = json!(0));
    let msg = err.to_string();
    assert!(msg.contains("overlap"), "{msg}");
}

#[test]
fn misaligned_offset() {
    let err = tensor_edit_err(2, |t| {
        let o = t["offset"].as_u64().unwrap();
        t["offset"] = json!(o + 4);
    });
    assert!(err.to_string().contains("multiple of 64"), "{err}");
}

#[test]
fn byte_len_mismatch() {
    let err = tensor_edit_err(0, |t| {
        let n = t["byte_len"].as_u64().unwrap();
        t["byte_len"] = json!(n + 1);
    });
    assert!(
        matches!(&err, FormatError::Tensor { tensor, .. } if tensor == "model.norm.weight"),
        "{err}"
    );
    assert!(err.to_string().contains("needs 28 bytes"), "{err}");
    let err = tensor_edit_err(0, |t| t["shape"] = json!([8]));
    assert!(err.to_string().contains("needs 32 bytes"), "{err}");
    let err = tensor_edit_err(3, |t| t["group_size"] = json!(64));
    assert!(matches!(err, FormatError::Tensor { .. }), "{err}");
    let err = tensor_edit_err(3, |t| t["group_size"] = json!(0));
    assert!(err.to_string().contains("group size"), "{err}");
    let err = tensor_edit_err(0, |t| t["group_size"] = json!(32));
    assert!(err.to_string().contains("group_size 0"), "{err}");
}

#[test]
fn hostile_shapes_do_not_overflow() {
    let big = 1u64 << 33;
    let err = tensor_edit_err(0, |t| t["shape"] = json!([big, big, 1]));
    assert!(err.to_string().contains("too large"), "{err}");
    let err = tensor_edit_err(0, |t| t["shape"] = json!([big, big, 0]));
    assert!(matches!(err, FormatError::Tensor { .. }), "{err}");
    let err = tensor_edit_err(0, |t| t["shape"] = json!([u64::MAX]));
    assert!(err.to_string().contains("too large"), "{err}");
}

#[test]
fn duplicate_and_empty_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample(dir.path());
    edit_header_raw(&path, |v| {
        v["tensors"][5]["name"] = v["tensors"][4]["name"].clone()
    });
    assert!(open_err(&path).to_string().contains("twice"));
    let err = tensor_edit_err(2, |t| t["name"] = json!(""));
    assert!(err.to_string().contains("empty name"), "{err}");
}

#[test]
fn trailing_bytes_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample(dir.path());
    let mut b = std::fs::read(&path).unwrap();
    b.extend_from_slice(&[0u8; 64]);
    std::fs::write(&path, b).unwrap();
    assert!(
        open_err(&path)
            .to_string()
            .contains("after the end of the last tensor")
    );
}

#[test]
fn checksum_mismatch_is_found_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample(dir.path());
    let f = CellmFile::open(&path).unwrap();
    let e = f
        .tensor_entry("model.layers.0.mlp.down_proj.weight")
        .unwrap();
    let at = (f.data_offset() + e.offset + 3) as usize;
    drop(f);
    let mut b = std::fs::read(&path).unwrap();
    b[at] ^= 0x10;
    std::fs::write(&path, b).unwrap();

    let f = CellmFile::open(&path).expect("open does not read data");
    let err = f.verify_checksums().unwrap_err();
    assert!(
        matches!(&err, FormatError::Tensor { tensor, .. } if tensor == "model.layers.0.mlp.down_proj.weight"),
        "{err}"
    );
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
}

/// Flips random bytes of the preamble and the JSON header 500 times: `open` must return (Ok or
/// Err) every time, and whatever it accepts must be safe to read.
#[test]
fn random_header_corruption_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample(dir.path());
    let good = std::fs::read(&path).unwrap();
    let header_len = read_u64(&good, 16) as usize;
    let json_len = good[32..32 + header_len]
        .iter()
        .rposition(|&c| c != b' ')
        .unwrap()
        + 1;
    let span = 32 + json_len + 16; // preamble, JSON, and a little of the padding
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let bad = dir.path().join("fuzz.cellm");
    let (mut accepted, mut rejected) = (0, 0);
    for iter in 0..500 {
        let mut b = good.clone();
        for _ in 0..1 + next() % 4 {
            let at = next() % span;
            // Mix of random bytes and JSON-significant characters, to get past the parser.
            let chars = b"0123456789{}[]\",: -e.x\x00\xff";
            b[at] = if next() % 2 == 0 {
                next() as u8
            } else {
                chars[next() % chars.len()]
            };
        }
        std::fs::write(&bad, &b).unwrap();
        let result = std::panic::catch_unwind(|| match CellmFile::open(&bad) {
            Ok(f) => {
                for e in f.tensors() {
                    let _ = f.tensor(&e.name);
                }
                let _ = f.verify_checksums();
                true
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                false
            }
        });
        match result {
            Ok(true) => accepted += 1,
            Ok(false) => rejected += 1,
            Err(_) => panic!("open panicked at iteration {iter}"),
        }
    }
    assert!(rejected > 100, "accepted {accepted}, rejected {rejected}");
}
