//! The Gemma 3 / Gemma 4 text stacks against transformers on the tiny random fixtures
//! (testdata/tiny-gemma{3,4}: f32 weights, reference logits and greedy ids from transformers).
//! The `.cellm` is written here straight from the safetensors in f32 (no converter involved),
//! so these tests check the engine alone; app/tests/parity_*.rs go through the converter.

mod common;

use cellm_engine::kv_cache::KvPrecision;
use cellm_engine::sampler::SamplingParams;
use cellm_engine::session::{GenerateParams, Prompt, Session, SessionOptions, StopReason};
use common::{WriteOptions, f32s, ids, log_softmax, testdata, write_cellm};
use safetensors::SafeTensors;

fn argmax(x: &[f32]) -> usize {
    (0..x.len()).fold(0, |b, i| if x[i] > x[b] { i } else { b })
}

/// (mean KL(ref || ours), max |logit diff|, top-1 match rate).
fn kl_stats(reference: &[f32], ours: &[f32], vocab: usize) -> (f64, f32, f64) {
    let n = reference.len() / vocab;
    let (mut kl, mut diff, mut hit) = (0.0, 0f32, 0usize);
    for t in 0..n {
        let (r, o) = (
            &reference[t * vocab..(t + 1) * vocab],
            &ours[t * vocab..(t + 1) * vocab],
        );
        let (lr, lo) = (log_softmax(r), log_softmax(o));
        kl += lr
            .iter()
            .zip(&lo)
            .map(|(a, b)| a.exp() * (a - b))
            .sum::<f64>();
        diff = r.iter().zip(o).fold(diff, |d, (a, b)| d.max((a - b).abs()));
        hit += (argmax(r) == argmax(o)) as usize;
    }
    (kl / n as f64, diff, hit as f64 / n as f64)
}

/// `max_kl`: bound on the mean KL with the f32 KV cache (1e-8 for the tiny fixtures; 1e-6, the
/// parity bound of issue 12, for the 35-layer e2b-layout, where f32 rounding compounds).
/// `f16_kv`: also bound the f16 KV cache's KL and decode greedily with it (e2b-layout is too
/// sensitive to f16 rounding for that, see testdata/README.md; it decodes with the f32 cache).
fn check_model(name: &str, family: &str, max_kl: f64, f16_kv: bool) {
    let dir = testdata(name);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.cellm");
    write_cellm(&dir, family, &path, WriteOptions::default());
    let refb = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let r = SafeTensors::deserialize(&refb).unwrap();
    let input = ids(&r, "input_ids");
    let (want, shape) = f32s(&r, "logits");
    let vocab = shape[1];

    // f32 KV cache: the engine must reproduce transformers to float32 rounding.
    let opts = |kv_precision| SessionOptions {
        threads: Some(2),
        kv_precision,
        ..Default::default()
    };
    let mut s = Session::load(&path, opts(KvPrecision::F32)).unwrap();
    let got = s.logits_for(&input, &[]).unwrap();
    let (kl, diff, top1) = kl_stats(&want, &got, vocab);
    println!("{name} (f32 KV): KL {kl:.3e}, max |diff| {diff:.3e}, top-1 {top1}");
    assert!(kl < max_kl, "{name}: KL {kl}");
    assert_eq!(top1, 1.0, "{name}: top-1 match");

    // The default f16 KV cache costs a little.
    if f16_kv {
        s = Session::load(&path, opts(KvPrecision::F16)).unwrap();
        let got = s.logits_for(&input, &[]).unwrap();
        let (kl, diff, top1) = kl_stats(&want, &got, vocab);
        println!("{name} (f16 KV): KL {kl:.3e}, max |diff| {diff:.3e}, top-1 {top1}");
        assert!(kl < 1e-4, "{name}: KL {kl}");
        assert_eq!(top1, 1.0, "{name}: top-1 match");
    }

    // Greedy decoding with the KV cache (prefill in window-sized chunks, then t = 1 steps).
    let greedy = ids(&r, "greedy_ids");
    // One extra token so that every greedy id has been fed back into the cache.
    let params = GenerateParams {
        sampling: SamplingParams {
            temperature: 0.0,
            ..Default::default()
        },
        max_new_tokens: greedy.len() + 1,
    };
    s.set_stop_ids(vec![]);
    let mut text = String::new();
    let stats = s
        .generate(&Prompt::Tokens(input.clone()), &params, &mut |p| {
            text.push_str(p)
        })
        .unwrap();
    assert_eq!(stats.stop, StopReason::MaxTokens);
    assert_eq!(stats.generated_tokens, greedy.len() + 1);
    assert_eq!(
        &s.context_tokens()[input.len()..],
        &greedy[..],
        "{name}: greedy ids"
    );
    assert!(!text.is_empty());

    // Prefix reuse: continuing the cached conversation recomputes only the new token, and gives
    // what a fresh session computes.
    let mut longer = s.context_tokens().to_vec();
    longer.push(greedy[0]);
    let params = GenerateParams {
        max_new_tokens: 4,
        ..params
    };
    let stats2 = s
        .generate(&Prompt::Tokens(longer.clone()), &params, &mut |_| {})
        .unwrap();
    assert_eq!(stats2.prefill_tokens, 1, "{name}: prefix reuse");
    let reused = s.context_tokens().to_vec();
    s.reset();
    let stats3 = s
        .generate(&Prompt::Tokens(longer.clone()), &params, &mut |_| {})
        .unwrap();
    assert_eq!(stats3.prefill_tokens, longer.len());
    assert_eq!(
        s.context_tokens(),
        &reused[..],
        "{name}: reuse changes the result"
    );
}

