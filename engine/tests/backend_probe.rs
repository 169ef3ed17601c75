//! `--backend auto` on the tiny fixtures: the measured probe (forced onto software adapters such
//! as lavapipe), its cache file (hit, key mismatch, corrupt file), and a working session
//! whichever backend wins or when no adapter exists at all.

mod common;

use cellm_engine::backend_probe::ProbeSettings;
use cellm_engine::kv_cache::KvPrecision;
use cellm_engine::sampler::SamplingParams;
use cellm_engine::session::{Backend, GenerateParams, Prompt, Session, SessionOptions};
use common::{WriteOptions, testdata, write_cellm};
use std::path::{Path, PathBuf};

fn fixture(dir: &Path, name: &str, family: &str) -> PathBuf {
    let path = dir.join(format!("{name}.cellm"));
    write_cellm(&testdata(name), family, &path, WriteOptions::default());
    path
}

/// f32 KV rows on both backends, so greedy ids match exactly whichever the probe picks.
fn options(backend: Backend) -> SessionOptions {
    SessionOptions {
        threads: Some(2),
        kv_precision: KvPrecision::F32,
        backend,
        ..Default::default()
    }
}

/// Whether a GPU adapter of any kind opens here (CI without Vulkan has none).
fn has_adapter() -> bool {
    #[cfg(feature = "gpu")]
    {
        cellm_engine::kernels::gpu::GpuContext::new().is_ok()
    }
    #[cfg(not(feature = "gpu"))]
    {
        false
    }
}

fn greedy(s: &mut Session, n: usize) -> Vec<u32> {
    let prompt: Vec<u32> = (0..20).map(|i| 2 + (i * 37) % 500).collect();
    let params = GenerateParams {
        sampling: SamplingParams {
            temperature: 0.0,
            ..Default::default()
        },
        max_new_tokens: n + 1,
    };
    s.set_stop_ids(vec![]);
    s.reset();
    s.generate(&Prompt::Tokens(prompt.clone()), &params, &mut |_| {})
        .unwrap();
    s.context_tokens()[prompt.len()..].to_vec()
}

/// The probe runs (software adapters allowed), picks a backend that then generates what the
/// CPU generates, and the second load reads the cached decision.
#[test]
fn auto_probes_then_reads_the_cache() {
    if !has_adapter() {
        println!("SKIP probe test: no GPU adapter");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for (name, family) in [("tiny-gemma3", "gemma3"), ("tiny-gemma4", "gemma4")] {
        let path = fixture(tmp.path(), name, family);
        let cache = tmp.path().join(format!("cache/{name}.json"));
        let probe = ProbeSettings {
            cache_file: Some(cache.clone()),
            allow_software: true,
        };
        let mut reference = Session::load(&path, options(Backend::Cpu)).unwrap();
        let want = greedy(&mut reference, 8);

        let mut s = Session::load_with_probe(&path, options(Backend::Auto), &probe).unwrap();
        let first = s.backend().to_owned();
        println!("{name}: {first}");
        assert!(
            first.contains("auto: ") && first.contains("tok/s"),
            "{first}"
        );
        assert!(!first.contains("cached"), "{first}");
        assert!(cache.is_file());
        // The probe's scratch state must not leak into generation.
        assert_eq!(greedy(&mut s, 8), want, "{name} on {first}");
        drop(s);

        let s = Session::load_with_probe(&path, options(Backend::Auto), &probe).unwrap();
        let second = s.backend().to_owned();
        assert!(second.ends_with("tok/s, cached)"), "{second}");
        // Same choice, same numbers.
        assert_eq!(second.replace(", cached", ""), first);

        // A different thread count is another key: probed afresh.
        let mut one_thread = options(Backend::Auto);
        one_thread.threads = Some(1);
        let s = Session::load_with_probe(&path, one_thread, &probe).unwrap();
        assert!(!s.backend().contains("cached"), "{}", s.backend());
    }
}

/// A changed model file (new mtime) misses the cache and re-probes; a corrupt cache file is
/// ignored and rewritten.
#[test]
fn auto_reprobes_on_key_mismatch_and_corrupt_cache() {
    if !has_adapter() {
        println!("SKIP probe test: no GPU adapter");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = fixture(tmp.path(), "tiny-gemma3", "gemma3");
    let cache = tmp.path().join("probe.json");
    let probe = ProbeSettings {
        cache_file: Some(cache.clone()),
        allow_software: true,
    };
    let load = || {
        Session::load_with_probe(&path, options(Backend::Auto), &probe)
            .unwrap()
            .backend()
            .to_owned()
    };
    assert!(!load().contains("cached"));
    assert!(load().contains("cached"));

    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert!(!load().contains("cached"), "a touched model re-probes");
    assert!(load().contains("cached"));

    std::fs::write(&cache, b"{\"version\": 1, \"entries\": [tru").unwrap();
    assert!(!load().contains("cached"), "a corrupt cache re-probes");
    let text = std::fs::read_to_string(&cache).unwrap();
    assert!(
        serde_json::from_str::<serde_json::Value>(&text).is_ok(),
        "rewritten: {text}"
    );
    assert!(load().contains("cached"));
}

/// Without the software override, `auto` on lavapipe (or with no adapter at all) is the CPU
/// and says why; on a hardware adapter it probes. A working session either way.
#[test]
fn auto_without_override_works_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let path = fixture(tmp.path(), "tiny-gemma3", "gemma3");
    let probe = ProbeSettings {
        cache_file: None,
        allow_software: false,
    };
    let mut s = Session::load_with_probe(&path, options(Backend::Auto), &probe).unwrap();
    let desc = s.backend().to_owned();
    println!("{desc}");
    assert!(
        desc.contains("(auto: ") || desc.contains("; auto: "),
        "{desc}"
    );
    assert_eq!(greedy(&mut s, 4).len(), 4);
    #[cfg(feature = "gpu")]
    {
        let hardware = cellm_engine::kernels::gpu::GpuContext::new()
            .is_ok_and(|c| cellm_engine::models::gpu::is_hardware(&c));
        if !hardware {
            assert!(desc.starts_with("cpu (auto: "), "{desc}");
        }
    }
}

/// The probe fits any context limit (positions never pass it) and leaves the cache empty.
#[test]
fn measure_fits_small_contexts() {
    use cellm_engine::backend_probe::measure;
    use cellm_engine::format::CellmFile;
    use cellm_engine::kv_cache::KvCache;
    use cellm_engine::models::{chunk_size, load_model};
    let tmp = tempfile::tempdir().unwrap();
    for (name, family) in [("tiny-gemma3", "gemma3"), ("tiny-gemma4", "gemma4")] {
        let path = fixture(tmp.path(), name, family);
        let file = CellmFile::open(&path).unwrap();
        let mut model = load_model(&file).unwrap();
        let cfg = model.config().clone();
        for limit in [1, 2, 3, 5, 12, 64] {
            let mut cache = KvCache::new(&cfg, limit, chunk_size(&cfg), KvPrecision::F16);
            let s = measure(model.as_mut(), &mut cache, None).unwrap();
            assert!(cache.is_empty(), "{name} limit {limit}");
            let prefill = s.prefill_tok_s.unwrap();
            for v in [prefill, s.decode_tok_s] {
                assert!(v.is_finite() && v > 0.0, "{name} limit {limit}: {s:?}");
            }
            // Far behind a rival: one timed step, no prefill.
            let lost = measure(model.as_mut(), &mut cache, Some(1e12)).unwrap();
            assert!(cache.is_empty());
            if limit > 1 {
                assert_eq!(lost.prefill_tok_s, None, "{name} limit {limit}");
            }
        }
    }
}
