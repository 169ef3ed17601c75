//! The hostile-input suite (issue 15): well over 150 bad files, prompts and arguments, each run
//! as a child `cellm` process under a timeout and an 8 GiB address-space cap. Every one must end
//! in a clean error (status 1 or 2, an `error` line, no panic, no signal, no hang) or, where
//! noted, a correct result. The inputs are made here from the tiny fixtures in testdata/ (this
//! file is the script that makes them), in the classes of the issue plus every breakage kind of
//! llama.cpp's tests/test-gguf.cpp for GGUF and the same kinds for .cellm and safetensors.

mod hostile;
mod parity;

use cellm_convert::Profile;
use hostile::{Cases, Gguf, cellm, gguf_str_array, gguf_string, poke_f32, put, rewrite_cellm};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// f32 conversions of both tiny families, made once per test.
fn tiny_models(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    ["tiny-gemma3", "tiny-gemma4"]
        .into_iter()
        .map(|name| {
            let out = dir.join(name);
            std::fs::create_dir_all(&out).unwrap();
            let m = parity::convert_to(&parity::testdata(name), Profile::F32, &out);
            (name, m)
        })
        .collect()
}

fn run_args(model: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = vec!["run".to_string(), "-m".into(), model.display().to_string()];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Class 1 and 7: numbers in the .cellm header's config, checked before use.
#[test]
fn hostile_cellm_configs() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = Cases::default();
    let big = 1u64 << 40;
    let mutations: Vec<(&str, Value)> = vec![
        ("num_hidden_layers", json!(1_000_000_000_000u64)),
        ("num_hidden_layers", json!(0)),
        ("num_hidden_layers", json!(5000)),
        ("num_hidden_layers", json!(-1)),
        ("num_hidden_layers", json!(1e12)),
        ("head_dim", json!(big)),
        ("head_dim", json!(0)),
        ("head_dim", json!(15)),
        ("hidden_size", json!(big)),
        ("hidden_size", json!(0)),
        ("intermediate_size", json!(big)),
        ("num_attention_heads", json!(big)),
        ("num_attention_heads", json!(0)),
        ("num_key_value_heads", json!(0)),
        ("num_key_value_heads", json!(3)),
        ("vocab_size", json!(big)),
        ("vocab_size", json!(0)),
        ("vocab_size", json!(7)),
        ("sliding_window", json!(0)),
        ("sliding_window", json!(u64::MAX)),
        ("rms_norm_eps", json!(-1.0)),
        ("rms_norm_eps", json!(0.0)),
        ("rms_norm_eps", json!(1e300)),
        ("max_position_embeddings", json!(0)),
        ("max_position_embeddings", json!(big)),
        ("query_pre_attn_scalar", json!(-4.0)),
        ("final_logit_softcapping", json!(-30.0)),
        ("layer_types", json!(["sliding_attention"])),
        ("layer_types", json!(vec!["bogus"; 6])),
        ("hidden_activation", json!("relu")),
        (
            "rope_parameters",
            json!({"sliding_attention": {"rope_theta": -1.0}}),
        ),
        (
            "rope_parameters",
            json!({"full_attention": {"rope_theta": 0.0}}),
        ),
        (
            "rope_parameters",
            json!({"full_attention": {"rope_type": "yarn", "rope_theta": 1.0}}),
        ),
        ("num_kv_shared_layers", json!(big)),
        ("global_head_dim", json!(big)),
        ("hidden_size_per_layer_input", json!(big)),
    ];
    for (family, model) in tiny_models(dir.path()) {
        let bytes = std::fs::read(&model).unwrap();
        for (i, (key, value)) in mutations.iter().enumerate() {
            let b = rewrite_cellm(&bytes, |h| {
                hostile::text_config(h)[*key] = value.clone();
            });
            let p = put(dir.path(), &format!("{family}-cfg{i}.cellm"), &b);
            let o = cellm(run_args(&p, &["-p", "hi", "--raw", "-n", "2"]), None);
            cases.check(&format!("{family} {key} = {value}"), o.clean_error());
        }
        // The config as a whole: missing fields, wrong types.
        for (i, cfg) in [json!(null), json!("config"), json!([1, 2]), json!({})]
            .into_iter()
            .enumerate()
        {
            let b = rewrite_cellm(&bytes, |h| h["config"] = cfg.clone());
            let p = put(dir.path(), &format!("{family}-whole{i}.cellm"), &b);
            let o = cellm(run_args(&p, &["-p", "hi", "--raw"]), None);
            cases.check(&format!("{family} config = {cfg}"), o.clean_error());
        }
        // NaN and infinite norm weights.
        for (i, v) in [f32::NAN, f32::INFINITY].into_iter().enumerate() {
            let mut b = bytes.clone();
            poke_f32(&mut b, "layers.0.input_layernorm.weight", v);
            let p = put(dir.path(), &format!("{family}-nan{i}.cellm"), &b);
            let o = cellm(run_args(&p, &["-p", "hi", "--raw", "-n", "2"]), None);
            cases.check_msg(&format!("{family} norm weight {v}"), &o, "finite");
        }
        // NaN in a matrix: generation stops naming the first bad layer.
        let mut b = bytes.clone();
        poke_f32(&mut b, "layers.1.mlp.down_proj.weight", f32::NAN);
        let p = put(dir.path(), &format!("{family}-nanmat.cellm"), &b);
        let o = cellm(run_args(&p, &["-p", "hi", "--raw", "-n", "2"]), None);
        cases.check_msg(&format!("{family} NaN weight matrix"), &o, "layer");
    }
    cases.finish("cellm configs");
}