#[test]
fn tiny_gemma3_matches_transformers() {
    check_model("tiny-gemma3", "gemma3", 1e-8, true);
}

#[test]
fn tiny_gemma4_text_matches_transformers() {
    check_model("tiny-gemma4", "gemma4", 1e-8, true);
}

#[test]
fn session_errors_and_cancellation() {
    use cellm_engine::session::SessionError;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.cellm");
    write_cellm(
        &testdata("tiny-gemma3"),
        "gemma3",
        &path,
        WriteOptions::default(),
    );
    let mut s = Session::load(
        &path,
        SessionOptions {
            threads: Some(1),
            max_context: Some(32),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.info().context_length, 32);
    let params = GenerateParams {
        max_new_tokens: 100,
        ..Default::default()
    };
    assert!(matches!(
        s.generate(&Prompt::Tokens(vec![]), &params, &mut |_| {}),
        Err(SessionError::EmptyPrompt)
    ));
    assert!(matches!(
        s.generate(&Prompt::Tokens(vec![5; 40]), &params, &mut |_| {}),
        Err(SessionError::ContextFull {
            tokens: 40,
            limit: 32
        })
    ));
    assert!(matches!(
        s.logits_for(&[5; 33], &[]),
        Err(SessionError::ContextFull { .. })
    ));
    assert!(
        s.generate(&Prompt::Tokens(vec![2, 9999]), &params, &mut |_| {})
            .is_err()
    );

    // The context fills up: generation stops cleanly.
    s.set_stop_ids(vec![]);
    let stats = s
        .generate(&Prompt::Tokens(vec![2, 10, 11]), &params, &mut |_| {})
        .unwrap();
    assert_eq!(stats.stop, StopReason::ContextFull);
    assert_eq!(s.context_tokens().len(), 32);

    // Cancelling from the callback stops after the current token.
    let cancel = s.cancel_token();
    let mut pieces = 0;
    s.reset();
    let stats = s
        .generate(&Prompt::Tokens(vec![2, 10, 11]), &params, &mut |_| {
            pieces += 1;
            cancel.cancel();
        })
        .unwrap();
    assert_eq!(stats.stop, StopReason::Cancelled);
    assert!(stats.generated_tokens <= 2, "{}", stats.generated_tokens);
}

/// The real-layout fixtures (testdata/make_layout_fixtures.py: saved by transformers, so their
/// `per_layer_config` keys are zero-padded): the E2B layer layout at toy widths, and a 12-layer
/// one with another layer-type pattern.
#[test]
fn e2b_layout_text_matches_transformers() {
    check_model("e2b-layout", "gemma4", 1e-6, false);
}

#[test]
fn mixed_layout_text_matches_transformers() {
    check_model("mixed-layout", "gemma4", 1e-8, true);
}

#[test]
fn e2b_layout_multimodal_soft_tokens() {
    check_multimodal("e2b-layout");
}

#[test]
fn mixed_layout_multimodal_soft_tokens() {
    check_multimodal("mixed-layout");
}

#[test]
fn tiny_gemma4_multimodal_soft_tokens() {
    check_multimodal("tiny-gemma4");
}

/// transformers' image and audio soft tokens merged into the prompt: logits against `mm_logits`.
fn check_multimodal(name: &str) {
    use cellm_engine::session::{MediaEmbedding, MediaKind};
    let dir = testdata(name);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.cellm");
    let special = [("image".to_string(), 302u32), ("audio".to_string(), 303u32)]
        .into_iter()
        .collect();
    write_cellm(
        &dir,
        "gemma4",
        &path,
        WriteOptions {
            special_tokens: special,
            ..Default::default()
        },
    );
    let refb = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let r = SafeTensors::deserialize(&refb).unwrap();
    let input = ids(&r, "mm_input_ids");
    let (want, shape) = f32s(&r, "mm_logits");
    let (image, ishape) = f32s(&r, "vision_embedded");
    let (audio, ashape) = f32s(&r, "audio_embedded");
    let media = [
        MediaEmbedding {
            kind: MediaKind::Image,
            embeddings: image,
            tokens: ishape[0],
        },
        MediaEmbedding {
            kind: MediaKind::Audio,
            embeddings: audio,
            tokens: ashape[0],
        },
    ];
    let mut s = Session::load(
        &path,
        SessionOptions {
            threads: Some(2),
            kv_precision: KvPrecision::F32,
            ..Default::default()
        },
    )
    .unwrap();
    let got = s.logits_for(&input, &media).unwrap();
    let (kl, diff, top1) = kl_stats(&want, &got, shape[1]);
    println!("{name} multimodal (f32 KV): KL {kl:.3e}, max |diff| {diff:.3e}, top-1 {top1}");
    assert!(kl < 1e-6, "{name}: KL {kl}");
    assert_eq!(top1, 1.0);
    // A count mismatch is an error, not a panic.
    assert!(s.logits_for(&input, &media[..1]).is_ok());
    assert!(s.logits_for(&input[..50], &media).is_err());
}

#[test]
fn chat_prompt_with_image_expands_placeholders() {
    use cellm_engine::session::{MediaEmbedding, MediaKind, Message, Role};
    let dir = testdata("tiny-gemma4");
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.cellm");
    let special = [
        ("image", 302u32),
        ("boi", 300),
        ("eoi", 301),
        ("audio", 303),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    write_cellm(
        &dir,
        "gemma4",
        &path,
        WriteOptions {
            special_tokens: special,
            ..Default::default()
        },
    );
    let mut s = Session::load(&path, SessionOptions::default()).unwrap();
    let h = s.info().hidden_size;
    let image = MediaEmbedding {
        kind: MediaKind::Image,
        embeddings: vec![0.01; 5 * h],
        tokens: 5,
    };
    let prompt = Prompt::Chat(vec![Message {
        role: Role::User,
        text: "Look".into(),
        media: vec![image],
    }]);
    let ids = s.tokenize(&prompt).unwrap();
    let at = ids.iter().position(|&i| i == 300).expect("boi");
    assert_eq!(&ids[at..at + 7], &[300, 302, 302, 302, 302, 302, 301]);
    assert_eq!(ids.iter().filter(|&&i| i == 302).count(), 5);
    let params = GenerateParams {
        max_new_tokens: 3,
        ..Default::default()
    };
    s.set_stop_ids(vec![]);
    let stats = s.generate(&prompt, &params, &mut |_| {}).unwrap();
    assert_eq!(stats.prompt_tokens, ids.len());
    // The same prompt again: reuse never reaches into the image.
    let stats = s.generate(&prompt, &params, &mut |_| {}).unwrap();
    assert!(stats.prefill_tokens >= ids.len() - (at + 1));
}

#[test]
fn session_memory_breakdown_follows_use() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.cellm");
    write_cellm(
        &testdata("tiny-gemma3"),
        "gemma3",
        &path,
        WriteOptions::default(),
    );
    let mut s = Session::load(
        &path,
        SessionOptions {
            threads: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(s.tokenizer().is_compact());
    let m0 = s.memory();
    assert!(m0.tokenizer_bytes > 0);
    assert_eq!(m0.file_bytes, std::fs::metadata(&path).unwrap().len());
    // Nothing is allocated for the context before it is used.
    assert_eq!(m0.kv_cache_bytes, 0);
    s.set_stop_ids(vec![]);
    let params = GenerateParams {
        max_new_tokens: 4,
        ..Default::default()
    };
    s.generate(&Prompt::Tokens(vec![2, 10, 11]), &params, &mut |_| {})
        .unwrap();
    let m1 = s.memory();
    assert!(m1.kv_cache_bytes > 0 && m1.scratch_bytes > 0);
    assert!(m1.logits_bytes >= 4 * s.info().vocab_size as u64);
    let params = GenerateParams {
        max_new_tokens: 150,
        ..Default::default()
    };
    s.generate(&Prompt::Tokens(vec![2, 10, 11]), &params, &mut |_| {})
        .unwrap();
    let m2 = s.memory();
    assert!(m2.kv_cache_bytes > m1.kv_cache_bytes, "{m1:?} {m2:?}");
    if cfg!(target_os = "linux") {
        let p = m2.process.expect("/proc counters");
        assert!(p.rss_anon_bytes > 0 && p.peak_rss_bytes >= p.rss_anon_bytes);
        assert!(m2.mapped_resident_bytes.expect("smaps") > 0);
        assert!(m2.other_anon_bytes.is_some());
    }
}
