//! Writer misuse: every error leaves no file (final or temporary) behind.

use crate::common::*;
use cellm_engine::format::{CellmWriter, FormatError, TensorPlan};
use cellm_engine::tensor::DType;

fn plan() -> Vec<TensorPlan> {
    sample_tensors().into_iter().map(|(p, _)| p).collect()
}

#[test]
fn dropped_writer_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.cellm");
    let w = CellmWriter::create(&path, header(), plan()).unwrap();
    assert_eq!(
        dir_names(dir.path()).len(),
        1,
        "temp file exists while writing"
    );
    assert!(!path.exists());
    drop(w);
    assert!(dir_names(dir.path()).is_empty());

    let mut w = CellmWriter::create(&path, header(), plan()).unwrap();
    let tensors = sample_tensors();
    for (p, b) in &tensors[..3] {
        w.write_tensor(&p.name, b).unwrap();
    }
    drop(w);
    assert!(dir_names(dir.path()).is_empty());
}

#[test]
fn out_of_order_and_wrong_length_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.cellm");
    let tensors = sample_tensors();
    let mut w = CellmWriter::create(&path, header(), plan()).unwrap();

    let err = w
        .write_tensor(&tensors[1].0.name, &tensors[1].1)
        .unwrap_err();
    assert!(err.to_string().contains("out of order"), "{err}");
    assert!(err.to_string().contains(&tensors[0].0.name), "{err}");

    let short = &tensors[0].1[..tensors[0].1.len() - 1];
    let err = w.write_tensor(&tensors[0].0.name, short).unwrap_err();
    assert!(err.to_string().contains("needs"), "{err}");

    // The writer is still usable after a rejected call.
    for (p, b) in &tensors {
        w.write_tensor(&p.name, b).unwrap();
    }
    let err = w.write_tensor("extra", &[]).unwrap_err();
    assert!(err.to_string().contains("already written"), "{err}");
    w.finish().unwrap();
    assert_eq!(dir_names(dir.path()), vec!["m.cellm"]);
}

#[test]
fn finish_with_missing_tensors_fails_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.cellm");
    let tensors = sample_tensors();
    let mut w = CellmWriter::create(&path, header(), plan()).unwrap();
    w.write_tensor(&tensors[0].0.name, &tensors[0].1).unwrap();
    assert_eq!(w.remaining().next(), Some(tensors[1].0.name.as_str()));
    let err = w.finish().unwrap_err();
    assert!(
        matches!(&err, FormatError::Tensor { tensor, .. } if *tensor == tensors[1].0.name),
        "{err}"
    );
    assert!(dir_names(dir.path()).is_empty());
}

#[test]
fn header_too_large_at_finish_fails_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.cellm");
    let mut w = CellmWriter::create(&path, header(), vec![]).unwrap();
    w.header_mut().fidelity = Some(serde_json::json!({"note": "x".repeat(100_000)}));
    let err = w.finish().unwrap_err();
    assert!(err.to_string().contains("reserved"), "{err}");
    assert!(dir_names(dir.path()).is_empty());
}

#[test]
fn invalid_plans_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.cellm");
    let mut dup = plan();
    dup.push(dup[0].clone());
    let err = CellmWriter::create(&path, header(), dup).err().unwrap();
    assert!(err.to_string().contains("twice"), "{err}");

    let bad_group = vec![TensorPlan {
        name: "q".into(),
        dtype: DType::Q4,
        shape: vec![2, 64],
        group_size: 48,
    }];
    let err = CellmWriter::create(&path, header(), bad_group)
        .err()
        .unwrap();
    assert!(err.to_string().contains("group size"), "{err}");

    let bad_cols = vec![TensorPlan {
        name: "q".into(),
        dtype: DType::Q8,
        shape: vec![2, 40],
        group_size: 32,
    }];
    assert!(CellmWriter::create(&path, header(), bad_cols).is_err());
    assert!(dir_names(dir.path()).is_empty());
}

#[test]
fn missing_directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/m.cellm");
    let err = CellmWriter::create(&path, header(), plan()).err().unwrap();
    assert!(matches!(err, FormatError::Io { .. }), "{err}");
}