/// Breakage of the .cellm container itself (the test-gguf.cpp kinds, for .cellm).
#[test]
fn hostile_cellm_containers() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = Cases::default();
    let model = parity::convert_to(&parity::testdata("tiny-gemma3"), Profile::F32, dir.path());
    let bytes = std::fs::read(&model).unwrap();
    let header_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    let mut variants: Vec<(String, Vec<u8>)> = Vec::new();
    let mut with = |name: &str, f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = bytes.clone();
        f(&mut b);
        variants.push((name.to_string(), b));
    };
    with("bad magic", &|b| b[0] = b'X');
    with("version 0", &|b| {
        b[8..12].copy_from_slice(&0u32.to_le_bytes())
    });
    with("version 2", &|b| {
        b[8..12].copy_from_slice(&2u32.to_le_bytes())
    });
    with("flags", &|b| b[12..16].copy_from_slice(&1u32.to_le_bytes()));
    with("header_len huge", &|b| {
        b[16..24].copy_from_slice(&u64::MAX.to_le_bytes())
    });
    with("header_len past end", &|b| {
        let n = b.len() as u64;
        b[16..24].copy_from_slice(&n.to_le_bytes())
    });
    with("data_offset misaligned", &|b| {
        let d = u64::from_le_bytes(b[24..32].try_into().unwrap()) + 1;
        b[24..32].copy_from_slice(&d.to_le_bytes())
    });
    with("data_offset huge", &|b| {
        b[24..32].copy_from_slice(&u64::MAX.to_le_bytes())
    });
    with("header not json", &|b| b[32] = b'#');
    with("header not utf-8", &|b| b[33] = 0xff);
    with("empty", &|b| b.clear());
    with("zeros", &|b| b.iter_mut().for_each(|x| *x = 0));
    for cut in [
        4,
        8,
        31,
        32,
        40,
        32 + header_len / 2,
        32 + header_len,
        bytes.len() / 2,
        bytes.len() - 1,
    ] {
        with(&format!("truncated at {cut}"), &|b| b.truncate(cut));
    }
    type Edit = Box<dyn Fn(&mut Value)>;
    let table: Vec<(&str, Edit)> = vec![
        ("tensor count zero", Box::new(|h| h["tensors"] = json!([]))),
        (
            "tensor dtype bogus",
            Box::new(|h| h["tensors"][0]["dtype"] = json!("q9")),
        ),
        (
            "tensor shape huge",
            Box::new(|h| h["tensors"][0]["shape"] = json!([1u64 << 40, 1u64 << 40])),
        ),
        (
            "tensor shape overflow",
            Box::new(|h| h["tensors"][0]["shape"] = json!([u64::MAX, u64::MAX])),
        ),
        (
            "tensor offset out of range",
            Box::new(|h| h["tensors"][0]["offset"] = json!(1u64 << 50)),
        ),
        (
            "tensor offset misaligned",
            Box::new(|h| h["tensors"][1]["offset"] = json!(1)),
        ),
        (
            "tensors overlap",
            Box::new(|h| {
                let o = h["tensors"][0]["offset"].clone();
                h["tensors"][1]["offset"] = o;
            }),
        ),
        (
            "duplicate tensor name",
            Box::new(|h| {
                let n = h["tensors"][0]["name"].clone();
                h["tensors"][1]["name"] = n;
            }),
        ),
        (
            "byte_len wrong",
            Box::new(|h| h["tensors"][0]["byte_len"] = json!(3)),
        ),
        (
            "group size bogus",
            Box::new(|h| h["tensors"][0]["group_size"] = json!(7)),
        ),
        ("family unknown", Box::new(|h| h["family"] = json!("llama"))),
        ("family missing", Box::new(|h| h["family"] = json!(null))),
        (
            "tokenizer json garbage",
            Box::new(|h| h["tokenizer"]["tokenizer_json"] = json!("{not json")),
        ),
        (
            "tokenizer json empty object",
            Box::new(|h| h["tokenizer"]["tokenizer_json"] = json!("{}")),
        ),
        (
            "bos id out of range",
            Box::new(|h| h["tokenizer"]["bos_token_id"] = json!(u32::MAX)),
        ),
        (
            "eos ids out of range",
            Box::new(|h| h["tokenizer"]["eos_token_ids"] = json!([u32::MAX])),
        ),
        (
            "missing embedding",
            Box::new(|h| {
                let t = h["tensors"].as_array_mut().unwrap();
                t.retain(|t| !t["name"].as_str().unwrap().contains("embed_tokens"));
            }),
        ),
    ];
    for (name, f) in &table {
        variants.push((name.to_string(), rewrite_cellm(&bytes, f)));
    }
    for (i, (name, b)) in variants.iter().enumerate() {
        let p = put(dir.path(), &format!("c{i}.cellm"), b);
        let o = cellm(run_args(&p, &["-p", "hi", "--raw", "-n", "2"]), None);
        // Out-of-range stop ids only matter if sampled: either outcome is fine for them.
        if name.contains("out of range") && name.contains("id") {
            cases.check(name, o.ok_or_clean());
        } else {
            cases.check(name, o.clean_error());
        }
        let o = cellm(["inspect".into(), p.display().to_string()], None);
        cases.check(&format!("inspect {name}"), o.ok_or_clean());
    }
    cases.finish("cellm containers");
}

