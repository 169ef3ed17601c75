//! `cellm inspect MODEL [--verify] [--json]`: header summary, tensor table, sizes by component and
//! dtype.

use cellm_engine::format::{CellmFile, Header, TensorEntry};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The .cellm file.
    pub model: PathBuf,
    /// Also read every tensor and check its CRC-32.
    #[arg(long)]
    pub verify: bool,
    /// Print the header as JSON instead (the embedded tokenizer.json is replaced by its length in
    /// bytes).
    #[arg(long)]
    pub json: bool,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let file = CellmFile::open(&args.model)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match report(&mut out, &file, &args).and_then(|()| Ok(out.flush()?)) {
        // `cellm inspect m.cellm | head` is fine.
        Err(Failure::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(Failure::Io(e)) => Err(anyhow::Error::new(e).context("writing to stdout")),
        Err(Failure::Format(e)) => Err(e.into()),
        Ok(()) => Ok(()),
    }
}

/// Output errors (a closed pipe is not worth reporting) vs. real findings such as a bad checksum.
enum Failure {
    Io(std::io::Error),
    Format(cellm_engine::format::FormatError),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Io(e)
    }
}

fn report(out: &mut impl Write, file: &CellmFile, args: &Args) -> Result<(), Failure> {
    if args.json {
        print_json(out, file.header())?;
    } else {
        print_report(out, file)?;
    }
    if args.verify {
        // Show the report before the (possibly long) read of every byte.
        out.flush()?;
        let t = std::time::Instant::now();
        file.verify_checksums().map_err(Failure::Format)?;
        let total: u64 = file.tensors().iter().map(|e| e.byte_len).sum();
        let msg = format!(
            "checksums: all {} tensors OK ({} read in {:.2} s)",
            file.tensors().len(),
            human(total),
            t.elapsed().as_secs_f64()
        );
        if args.json {
            // Keep stdout a single JSON document.
            eprintln!("{msg}");
        } else {
            writeln!(out, "\n{msg}")?;
        }
    }
    Ok(())
}

fn print_json(out: &mut impl Write, header: &Header) -> std::io::Result<()> {
    let mut v = serde_json::to_value(header).map_err(std::io::Error::other)?;
    if let Some(tok) = v.get_mut("tokenizer").and_then(|t| t.as_object_mut()) {
        let len = header.tokenizer.tokenizer_json.len();
        tok.insert("tokenizer_json".into(), len.into());
    }
    serde_json::to_writer_pretty(&mut *out, &v).map_err(std::io::Error::other)?;
    writeln!(out)
}

/// Label column width of the summary.
const W: usize = 14;

