//! Helpers shared by the engine's integration tests: fixture paths, reading reference tensors,
//! and writing a tiny fixture's safetensors straight into a `.cellm` (no converter involved, so
//! these tests check the engine alone).

#![allow(dead_code)]

use cellm_engine::format::{
    CellmWriter, Header, Provenance, QuantizationInfo, TensorPlan, TokenizerInfo,
};
use cellm_engine::tensor::{DType, TensorView, encode};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(name)
}

pub fn f32s(st: &SafeTensors<'_>, name: &str) -> (Vec<f32>, Vec<usize>) {
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), Dtype::F32, "{name}");
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (v, t.shape().to_vec())
}

pub fn ids(st: &SafeTensors<'_>, name: &str) -> Vec<u32> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
        .collect()
}

pub fn log_softmax(x: &[f32]) -> Vec<f64> {
    let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let z = x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln() + m;
    x.iter().map(|&v| v as f64 - z).collect()
}

/// How [`write_cellm`] stores the fixture.
pub struct WriteOptions {
    /// Dtype of the matrices (group 32 when quantized, where the layout allows); vectors stay f32.
    pub dtype: DType,
    /// Store the matrices' `dtype` values back in f32 instead: the exact weights a `dtype` file
    /// holds, for a CPU reference without the CPU's int8 activations.
    pub dequantized: bool,
    pub special_tokens: BTreeMap<String, u32>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            dequantized: false,
            special_tokens: BTreeMap::new(),
        }
    }
}

/// Writes `dir`'s safetensors as a `.cellm` at `out`.
pub fn write_cellm(dir: &Path, family: &str, out: &Path, opts: WriteOptions) {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let dtype = opts.dtype;
    let gs = if dtype.is_quantized() { 32 } else { 0 };
    let matrix = |shape: &[usize]| {
        shape.len() == 2 && (!dtype.is_quantized() || shape[1].is_multiple_of(32))
    };
    let pick = |shape: &[usize]| {
        if matrix(shape) && !opts.dequantized {
            (dtype, gs)
        } else {
            (DType::F32, 0)
        }
    };
    let plan = names
        .iter()
        .map(|n| {
            let shape = st.tensor(n).unwrap().shape().to_vec();
            let (dtype, group_size) = pick(&shape);
            TensorPlan {
                name: n.clone(),
                dtype,
                shape,
                group_size,
            }
        })
        .collect();
    let header = Header {
        family: family.into(),
        config,
        tokenizer: TokenizerInfo {
            tokenizer_json: std::fs::read_to_string(dir.join("tokenizer.json")).unwrap(),
            chat_template: None,
            bos_token_id: Some(2),
            eos_token_ids: vec![1],
            pad_token_id: Some(0),
            add_bos: true,
            special_tokens: opts.special_tokens.clone(),
        },
        quantization: QuantizationInfo {
            profile: format!("{dtype}"),
            group_size: gs,
            excluded_layers: vec![],
        },
        provenance: Provenance::default(),
        fidelity: None,
        tensors: vec![],
    };
    let mut w = CellmWriter::create(out, header, plan).unwrap();
    for n in &names {
        let (mut v, shape) = f32s(&st, n);
        if opts.dequantized && matrix(&shape) {
            let b = encode(dtype, &v, &shape, gs).unwrap();
            v = TensorView::new(dtype, &shape, gs, &b).unwrap().to_f32_vec();
        }
        let (dtype, g) = pick(&shape);
        w.write_tensor(n, &encode(dtype, &v, &shape, g).unwrap())
            .unwrap();
    }
    w.finish().unwrap();
}

/// A GPU model test's two sides: the CPU and the GPU model of one fixture.
#[cfg(feature = "gpu")]
pub type Pair<'a> = (
    Box<dyn cellm_engine::models::TextModel + 'a>,
    Box<dyn cellm_engine::models::TextModel + 'a>,
);

/// Runs `check(name, (cpu, gpu))` on the tiny Gemma 3 and Gemma 4 fixtures (f32 weights, f32 KV
/// cache on the GPU), through the `TextModel` trait; returns false, with a note, where no GPU
/// adapter exists.
#[cfg(feature = "gpu")]
pub fn on_tiny_models(check: impl for<'a> Fn(&str, Pair<'a>)) -> bool {
    use cellm_engine::format::CellmFile;
    use cellm_engine::kernels::gpu::GpuContext;
    use cellm_engine::kv_cache::KvPrecision;
    use cellm_engine::models;
    if let Err(e) = GpuContext::new() {
        println!("SKIP gpu model test: {e}");
        return false;
    }
    for (name, family) in [("tiny-gemma3", "gemma3"), ("tiny-gemma4", "gemma4")] {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("m.cellm");
        write_cellm(&testdata(name), family, &path, WriteOptions::default());
        let file = CellmFile::open(&path).unwrap();
        let cpu = models::load_model(&file).unwrap();
        let ctx = GpuContext::new().unwrap();
        let gpu = models::gpu::load(&file, ctx, KvPrecision::F32).unwrap();
        check(name, (cpu, gpu));
    }
    true
}