/// Every breakage kind of llama.cpp's tests/test-gguf.cpp, plus the GGUF cases of the issue.
#[test]
fn hostile_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = Cases::default();
    let src = std::fs::read(parity::testdata("gguf/tiny-gemma3.gguf")).unwrap();
    let good = Gguf::parse(&src);
    assert_eq!(
        good.bytes(),
        src,
        "the test's GGUF writer round-trips the fixture"
    );
    let mut variants: Vec<(String, Vec<u8>, bool)> = Vec::new();
    let mut add = |name: &str, g: &Gguf| variants.push((name.to_string(), g.bytes(), false));
    let mut m = |name: &str, f: &dyn Fn(&mut Gguf)| {
        let mut g = good.clone();
        f(&mut g);
        add(name, &g);
    };
    m("version 0", &|g| g.version = 0);
    m("version 1", &|g| g.version = 1);
    m("version 4", &|g| g.version = 4);
    m("version max", &|g| g.version = u32::MAX);
    m("tensor count huge", &|g| g.n_tensors = Some(u64::MAX));
    m("tensor count +1", &|g| {
        g.n_tensors = Some(g.tensors.len() as u64 + 1)
    });
    m("kv count huge", &|g| g.n_kv = Some(u64::MAX));
    m("kv count +1", &|g| g.n_kv = Some(g.kvs.len() as u64 + 1));
    m("kv count -1", &|g| g.n_kv = Some(g.kvs.len() as u64 - 1));
    m("kv bad type", &|g| g.kvs[0].1 = 13);
    m("kv type max", &|g| g.kvs[0].1 = u32::MAX);
    m("duplicate key", &|g| {
        let kv = g.kvs[1].clone();
        g.kvs.push(kv);
    });
    m("tensor bad type", &|g| g.tensors[0].2 = 99);
    m("tensor type max", &|g| g.tensors[0].2 = u32::MAX);
    m("tensor 0 dims", &|g| g.tensors[0].1.clear());
    m("tensor 5 dims", &|g| g.tensors[0].1 = vec![1; 5]);
    m("tensor dim huge", &|g| g.tensors[0].1[0] = 1 << 62);
    m("tensor dims overflow", &|g| {
        g.tensors[0].1 = vec![u64::MAX / 2, u64::MAX / 2]
    });
    m("tensor dim zero", &|g| g.tensors[0].1[0] = 0);
    m("duplicate tensor", &|g| {
        let n = g.tensors[0].0.clone();
        g.tensors[1].0 = n;
    });
    m("offset out of range", &|g| g.tensors[0].3 = 1 << 50);
    m("offset misaligned", &|g| g.tensors[1].3 += 1);
    m("tensors overlap", &|g| {
        let o = g.tensors[0].3;
        g.tensors[1].3 = o;
    });
    m("alignment 0", &|g| {
        g.set("general.alignment", 4, 0u32.to_le_bytes().to_vec())
    });
    m("alignment 3", &|g| {
        g.set("general.alignment", 4, 3u32.to_le_bytes().to_vec())
    });
    m("alignment huge", &|g| {
        g.set("general.alignment", 4, (1u32 << 31).to_le_bytes().to_vec())
    });
    m("alignment wrong type", &|g| {
        g.set("general.alignment", 8, gguf_string("32"))
    });
    m("architecture llama", &|g| {
        g.set("general.architecture", 8, gguf_string("llama"))
    });
    m("architecture missing", &|g| {
        g.remove("general.architecture")
    });
    let u32v = |v: u32| v.to_le_bytes().to_vec();
    m("block_count huge", &|g| {
        g.set("gemma3.block_count", 4, u32v(u32::MAX))
    });
    m("block_count 0", &|g| {
        g.set("gemma3.block_count", 4, u32v(0))
    });
    m("embedding_length huge", &|g| {
        g.set("gemma3.embedding_length", 4, u32v(1 << 30))
    });
    m("head_count 0", &|g| {
        g.set("gemma3.attention.head_count", 4, u32v(0))
    });
    m("context_length 0", &|g| {
        g.set("gemma3.context_length", 4, u32v(0))
    });
    m("sliding_window 0", &|g| {
        g.set("gemma3.attention.sliding_window", 4, u32v(0))
    });
    m("rms eps negative", &|g| {
        g.set(
            "gemma3.attention.layer_norm_rms_epsilon",
            6,
            (-1.0f32).to_le_bytes().to_vec(),
        )
    });
    m("tokenizer model gpt2", &|g| {
        g.set("tokenizer.ggml.model", 8, gguf_string("gpt2"))
    });
    m("tokens not strings", &|g| {
        let mut v = 4u32.to_le_bytes().to_vec();
        v.extend_from_slice(&2u64.to_le_bytes());
        v.extend_from_slice(&[0; 8]);
        g.set("tokenizer.ggml.tokens", 9, v)
    });
    let n_tokens = good.tokens().len();
    m("all-identical vocabulary", &|g| {
        g.set(
            "tokenizer.ggml.tokens",
            9,
            gguf_str_array(&vec!["a".to_string(); n_tokens]),
        )
    });
    m("bos id out of range", &|g| {
        g.set("tokenizer.ggml.bos_token_id", 4, u32v(u32::MAX))
    });
    m("data truncated", &|g| {
        let n = g.data.len() / 2;
        g.data.truncate(n)
    });
    m("NaN weight", &|g| {
        // The first tensor stored as F32 (type 0) gets a NaN.
        if let Some(t) = g.tensors.iter().find(|t| t.2 == 0) {
            let at = t.3 as usize;
            g.data[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        }
    });
    for (name, b) in [
        ("bad magic", {
            let mut b = src.clone();
            b[..4].copy_from_slice(b"GGUX");
            b
        }),
        ("empty", Vec::new()),
        ("magic only", b"GGUF".to_vec()),
        ("kv key length huge", {
            // The first key's length field follows magic, version and the two counts.
            let mut b = src.clone();
            b[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
            b
        }),
        ("kv string length huge", {
            let mut g = good.clone();
            g.set("general.architecture", 8, u64::MAX.to_le_bytes().to_vec());
            g.bytes()
        }),
        ("kv array length huge", {
            let mut g = good.clone();
            let mut v = 4u32.to_le_bytes().to_vec();
            v.extend_from_slice(&(1u64 << 60).to_le_bytes());
            g.set("tokenizer.ggml.scores", 9, v);
            g.bytes()
        }),
    ] {
        variants.push((name.to_string(), b, false));
    }
    for k in 1..=12 {
        let cut = src.len() * k / 13;
        variants.push((format!("truncated at {cut}"), src[..cut].to_vec(), false));
    }
    // A 2 MB token: the merge derivation must stay linear (a correct result or a clean error).
    let mut g = good.clone();
    let mut toks = g.tokens();
    let last = toks.len() - 1;
    toks[last] = "ab".repeat(1 << 20);
    g.set("tokenizer.ggml.tokens", 9, gguf_str_array(&toks));
    variants.push(("2 MB token".into(), g.bytes(), true));
    variants.push(("unchanged".into(), src.clone(), true));

    for (i, (name, b, may_succeed)) in variants.iter().enumerate() {
        let p = put(dir.path(), &format!("g{i}.gguf"), b);
        let out = dir.path().join(format!("g{i}.cellm"));
        let args = [
            "convert".to_string(),
            p.display().to_string(),
            "-o".into(),
            out.display().to_string(),
            "--profile".into(),
            "f32".into(),
        ];
        let o = cellm(args, None);
        let r = if name == "unchanged" {
            o.success()
        } else if *may_succeed {
            o.ok_or_clean()
        } else {
            o.clean_error()
        };
        cases.check(&format!("gguf {name}"), r);
        if name == "2 MB token" && o.secs > 20.0 {
            cases.check(name, Err(format!("took {:.1} s", o.secs)));
        }
    }
    cases.finish("gguf");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Hugging Face folders: safetensors headers, shard indexes (confinement), config.json.
#[test]
fn hostile_safetensors_folders() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = Cases::default();
    let src = parity::testdata("tiny-gemma3");
    let st = std::fs::read(src.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&st[8..8 + n]).unwrap();
    let with_header = |h: &Value| {
        let mut j = serde_json::to_vec(h).unwrap();
        j.resize(j.len().div_ceil(8) * 8, b' ');
        let mut b = (j.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(&j);
        b.extend_from_slice(&st[8 + n..]);
        b
    };
    let first = header
        .as_object()
        .unwrap()
        .keys()
        .find(|k| *k != "__metadata__")
        .unwrap()
        .clone();
    let second = header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "__metadata__")
        .nth(1)
        .unwrap()
        .clone();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut raw = |name: &str, f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = st.clone();
        f(&mut b);
        files.push((name.to_string(), b));
    };
    raw("header len huge", &|b| {
        b[..8].copy_from_slice(&u64::MAX.to_le_bytes())
    });
    raw("header len past end", &|b| {
        let l = b.len() as u64;
        b[..8].copy_from_slice(&l.to_le_bytes())
    });
    raw("header not json", &|b| b[8] = b'#');
    raw("empty", &|b| b.clear());
    raw("seven bytes", &|b| b.truncate(7));
    for k in 1..=6 {
        let cut = st.len() * k / 7;
        raw(&format!("truncated at {cut}"), &|b| b.truncate(cut));
    }
    let mut edit = |name: &str, f: &dyn Fn(&mut Value)| {
        let mut h = header.clone();
        f(&mut h);
        files.push((name.to_string(), with_header(&h)));
    };
    edit("header array", &|h| *h = json!([1, 2]));
    edit("dtype bogus", &|h| h[&first]["dtype"] = json!("Q9"));
    edit("offsets out of range", &|h| {
        h[&first]["data_offsets"] = json!([0, 1u64 << 50])
    });
    edit("offsets reversed", &|h| {
        h[&first]["data_offsets"] = json!([8, 0])
    });
    edit("shape mismatch", &|h| h[&first]["shape"] = json!([3, 3]));
    edit("shape huge", &|h| {
        h[&first]["shape"] = json!([1u64 << 40, 1u64 << 40])
    });
    edit("tensors overlap", &|h| {
        let o = h[&first]["data_offsets"].clone();
        h[&second]["data_offsets"] = o;
        let s = h[&first]["shape"].clone();
        h[&second]["shape"] = s;
        let d = h[&first]["dtype"].clone();
        h[&second]["dtype"] = d;
    });
    let mut i = 0;
    for (name, bytes) in &files {
        i += 1;
        let d = dir.path().join(format!("st{i}"));
        copy_dir(&src, &d);
        std::fs::write(d.join("model.safetensors"), bytes).unwrap();
        let o = convert(&d, dir.path());
        cases.check(&format!("safetensors {name}"), o.clean_error());
    }

    // config.json.
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    let configs: Vec<(&str, Value)> = vec![
        ("num_hidden_layers", json!(1_000_000_000_000u64)),
        ("head_dim", json!(1u64 << 40)),
        ("vocab_size", json!(0)),
        ("hidden_size", json!(1u64 << 40)),
        ("sliding_window", json!(0)),
        ("rms_norm_eps", json!(-1.0)),
        ("max_position_embeddings", json!(1u64 << 40)),
        ("num_attention_heads", json!(0)),
    ];
    for (key, value) in &configs {
        i += 1;
        let d = dir.path().join(format!("st{i}"));
        copy_dir(&src, &d);
        let mut c = cfg.clone();
        c[*key] = value.clone();
        std::fs::write(d.join("config.json"), serde_json::to_vec(&c).unwrap()).unwrap();
        cases.check(
            &format!("config.json {key} = {value}"),
            convert(&d, dir.path()).clean_error(),
        );
    }
    for (name, body) in [
        ("config not json", b"{".to_vec()),
        ("config empty", Vec::new()),
    ] {
        i += 1;
        let d = dir.path().join(format!("st{i}"));
        copy_dir(&src, &d);
        std::fs::write(d.join("config.json"), body).unwrap();
        cases.check(name, convert(&d, dir.path()).clean_error());
    }
    for missing in ["config.json", "tokenizer.json", "model.safetensors"] {
        i += 1;
        let d = dir.path().join(format!("st{i}"));
        copy_dir(&src, &d);
        std::fs::remove_file(d.join(missing)).unwrap();
        cases.check(
            &format!("missing {missing}"),
            convert(&d, dir.path()).clean_error(),
        );
    }
    // NaN weight: the converter refuses it.
    {
        i += 1;
        let d = dir.path().join(format!("st{i}"));
        copy_dir(&src, &d);
        let mut b = st.clone();
        let (a, _) = (
            header[&first]["data_offsets"][0].as_u64().unwrap() as usize,
            0,
        );
        if header[&first]["dtype"] == "F32" {
            b[8 + n + a..8 + n + a + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        } else {
            b[8 + n + a..8 + n + a + 2].copy_from_slice(&[0x00, 0x7e]);
        }
        std::fs::write(d.join("model.safetensors"), b).unwrap();
        let o = convert(&d, dir.path());
        cases.check_msg("NaN weight", &o, "finite");
    }
    // Shard indexes naming files outside the folder.
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("model.safetensors"), &st).unwrap();
    let names: Vec<String> = header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    for (label, shard) in [
        ("dotdot", "../outside/model.safetensors".to_string()),
        (
            "absolute",
            outside.join("model.safetensors").display().to_string(),
        ),
        ("etc passwd", "/etc/passwd".to_string()),
        ("symlink out", "link.safetensors".to_string()),
        ("empty name", String::new()),
    ] {
        i += 1;
        let d = dir.path().join(format!("st{i}"));
        copy_dir(&src, &d);
        std::fs::remove_file(d.join("model.safetensors")).unwrap();
        std::os::unix::fs::symlink(
            outside.join("model.safetensors"),
            d.join("link.safetensors"),
        )
        .unwrap();
        let map: serde_json::Map<String, Value> =
            names.iter().map(|k| (k.clone(), json!(shard))).collect();
        std::fs::write(
            d.join("model.safetensors.index.json"),
            serde_json::to_vec(&json!({"weight_map": map})).unwrap(),
        )
        .unwrap();
        let o = convert(&d, dir.path());
        cases.check(&format!("shard {label}"), o.clean_error());
    }
    cases.finish("safetensors folders");
}

