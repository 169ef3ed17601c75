//! Round trips through CellmWriter / CellmFile, and in-place header updates.

use crate::common::*;
use cellm_engine::format::{
    ALIGNMENT, CellmFile, CellmWriter, FormatError, MAGIC, TensorPlan, update_header,
};
use cellm_engine::tensor::DType;

#[test]
fn round_trip_all_dtypes() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_sample(dir.path(), "m.cellm");
    assert_eq!(dir_names(dir.path()), vec!["m.cellm"], "no temp file left");

    let raw = std::fs::read(&path).unwrap();
    assert_eq!(&raw[..8], &MAGIC);
    let f = CellmFile::open(&path).unwrap();
    assert_eq!(f.file_len(), raw.len() as u64);
    assert_eq!(f.data_offset() % ALIGNMENT, 0);
    assert!(f.data_offset() >= 32 + f.header_len());

    let tensors = sample_tensors();
    assert_eq!(f.tensors().len(), tensors.len());
    let mut data_end = 0;
    for ((plan, bytes), entry) in tensors.iter().zip(f.tensors()) {
        assert_eq!(entry.name, plan.name, "file keeps plan order");
        let v = f.tensor(&plan.name).unwrap();
        assert_eq!(v.dtype, plan.dtype);
        assert_eq!(v.shape, &plan.shape[..]);
        assert_eq!(v.data, &bytes[..], "{}", plan.name);
        assert_eq!(entry.crc32, crc32fast::hash(bytes));
        assert_eq!(entry.offset % ALIGNMENT, 0);
        if plan.dtype.is_quantized() {
            assert_eq!(v.group_size, plan.group_size);
        } else {
            assert_eq!(entry.group_size, 0);
        }
        // Absolute position in the file is aligned too (data_offset is aligned).
        let abs = (f.data_offset() + entry.offset) as usize;
        assert_eq!(&raw[abs..abs + bytes.len()], &bytes[..]);
        data_end = data_end.max(entry.offset + entry.byte_len);
        assert!(f.contains(&plan.name));
        assert_eq!(f.tensor_entry(&plan.name).unwrap(), entry);
    }
    assert_eq!(
        f.file_len(),
        f.data_offset() + data_end,
        "no trailing bytes"
    );
    // f32 values come back bit-exact through the view.
    let norm = f.tensor("model.norm.weight").unwrap();
    assert_eq!(norm.as_f32().unwrap(), &values(7, 0)[..]);
    f.verify_checksums().unwrap();

    let mut expected = header();
    expected.tensors = f.header().tensors.clone();
    assert_eq!(f.header(), &expected);

    assert!(matches!(
        f.tensor("nope"),
        Err(FormatError::MissingTensor(n)) if n == "nope"
    ));
    assert!(!f.contains("nope"));
}

#[test]
fn empty_model_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.cellm");
    let w = CellmWriter::create(&path, header(), vec![]).unwrap();
    w.finish().unwrap();
    let f = CellmFile::open(&path).unwrap();
    assert!(f.tensors().is_empty());
    assert_eq!(f.file_len(), f.data_offset());
    f.verify_checksums().unwrap();
}

#[test]
fn header_mut_sets_fidelity_before_finish() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.cellm");
    let plan = vec![TensorPlan {
        name: "w".into(),
        dtype: DType::F32,
        shape: vec![4],
        group_size: 32, // ignored for float dtypes, stored as 0
    }];
    let mut w = CellmWriter::create(&path, header(), plan).unwrap();
    w.write_tensor("w", &[0u8; 16]).unwrap();
    w.header_mut().fidelity = Some(serde_json::json!({"kl_mean": 0.01}));
    w.header_mut().tensors.clear(); // the writer's own table wins
    w.finish().unwrap();
    let f = CellmFile::open(&path).unwrap();
    assert_eq!(f.header().fidelity.as_ref().unwrap()["kl_mean"], 0.01);
    assert_eq!(f.tensors().len(), 1);
    assert_eq!(f.tensors()[0].group_size, 0);
}

#[test]
fn update_header_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_sample(dir.path(), "m.cellm");
    let before = std::fs::read(&path).unwrap();
    let fidelity = serde_json::json!({"kl_mean": 0.0123, "kl_max": 0.5, "top1_match": 0.97,
        "positions": 512, "calibration": "wikitext sample"});
    update_header(&path, |h| h.fidelity = Some(fidelity.clone())).unwrap();

    let after = std::fs::read(&path).unwrap();
    assert_eq!(after.len(), before.len(), "file length unchanged");
    let f = CellmFile::open(&path).unwrap();
    assert_eq!(f.header().fidelity.as_ref(), Some(&fidelity));
    let d = f.data_offset() as usize;
    assert_eq!(&after[d..], &before[d..], "data untouched");
    assert_eq!(&after[..32], &before[..32], "preamble untouched");
    f.verify_checksums().unwrap();
    assert_eq!(dir_names(dir.path()), vec!["m.cellm"]);

    // Shrinking works too (the rest of the region becomes spaces).
    update_header(&path, |h| h.fidelity = None).unwrap();
    assert_eq!(CellmFile::open(&path).unwrap().header().fidelity, None);
}

#[test]
fn update_header_refuses_what_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_sample(dir.path(), "m.cellm");
    let before = std::fs::read(&path).unwrap();
    let huge = "x".repeat(1 << 20);
    let err = update_header(&path, |h| {
        h.fidelity = Some(serde_json::json!({"note": huge}))
    })
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("reserved"), "{msg}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "file unchanged");

    let err = update_header(&path, |h| h.tensors[0].crc32 ^= 1).unwrap_err();
    assert!(err.to_string().contains("tensor table"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "file unchanged");
}

#[test]
fn finish_replaces_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.cellm");
    std::fs::write(&path, b"old contents").unwrap();
    write_sample(dir.path(), "m.cellm");
    CellmFile::open(&path).unwrap().verify_checksums().unwrap();
    assert_eq!(dir_names(dir.path()), vec!["m.cellm"]);
}

#[test]
fn crc32_is_the_documented_one() {
    // FORMAT.md names CRC-32/ISO-HDLC by its check value.
    assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
}