fn print_report(out: &mut impl Write, file: &CellmFile) -> std::io::Result<()> {
    let h = file.header();
    let header_json_len = serde_json::to_vec(h).map(|v| v.len()).unwrap_or(0);
    writeln!(out, "{:<W$}{}", "file", file.path().display())?;
    writeln!(
        out,
        "{:<W$}{} ({} bytes), format v{}, header {} used of {} reserved",
        "",
        human(file.file_len()),
        file.file_len(),
        cellm_engine::format::FORMAT_VERSION,
        human(header_json_len as u64),
        human(file.header_len()),
    )?;

    // Model and config.
    let cfg = &h.config;
    let text = cfg
        .get("text_config")
        .filter(|t| t.is_object())
        .unwrap_or(cfg);
    let model_type = text
        .get("model_type")
        .or_else(|| cfg.get("model_type"))
        .and_then(|v| v.as_str())
        .unwrap_or("?");
    writeln!(out, "{:<W$}{} ({model_type})", "family", h.family)?;
    let keys = [
        ("layers", "num_hidden_layers"),
        ("hidden", "hidden_size"),
        ("intermediate", "intermediate_size"),
        ("heads", "num_attention_heads"),
        ("kv heads", "num_key_value_heads"),
        ("head dim", "head_dim"),
        ("vocab", "vocab_size"),
        ("context", "max_position_embeddings"),
        ("sliding window", "sliding_window"),
    ];
    let parts: Vec<String> = keys
        .iter()
        .filter_map(|(label, key)| {
            let v = text.get(*key)?;
            (!v.is_null()).then(|| format!("{label} {v}"))
        })
        .collect();
    if !parts.is_empty() {
        writeln!(out, "{:<W$}{}", "config", parts.join(", "))?;
    }
    let towers: Vec<&str> = ["vision_config", "audio_config"]
        .into_iter()
        .filter(|k| cfg.get(*k).is_some_and(|v| v.is_object()))
        .map(|k| k.trim_end_matches("_config"))
        .collect();
    if !towers.is_empty() {
        writeln!(out, "{:<W$}{}", "towers", towers.join(", "))?;
    }

    // Tokenizer.
    let t = &h.tokenizer;
    let vocab = match tokenizer_counts(&t.tokenizer_json) {
        Some((kind, n, added)) => format!("{kind}, vocab {n} (+{added} added tokens)"),
        None if t.tokenizer_json.is_empty() => "none embedded".into(),
        None => format!("unreadable ({} bytes)", t.tokenizer_json.len()),
    };
    writeln!(out, "{:<W$}{vocab}", "tokenizer")?;
    let opt = |v: Option<u32>| v.map_or("none".to_string(), |v| v.to_string());
    writeln!(
        out,
        "{:<W$}bos {}{}, eos {:?}, pad {}, chat template {}, {} special tokens",
        "",
        opt(t.bos_token_id),
        if t.add_bos { " (prepended)" } else { "" },
        t.eos_token_ids,
        opt(t.pad_token_id),
        t.chat_template
            .as_ref()
            .map_or("none".into(), |c| format!("yes ({} chars)", c.len())),
        t.special_tokens.len(),
    )?;

    // Quantization.
    let q = &h.quantization;
    let excluded = if q.excluded_layers.is_empty() {
        "none".to_string()
    } else {
        q.excluded_layers
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    writeln!(
        out,
        "{:<W$}profile {}, group size {}, excluded layers {excluded}",
        "quantization", q.profile, q.group_size
    )?;

    // Provenance.
    let p = &h.provenance;
    let created = if p.created.is_empty() {
        String::new()
    } else {
        format!(", created {}", p.created)
    };
    writeln!(
        out,
        "{:<W$}converter {}{created}",
        "provenance", p.converter_version
    )?;
    let name_w = p
        .source_files
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0);
    for s in &p.source_files {
        let sha: String = s.sha256.chars().take(16).collect();
        writeln!(
            out,
            "{:<W$}{:<name_w$}  {:>10}  sha256 {sha}…",
            "",
            s.name,
            human(s.bytes)
        )?;
    }

    // Fidelity.
    match &h.fidelity {
        Some(serde_json::Value::Object(m)) => {
            let parts: Vec<String> = m
                .iter()
                .filter(|(k, _)| k.as_str() != "auto")
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            writeln!(out, "{:<W$}{}", "fidelity", parts.join(", "))?;
            if let Some(a) = m.get("auto") {
                for (i, line) in super::convert_auto::describe(a).iter().enumerate() {
                    writeln!(out, "{:<W$}{line}", if i == 0 { "auto plan" } else { "" })?;
                }
            }
        }
        Some(other) => writeln!(out, "{:<W$}{other}", "fidelity")?,
        None => writeln!(out, "{:<W$}not measured", "fidelity")?,
    }

    print_tensor_table(out, file.tensors())?;
    print_breakdowns(out, file)
}

fn print_tensor_table(out: &mut impl Write, tensors: &[TensorEntry]) -> std::io::Result<()> {
    writeln!(out, "\ntensors ({})", tensors.len())?;
    let shapes: Vec<String> = tensors.iter().map(|e| format!("{:?}", e.shape)).collect();
    let dtypes: Vec<String> = tensors
        .iter()
        .map(|e| {
            if e.dtype.is_quantized() {
                format!("{}/g{}", e.dtype, e.group_size)
            } else {
                e.dtype.to_string()
            }
        })
        .collect();
    let name_w = tensors
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let dtype_w = dtypes.iter().map(|d| d.len()).max().unwrap_or(0).max(5);
    let shape_w = shapes.iter().map(|s| s.len()).max().unwrap_or(0).max(5);
    writeln!(
        out,
        "  {:<name_w$}  {:<dtype_w$}  {:<shape_w$}  {:>10}",
        "name", "dtype", "shape", "bytes"
    )?;
    for ((e, d), s) in tensors.iter().zip(&dtypes).zip(&shapes) {
        writeln!(
            out,
            "  {:<name_w$}  {d:<dtype_w$}  {s:<shape_w$}  {:>10}",
            e.name,
            human(e.byte_len)
        )?;
    }
    Ok(())
}

fn print_breakdowns(out: &mut impl Write, file: &CellmFile) -> std::io::Result<()> {
    let tensors = file.tensors();
    let total: u64 = tensors.iter().map(|e| e.byte_len).sum();
    let mut by_component: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    let mut by_dtype: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for e in tensors {
        let c = by_component.entry(e.component()).or_default();
        c.0 += 1;
        c.1 += e.byte_len;
        let d = by_dtype.entry(e.dtype.to_string()).or_default();
        d.0 += 1;
        d.1 += e.byte_len;
    }
    let pct = |b: u64| {
        if total == 0 {
            0.0
        } else {
            100.0 * b as f64 / total as f64
        }
    };
    for (title, rows) in [
        ("component", sorted_rows(&by_component)),
        ("dtype", sorted_rows(&by_dtype)),
    ] {
        writeln!(
            out,
            "\n  {title:<12}{:>8}  {:>10}  {:>6}",
            "tensors", "bytes", "share"
        )?;
        for (k, (n, b)) in rows {
            writeln!(out, "  {k:<12}{n:>8}  {:>10}  {:>5.1}%", human(b), pct(b))?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<W$}{} in {} tensors; file {} (header and padding {})",
        "total",
        human(total),
        tensors.len(),
        human(file.file_len()),
        human(file.file_len().saturating_sub(total))
    )
}