fn convert(input: &Path, out_dir: &Path) -> hostile::Outcome {
    let out = out_dir.join(format!(
        "{}.cellm",
        input.file_name().unwrap().to_string_lossy()
    ));
    cellm(
        [
            "convert".to_string(),
            input.display().to_string(),
            "-o".into(),
            out.display().to_string(),
            "--profile".into(),
            "f32".into(),
        ],
        None,
    )
}

/// Command-line numbers, paths and outputs.
#[test]
fn hostile_command_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = Cases::default();
    let model = parity::convert_to(&parity::testdata("tiny-gemma3"), Profile::F32, dir.path());
    let m = model.display().to_string();
    let bad: Vec<Vec<&str>> = vec![
        vec!["run", "-m", &m, "-p", "hi", "-n", "1000000000000"],
        vec!["run", "-m", &m, "-p", "hi", "-n", "0"],
        vec!["run", "-m", &m, "-p", "hi", "-n", "-1"],
        vec!["run", "-m", &m, "-p", "hi", "--threads", "10000"],
        vec!["run", "-m", &m, "-p", "hi", "--threads", "0"],
        vec!["run", "-m", &m, "-p", "hi", "--temp", "-1"],
        vec!["run", "-m", &m, "-p", "hi", "--temp", "NaN"],
        vec!["run", "-m", &m, "-p", "hi", "--temp", "inf"],
        vec!["run", "-m", &m, "-p", "hi", "--top-p", "2"],
        vec!["run", "-m", &m, "-p", "hi", "--top-p", "0"],
        vec!["run", "-m", &m, "-p", "hi", "--top-p", "NaN"],
        vec!["run", "-m", &m, "-p", "hi", "--top-k", "-1"],
        vec!["run", "-m", &m, "-p", "hi", "--top-k", "99999999999"],
        vec!["bench", "-m", &m, "--prompt-tokens", "1000000000000"],
        vec!["bench", "-m", &m, "--gen-tokens", "0"],
        vec!["bench", "-m", &m, "--repeat", "0"],
        vec!["bench", "-m", &m, "--threads", "10000"],
        vec!["bench", "-m", &m, "--csv", &m],
        vec!["compare", "-m", &m, "--reference", &m, "--free-run", "0"],
        vec!["compare", "-m", &m, "--reference", &m],
        vec!["run", "-m", "/", "-p", "hi"],
        vec!["run", "-m", "/dev/null", "-p", "hi"],
        vec!["run", "-m", "/nonexistent/model.cellm", "-p", "hi"],
        vec!["inspect", "/"],
        vec!["convert", "synthetic:nonsense", "-o", "/tmp/x.cellm"],
        vec!["convert", &m, "-o", &m],
    ];
    for args in &bad {
        let o = cellm(args.iter().copied(), None);
        cases.check(&args.join(" "), o.clean_error());
    }
    let o = cellm(
        ["run", "-m", dir.path().to_str().unwrap(), "-p", "hi"],
        None,
    );
    cases.check_msg("run -m DIR", &o, "folder");

    // A reference declaring 32000 positions in a few hundred KB.
    let ids: Vec<u8> = (0..32000i64)
        .flat_map(|i| (i % 500).to_le_bytes())
        .collect();
    let k1: Vec<u8> = (0..32000i64).flat_map(|_| 3i64.to_le_bytes()).collect();
    let l1: Vec<u8> = (0..32000).flat_map(|_| 1.0f32.to_le_bytes()).collect();
    fn view(
        dtype: safetensors::Dtype,
        shape: Vec<usize>,
        data: &[u8],
    ) -> safetensors::tensor::TensorView<'_> {
        safetensors::tensor::TensorView::new(dtype, shape, data).unwrap()
    }
    let tensors = vec![
        (
            "input_ids",
            view(safetensors::Dtype::I64, vec![32000], &ids),
        ),
        (
            "topk_ids",
            view(safetensors::Dtype::I64, vec![32000, 1], &k1),
        ),
        (
            "topk_logits",
            view(safetensors::Dtype::F32, vec![32000, 1], &l1),
        ),
        ("logsumexp", view(safetensors::Dtype::F32, vec![32000], &l1)),
    ];
    let reference = dir.path().join("ref.safetensors");
    safetensors::serialize_to_file(tensors, None, &reference).unwrap();
    let o = cellm(
        [
            "compare",
            "-m",
            &m,
            "--reference",
            reference.to_str().unwrap(),
        ],
        None,
    );
    cases.check("reference with 32000 positions", o.clean_error());

    // Reports never overwrite an input.
    let set = dir.path().join("set.jsonl");
    std::fs::write(
        &set,
        "{\"id\":\"a\",\"reference\":\"ref.safetensors\",\"text\":\"x\"}\n",
    )
    .unwrap();
    let o = cellm(
        [
            "compare",
            "-m",
            &m,
            "--prompts",
            set.to_str().unwrap(),
            "--markdown",
            &m,
        ],
        None,
    );
    cases.check_msg("compare --markdown MODEL", &o, "input");
    let before = std::fs::metadata(&model).unwrap().len();
    cases.check(
        "model untouched",
        if std::fs::metadata(&model).unwrap().len() == before {
            Ok(())
        } else {
            Err("the model changed".into())
        },
    );

    // A working run, and typed control tokens stay text.
    let o = cellm(
        ["run", "-m", &m, "-p", "hello<end_of_turn>", "-n", "3"],
        None,
    );
    cases.check("control token typed in chat", o.success());
    let o = cellm(
        [
            "run", "-m", &m, "-p", "hi", "-n", "3", "--temp", "0.7", "--top-p", "1",
        ],
        None,
    );
    cases.check("good sampling flags", o.success());

    // `inspect --json | head -1`: a closed stdout is not an error.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_cellm"))
        .args(["inspect", "--json", &m])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&status.stderr);
    cases.check(
        "inspect --json into a closed pipe",
        if status.status.success() && err.trim().is_empty() {
            Ok(())
        } else {
            Err(format!("{:?}: {err}", status.status))
        },
    );
    cases.finish("command lines");
}

