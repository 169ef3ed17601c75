//! The converter proves the file loads before writing it (convert/src/plan_check.rs): a tensor
//! the models would look up missing or misshapen, or a config the engine refuses, is one error
//! naming it, and no output (or temporary) file is left. Built from testdata/mixed-layout (a
//! folder transformers saved: zero-padded `per_layer_config` keys).

use cellm_convert::{ConvertError, ConvertOptions, Profile, convert, open_source};
use cellm_engine::format::CellmFile;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/mixed-layout")
}

/// A copy of the fixture in `dir` with `edit_config` applied to config.json and `edit_tensors`
/// to the (name, shape, f32 values) list of model.safetensors.
fn variant(
    dir: &Path,
    edit_config: impl FnOnce(&mut Value),
    edit_tensors: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<u8>)>),
) -> PathBuf {
    let src = fixture();
    let out = dir.join("model");
    std::fs::create_dir_all(&out).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(src.join(f), out.join(f)).unwrap();
    }
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    edit_config(&mut config);
    std::fs::write(
        out.join("config.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            assert_eq!(t.dtype(), Dtype::F32, "{n}");
            (n, t.shape().to_vec(), t.data().to_vec())
        })
        .collect();
    edit_tensors(&mut tensors);
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &out.join("model.safetensors")).unwrap();
    out
}

fn convert_dir(input: &Path, out: &Path) -> Result<(), ConvertError> {
    let source = open_source(input)?;
    convert(
        source.as_ref(),
        out,
        &ConvertOptions::new(Profile::Int8),
        &mut |_| {},
    )
    .map(|_| ())
}

/// Converts `input` into `dir/out.cellm`, expecting an error that mentions every one of `want`;
/// checks nothing was left in `dir` besides the input folder.
fn expect_refusal(dir: &Path, input: &Path, want: &[&str]) -> String {
    let out = dir.join("out.cellm");
    let err = convert_dir(input, &out).expect_err("the conversion should be refused");
    let msg = err.to_string();
    for w in want {
        assert!(msg.contains(w), "expected '{w}' in: {msg}");
    }
    let left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "model")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    msg
}

#[test]
fn transformers_saved_folder_converts_and_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.cellm");
    convert_dir(&fixture(), &out).unwrap();
    let file = CellmFile::open(&out).unwrap();
    cellm_engine::models::load_model(&file).unwrap();
}

#[test]
fn misshapen_tensor_is_refused_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    // Layer 5 is a full-attention layer (head_dim 16 from per_layer_config "05"); give its k_proj
    // the sliding layers' shape, as a writer that missed the per-layer head size would.
    let name = "model.language_model.layers.5.self_attn.k_proj.weight";
    let input = variant(
        tmp.path(),
        |_| {},
        |ts| {
            let t = ts.iter_mut().find(|t| t.0 == name).unwrap();
            t.1[0] /= 2;
            t.2.truncate(t.2.len() / 2);
        },
    );
    let msg = expect_refusal(
        tmp.path(),
        &input,
        &[name, "expected shape [32, 32]", "[16, 32]"],
    );
    println!("{msg}");
}

#[test]
fn missing_tensors_are_refused_by_name() {
    for name in [
        "model.language_model.layers.3.mlp.down_proj.weight",
        "model.vision_tower.encoder.layers.1.mlp.up_proj.linear.weight",
        "model.audio_tower.layers.0.lconv1d.depthwise_conv1d.weight",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let input = variant(
            tmp.path(),
            |_| {},
            |ts| {
                let before = ts.len();
                ts.retain(|t| t.0 != name);
                assert_eq!(ts.len() + 1, before, "{name} is not in the fixture");
            },
        );
        // The converter stores clipped linears' `.linear.weight` as `.weight`.
        let stored = name.replace(".linear.weight", ".weight");
        let msg = expect_refusal(tmp.path(), &input, &[&stored]);
        println!("{msg}");
    }
}

#[test]
fn unsupported_gemma4_variants_are_refused_by_key() {
    let cases: [(&str, Value, &str); 4] = [
        ("enable_moe_block", Value::Bool(true), "enable_moe_block"),
        ("attention_k_eq_v", Value::Bool(true), "attention_k_eq_v"),
        (
            "use_bidirectional_attention",
            Value::String("all".into()),
            "use_bidirectional_attention",
        ),
        ("attention_bias", Value::Bool(true), "attention_bias"),
    ];
    for (key, value, want) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let input = variant(
            tmp.path(),
            |c| {
                c["text_config"][key] = value;
            },
            |_| {},
        );
        let msg = expect_refusal(tmp.path(), &input, &[want, "not supported"]);
        println!("{msg}");
    }
    // A per-layer override of something the engine does not apply per layer.
    let tmp = tempfile::tempdir().unwrap();
    let input = variant(
        tmp.path(),
        |c| {
            c["text_config"]["per_layer_config"]["05"]["sliding_window"] = Value::from(4);
        },
        |_| {},
    );
    expect_refusal(tmp.path(), &input, &["per_layer_config", "sliding_window"]);
}

/// Plain (`"5"`) and zero-padded (`"05"`) per_layer_config keys mean the same layer.
#[test]
fn per_layer_config_key_forms_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let input = variant(
        tmp.path(),
        |c| {
            let plc = c["text_config"]["per_layer_config"]
                .as_object()
                .unwrap()
                .clone();
            let plain: serde_json::Map<String, Value> = plc
                .into_iter()
                .map(|(k, v)| (k.trim_start_matches('0').to_string(), v))
                .collect();
            assert!(plain.contains_key("5"), "{plain:?}");
            c["text_config"]["per_layer_config"] = Value::Object(plain);
        },
        |_| {},
    );
    let out = tmp.path().join("plain.cellm");
    convert_dir(&input, &out).unwrap();
    let file = CellmFile::open(&out).unwrap();
    let model = cellm_engine::models::load_model(&file).unwrap();
    let heads: Vec<usize> = model.config().layers.iter().map(|l| l.head_dim).collect();
    assert_eq!(heads, [8, 16, 8, 8, 8, 16, 8, 16, 8, 8, 8, 16]);
}