fn sorted_rows<K: AsRef<str>>(m: &BTreeMap<K, (usize, u64)>) -> Vec<(String, (usize, u64))> {
    let mut rows: Vec<_> = m
        .iter()
        .map(|(k, v)| (k.as_ref().to_string(), *v))
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1.1));
    rows
}

/// 1536 -> "1.50 KiB".
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// Number of elements of a JSON array or object, counted without building it.
#[derive(Default)]
struct Count(usize);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON array or object")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Count, A::Error> {
                let mut n = 0;
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(Count(n))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Count, A::Error> {
                let mut n = 0;
                while a
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {
                    n += 1;
                }
                Ok(Count(n))
            }
        }
        d.deserialize_any(V)
    }
}

/// (model type, vocab entries, added tokens) of a tokenizer.json, without materializing it.
fn tokenizer_counts(json: &str) -> Option<(String, usize, usize)> {
    #[derive(Deserialize)]
    struct Tok {
        model: Model,
        #[serde(default)]
        added_tokens: Count,
    }
    #[derive(Deserialize)]
    struct Model {
        #[serde(rename = "type")]
        kind: Option<String>,
        #[serde(default)]
        vocab: Count,
    }
    let t: Tok = serde_json::from_str(json).ok()?;
    Some((
        t.model.kind.unwrap_or_else(|| "?".into()),
        t.model.vocab.0,
        t.added_tokens.0,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.50 KiB");
        assert_eq!(human(3 << 30), "3.00 GiB");
    }

    #[test]
    fn counts_vocab_without_parsing_it() {
        let unigram = r#"{"added_tokens":[{"id":0},{"id":1}],"model":{"type":"Unigram","vocab":[["a",0.0],["b",-1.0],["c",-2.0]]}}"#;
        assert_eq!(tokenizer_counts(unigram), Some(("Unigram".into(), 3, 2)));
        let bpe = r#"{"model":{"type":"BPE","vocab":{"a":0,"b":1}}}"#;
        assert_eq!(tokenizer_counts(bpe), Some(("BPE".into(), 2, 0)));
        assert_eq!(tokenizer_counts(""), None);
    }

    fn sample_file(dir: &std::path::Path) -> std::path::PathBuf {
        use cellm_engine::format::{CellmWriter, QuantizationInfo, TensorPlan};
        use cellm_engine::tensor::DType;
        let header = Header {
            family: "gemma4".into(),
            config: serde_json::json!({"text_config": {"num_hidden_layers": 35,
                "hidden_size": 1536, "vocab_size": 262144}, "vision_config": {}}),
            tokenizer: Default::default(),
            quantization: QuantizationInfo {
                profile: "int4".into(),
                group_size: 32,
                excluded_layers: vec![0, 1],
            },
            provenance: Default::default(),
            fidelity: Some(serde_json::json!({"kl_mean": 0.25})),
            tensors: vec![],
        };
        let plan = vec![
            TensorPlan {
                name: "model.language_model.embed_tokens.weight".into(),
                dtype: DType::Q4,
                shape: vec![2, 64],
                group_size: 32,
            },
            TensorPlan {
                name: "model.vision_tower.w".into(),
                dtype: DType::F16,
                shape: vec![3],
                group_size: 0,
            },
        ];
        let path = dir.join("m.cellm");
        let mut w = CellmWriter::create(&path, header, plan).unwrap();
        w.write_tensor("model.language_model.embed_tokens.weight", &[0; 72])
            .unwrap();
        w.write_tensor("model.vision_tower.w", &[0; 6]).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn report_shows_summary_table_and_breakdowns() {
        let dir = tempfile::tempdir().unwrap();
        let file = CellmFile::open(sample_file(dir.path())).unwrap();
        let args = Args {
            model: file.path().to_path_buf(),
            verify: true,
            json: false,
        };
        let mut out = Vec::new();
        assert!(report(&mut out, &file, &args).is_ok());
        let text = String::from_utf8(out).unwrap();
        for needle in [
            "layers 35, hidden 1536, vocab 262144",
            "towers        vision",
            "profile int4, group size 32, excluded layers 0,1",
            "kl_mean 0.25",
            "q4/g32",
            "[2, 64]",
            "embeddings",
            "checksums: all 2 tensors OK",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }

        let mut out = Vec::new();
        print_json(&mut out, file.header()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["tokenizer"]["tokenizer_json"], 0);
        assert_eq!(v["tensors"][1]["name"], "model.vision_tower.w");
    }
}