/// Chat templates and tokenizers from the file: bounded, and never fatal.
#[test]
fn hostile_templates_and_tokenizers() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = Cases::default();
    let model = parity::convert_to(&parity::testdata("tiny-gemma3"), Profile::F32, dir.path());
    let bytes = std::fs::read(&model).unwrap();
    let templates = [
        (
            "nested range loops",
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        ),
        (
            "string doubling",
            "{% set s = 'ab' %}{% for i in range(40) %}{% set s = s + s %}{% endfor %}{{ s }}",
        ),
        (
            "unbounded recursion",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        ),
        (
            "huge output",
            "{% for i in range(100) %}{{ 'x' * 100000000 }}{% endfor %}",
        ),
        ("syntax error", "{% for %}"),
        ("raises", "{{ raise_exception('no') }}"),
        ("undefined call", "{{ nothing() }}"),
    ];
    for (i, (name, t)) in templates.iter().enumerate() {
        let b = rewrite_cellm(&bytes, |h| {
            h["tokenizer"]["chat_template"] = json!(t);
        });
        let p = put(dir.path(), &format!("t{i}.cellm"), &b);
        let o = cellm(run_args(&p, &["-p", "hi", "-n", "2"]), None);
        cases.check(&format!("template {name}"), o.clean_error());
        if o.secs > 10.0 {
            cases.check(name, Err(format!("took {:.1} s", o.secs)));
        }
    }
    // A pre-tokenizer regex that backtracks badly (onig's retry limit panics inside
    // tokenizers): a clean error or a result, never a crash.
    let tok: Value = {
        let header_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
        let h: Value = serde_json::from_slice(&bytes[32..32 + header_len]).unwrap();
        serde_json::from_str(h["tokenizer"]["tokenizer_json"].as_str().unwrap()).unwrap()
    };
    for (i, pattern) in ["(a+)+$", "(a|aa)+$", "(.*a){20}"].iter().enumerate() {
        let mut t = tok.clone();
        t["pre_tokenizer"] = json!({
            "type": "Split",
            "pattern": {"Regex": pattern},
            "behavior": "Isolated",
            "invert": false
        });
        let text = t.to_string();
        let b = rewrite_cellm(&bytes, |h| h["tokenizer"]["tokenizer_json"] = json!(text));
        let p = put(dir.path(), &format!("rx{i}.cellm"), &b);
        let prompt = format!("{}b", "a".repeat(5000));
        let o = cellm(run_args(&p, &["-p", &prompt, "--raw", "-n", "2"]), None);
        cases.check(&format!("regex {pattern}"), o.ok_or_clean());
    }
    cases.finish("templates and tokenizers");
}

/// A model truncated while mapped: a clear message, not a SIGBUS.
#[test]
fn hostile_model_truncated_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let model = parity::convert_to(&parity::testdata("tiny-gemma3"), Profile::F32, dir.path());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cellm"))
        .args([
            "bench",
            "-m",
            model.to_str().unwrap(),
            "--prompt-tokens",
            "200",
            "--gen-tokens",
            "200",
            "--repeat",
            "1000",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&model)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() || start.elapsed().as_secs() > 60 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), None, "killed by a signal: {err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("truncated or replaced"), "{err}");
}
