//! Text <-> token ids through the `tokenizers` crate, plus a builder that turns a GGUF
//! SentencePiece vocabulary into an equivalent Hugging Face `tokenizer.json`.

use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer: {0}")]
    Tokenizers(String),
    #[error("invalid vocabulary: {0}")]
    InvalidVocab(String),
}

fn tk_err(e: tokenizers::Error) -> TokenizerError {
    TokenizerError::Tokenizers(e.to_string())
}

thread_local! {
    /// Set while [`guarded`] runs a tokenizer call on this thread: its panic is reported as an
    /// error, so the panic hook stays quiet.
    static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs a call into the `tokenizers` crate, turning a panic (a pre-tokenizer regex that
/// exceeds onig's retry limit, say) into an error: a hostile tokenizer.json must not take the
/// process, or the app's worker thread, down.
fn guarded<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, TokenizerError>,
) -> Result<T, TokenizerError> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(|g| g.get()) {
                previous(info);
            }
        }));
    });
    let was = GUARDED.with(|g| g.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(was));
    result.unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown failure".into());
        Err(TokenizerError::Tokenizers(format!(
            "{what} failed inside the tokenizer: {msg}"
        )))
    })
}

/// A loaded tokenizer (a Hugging Face `tokenizer.json`).
pub struct Tokenizer {
    inner: Inner,
    bos_id: Option<u32>,
    special: HashSet<u32>,
    /// Finds the special tokens' spellings in text that must stay plain (built on first use).
    special_finder: std::sync::OnceLock<Option<aho_corasick::AhoCorasick>>,
}

/// Gemma's byte-fallback BPE in compact tables when the file has that shape (the same ids and
/// text in a quarter of the memory, see `tokenizer_bpe`), else the `tokenizers` crate.
enum Inner {
    Compact(Box<crate::tokenizer_bpe::CompactBpe>),
    Hf(Box<tokenizers::Tokenizer>),
}

impl Tokenizer {
    pub fn from_json(json: &str) -> Result<Self, TokenizerError> {
        if let Some(c) = crate::tokenizer_bpe::CompactBpe::from_json(json) {
            let bos_id = c.token_to_id("<bos>");
            let special = c.special_ids().iter().copied().collect();
            return Ok(Self {
                inner: Inner::Compact(Box::new(c)),
                bos_id,
                special,
                special_finder: std::sync::OnceLock::new(),
            });
        }
        Self::from_json_with_tokenizers(json)
    }

    /// [`Tokenizer::from_json`] through the `tokenizers` crate whatever the file's shape (the
    /// reference the compact form is tested against).
    pub fn from_json_with_tokenizers(json: &str) -> Result<Self, TokenizerError> {
        let inner = guarded("loading", || {
            match crate::tokenizer_load::bpe_tokenizer(json) {
                Ok(t) => Ok(t),
                Err(crate::tokenizer_load::Fallback::Invalid(why)) => {
                    Err(TokenizerError::Tokenizers(why))
                }
                Err(crate::tokenizer_load::Fallback::NotBpe) => json.parse().map_err(tk_err),
            }
        })?;
        let bos_id = inner.token_to_id("<bos>");
        let special = inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        Ok(Self {
            inner: Inner::Hf(Box::new(inner)),
            bos_id,
            special,
            special_finder: std::sync::OnceLock::new(),
        })
    }

    /// Whether the compact tables (rather than the `tokenizers` crate) serve this file.
    pub fn is_compact(&self) -> bool {
        matches!(self.inner, Inner::Compact(_))
    }

    /// Bytes of the compact tables; `None` for the `tokenizers` crate, which does not say.
    pub fn heap_bytes(&self) -> Option<usize> {
        match &self.inner {
            Inner::Compact(c) => Some(c.heap_bytes()),
            Inner::Hf(_) => None,
        }
    }

    fn special_finder(&self) -> Option<&aho_corasick::AhoCorasick> {
        self.special_finder
            .get_or_init(|| {
                let words: Vec<String> = self
                    .special
                    .iter()
                    .filter_map(|&id| self.token(id))
                    .filter(|t| !t.is_empty())
                    .collect();
                aho_corasick::AhoCorasick::builder()
                    .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                    .build(words)
                    .ok()
            })
            .as_ref()
    }

    /// Whether `text` spells a special token (like `<end_of_turn>`) somewhere.
    pub fn contains_special(&self, text: &str) -> bool {
        self.special_finder().is_some_and(|f| f.is_match(text))
    }

    /// Encodes `text` as plain text: a special token's spelling in it (typed or pasted by the
    /// user, a file name, tool output) becomes ordinary pieces, never the control token. Text
    /// without such spellings encodes exactly as [`Tokenizer::encode`] does.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let Some(finder) = self.special_finder().filter(|f| f.is_match(text)) else {
            return self.encode(text, false);
        };
        let mut ids = Vec::new();
        let mut push = |piece: &str| -> Result<(), TokenizerError> {
            if !piece.is_empty() {
                ids.extend(self.encode(piece, false)?);
            }
            Ok(())
        };
        let mut at = 0;
        for m in finder.find_iter(text) {
            push(&text[at..m.start()])?;
            // Split the spelling after its first character: neither half spells a special
            // token, so each half encodes to ordinary pieces.
            let word = &text[m.start()..m.end()];
            let cut = word.chars().next().map_or(0, char::len_utf8);
            push(&word[..cut])?;
            push(&word[cut..])?;
            at = m.end();
        }
        push(&text[at..])?;
        if let Some(&bad) = ids.iter().find(|&&id| self.is_special(id)) {
            return Err(TokenizerError::Tokenizers(format!(
                "plain text encoded to the control token {bad}"
            )));
        }
        Ok(ids)
    }

    /// The id `encode(.., add_bos = true)` prepends (`<bos>` when the vocabulary has it).
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    pub fn set_bos_id(&mut self, id: Option<u32>) {
        self.bos_id = id;
    }

    /// Special-token strings in `text` (like `<start_of_turn>`) map to their ids. BOS is added
    /// here rather than by the file's post-processor, so the flag means the same for every file.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::new();
        if add_bos && let Some(bos) = self.bos_id {
            ids.push(bos);
        }
        match &self.inner {
            Inner::Compact(c) => ids.extend(c.encode(text)),
            Inner::Hf(t) => {
                let enc = guarded("encoding", || t.encode(text, false).map_err(tk_err))?;
                ids.extend_from_slice(enc.get_ids());
            }
        }
        Ok(ids)
    }

    fn decode_with(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        match &self.inner {
            Inner::Compact(c) => Ok(c.decode(ids, skip_special)),
            Inner::Hf(t) => guarded("decoding", || t.decode(ids, skip_special).map_err(tk_err)),
        }
    }

    /// Decodes every id, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.decode_with(ids, false)
    }

    /// Decodes, leaving out special tokens (`<bos>`, `<end_of_turn>`, ..).
    pub fn decode_skip_special(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.decode_with(ids, true)
    }

    /// Whether `id` is a special (control) token, like `<start_of_turn>` or `<|image|>`.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.contains(&id)
    }

    pub fn vocab_size(&self) -> usize {
        match &self.inner {
            Inner::Compact(c) => c.vocab_size(),
            Inner::Hf(t) => t.get_vocab_size(true),
        }
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        match &self.inner {
            Inner::Compact(c) => c.token_to_id(token),
            Inner::Hf(t) => t.token_to_id(token),
        }
    }

    /// The vocabulary entry for `id` (as stored, e.g. `▁the` or `<0x0A>`).
    pub fn token(&self, id: u32) -> Option<String> {
        match &self.inner {
            Inner::Compact(c) => c.id_to_token(id).map(str::to_string),
            Inner::Hf(t) => t.id_to_token(id),
        }
    }

    pub fn stream(&self) -> StreamDecoder<'_> {
        StreamDecoder {
            tok: self,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }
}

/// Incremental decoder: push ids as they are generated, get text as soon as it is final.
///
/// Each step decodes the previous piece together with the new ids and emits the difference (the
/// text-generation-inference scheme), so decoders that treat the start of a text specially (a
/// `Strip` of the leading space) still join pieces correctly. Text is held back while it ends in
/// byte-fallback pieces that do not yet form a whole UTF-8 character.
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    ids: Vec<u32>,
    /// Start of the context piece (already emitted) that is decoded along with the new ids.
    prefix: usize,
    /// End of what has been emitted.
    read: usize,
}

/// A UTF-8 character is at most 4 bytes; more held-back ids than this are invalid text anyway.
const MAX_PENDING: usize = 8;

impl StreamDecoder<'_> {
    pub fn push(&mut self, id: u32) -> Option<String> {
        self.ids.push(id);
        let may_wait = self.ids.len() - self.read < MAX_PENDING;
        self.emit(may_wait)
    }

    /// Whatever is still held back (an unfinished byte sequence decodes to U+FFFD).
    pub fn finish(&mut self) -> Option<String> {
        if self.read == self.ids.len() {
            return None;
        }
        self.emit(false)
    }

    fn emit(&mut self, may_wait: bool) -> Option<String> {
        let before = self.tok.decode(&self.ids[self.prefix..self.read]).ok()?;
        let now = self.tok.decode(&self.ids[self.prefix..]).ok()?;
        if may_wait && now.ends_with('\u{FFFD}') {
            return None;
        }
        let new = match now.strip_prefix(before.as_str()) {
            Some(rest) => rest.to_string(),
            // A decoder that rewrote the context piece: fall back to the new ids alone.
            None => self.tok.decode(&self.ids[self.read..]).ok()?,
        };
        // Keep the ids bounded: the next context is just the piece emitted now.
        self.prefix = self.read;
        self.read = self.ids.len();
        if self.prefix > 4096 {
            self.ids.drain(..self.prefix);
            self.read -= self.prefix;
            self.prefix = 0;
        }
        (!new.is_empty()).then_some(new)
    }
}

/// A GGUF SentencePiece ("llama") vocabulary.
#[derive(Clone, Debug, Default)]
pub struct SpmVocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub token_types: Vec<i32>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub unk_id: Option<u32>,
    pub pad_id: Option<u32>,
    pub add_bos: bool,
    pub add_space_prefix: bool,
}

/// GGUF token types (llama.cpp `llama_token_type`).
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;

/// Python's `str.isspace` (what transformers tests with `not t.strip()`): Unicode White_Space plus
/// the four ASCII separators U+001C..U+001F.
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// transformers' `gemma_tokenizer` fix: a token made only of whitespace that contains a space is
/// stored with real spaces in the GGUF but looked up as "▁"s.
fn respell(token: &str) -> String {
    if token.contains(' ') && token.chars().all(py_isspace) {
        "\u{2581}".repeat(token.chars().count())
    } else {
        token.to_string()
    }
}

/// The merges transformers' `generate_merges` derives for a Gemma GGUF (no merges stored): every
/// split of a token into two vocabulary pieces, ordered by the token's position in the file, then
/// by the longer left piece first. (`generate_merges` sorts by (-position, len(left), len(right))
/// descending; within one token len(left) alone decides.) transformers ignores Gemma's scores
/// here because they do not follow the merge order; so does this.
fn derive_merges<'a>(vocab: &HashMap<&'a str, u32>) -> Vec<(&'a str, &'a str)> {
    // Python dicts keep the last index for a repeated key; order by that index.
    let mut order: Vec<(u32, &str)> = vocab.iter().map(|(t, &i)| (i, *t)).collect();
    order.sort_unstable();
    // Both pieces of a split are vocabulary entries, so only splits whose two byte lengths are
    // lengths some entry has can match: for a long token (a hostile 2 MB one, say) trying those
    // few is linear in its length where trying every split would be quadratic.
    let mut lengths: Vec<usize> = vocab.keys().map(|t| t.len()).collect();
    lengths.sort_unstable();
    lengths.dedup();
    let has_len: HashSet<usize> = lengths.iter().copied().collect();
    let mut merges = Vec::new();
    let mut bounds = Vec::new();
    for (_, token) in order {
        bounds.clear();
        let n = token.len();
        let chars = token.chars().count();
        if chars <= lengths.len() {
            bounds.extend(token.char_indices().map(|(i, _)| i).skip(1));
        } else {
            bounds.extend(
                lengths
                    .iter()
                    .copied()
                    .filter(|&b| b > 0 && b < n && token.is_char_boundary(b))
                    .filter(|&b| has_len.contains(&(n - b))),
            );
        }
        for &b in bounds.iter().rev() {
            let (l, r) = token.split_at(b);
            if vocab.contains_key(l) && vocab.contains_key(r) {
                merges.push((l, r));
            }
        }
    }
    merges
}

fn added_token(id: u32, content: &str, special: bool) -> Value {
    json!({
        "id": id,
        "content": content,
        "single_word": false,
        "lstrip": false,
        "rstrip": false,
        "normalized": false,
        "special": special,
    })
}

/// A Hugging Face tokenizer.json equivalent to llama.cpp's SPM tokenizer for a GGUF vocabulary.
///
/// Mirrors what transformers builds for a Gemma GGUF (`gemma_tokenizer` +
/// `add_gguf_special_tokens`): a byte-fallback BPE over the vocabulary with merges derived from the
/// file order, a normalizer turning " " into "▁", control tokens as special added tokens and
/// user-defined ones as plain added tokens, all matched whole in the text. With `add_bos` the file's
/// post-processor prepends BOS, as transformers' does ([`Tokenizer::encode`] adds BOS itself).
pub fn spm_tokenizer_json(vocab: &SpmVocab) -> Result<String, TokenizerError> {
    let n = vocab.tokens.len();
    if n == 0 {
        return Err(TokenizerError::InvalidVocab("no tokens".into()));
    }
    if !vocab.token_types.is_empty() && vocab.token_types.len() != n {
        return Err(TokenizerError::InvalidVocab(format!(
            "{} token types for {n} tokens",
            vocab.token_types.len()
        )));
    }
    let n_u32 =
        u32::try_from(n).map_err(|_| TokenizerError::InvalidVocab("too many tokens".into()))?;
    for (name, id) in [
        ("bos", vocab.bos_id),
        ("eos", vocab.eos_id),
        ("unk", vocab.unk_id),
        ("pad", vocab.pad_id),
    ] {
        if let Some(id) = id
            && id >= n_u32
        {
            return Err(TokenizerError::InvalidVocab(format!(
                "{name} id {id} outside the vocabulary of {n}"
            )));
        }
    }

    let respelled: Vec<String> = vocab.tokens.iter().map(|t| respell(t)).collect();
    let mut ids: HashMap<&str, u32> = HashMap::with_capacity(n);
    for (i, t) in respelled.iter().enumerate() {
        ids.insert(t.as_str(), i as u32);
    }
    let merges = derive_merges(&ids);

    // Added tokens: control ones (plus the named specials) are special, user-defined ones are
    // plain; both keep the file's original spelling and are matched before normalization.
    let ty = |i: usize| vocab.token_types.get(i).copied().unwrap_or(1);
    let mut added: Vec<(u32, &str, bool)> = Vec::new();
    let mut special_ids: Vec<u32> = (0..n)
        .filter(|&i| ty(i) == TYPE_CONTROL)
        .map(|i| i as u32)
        .collect();
    special_ids.extend(
        [vocab.bos_id, vocab.eos_id, vocab.unk_id, vocab.pad_id]
            .into_iter()
            .flatten(),
    );
    special_ids.sort_unstable();
    special_ids.dedup();
    for &i in &special_ids {
        let content = vocab.tokens[i as usize].as_str();
        // An added token takes the vocabulary id of its content (the last one for a repeat).
        let id = ids.get(content).copied().unwrap_or(i);
        added.push((id, content, true));
    }
    for i in (0..n).filter(|&i| ty(i) == TYPE_USER_DEFINED) {
        let content = vocab.tokens[i].as_str();
        if let Some(&id) = ids.get(content)
            && !special_ids.contains(&(i as u32))
        {
            added.push((id, content, false));
        }
    }
    added.sort_by_key(|a| a.0);
    added.dedup_by(|a, b| a.1 == b.1);

    let unk = vocab
        .unk_id
        .map(|i| respelled[i as usize].clone())
        .unwrap_or_else(|| "<unk>".to_string());

    let mut vocab_map = Map::with_capacity(ids.len());
    for (t, &i) in &ids {
        vocab_map.insert((*t).to_string(), json!(i));
    }
    let merges_json: Vec<Value> = merges.iter().map(|(l, r)| json!([l, r])).collect();

    let replace_space =
        json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
    let normalizer = if vocab.add_space_prefix {
        json!({"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u{2581}"},
            replace_space,
        ]})
    } else {
        replace_space
    };

    // The same BOS template transformers writes; `Tokenizer::encode` does not use it (it adds BOS
    // itself) but other consumers of the embedded file get transformers' behaviour.
    let post_processor = match vocab.bos_id.filter(|_| vocab.add_bos) {
        Some(bos) => {
            let t = vocab.tokens[bos as usize].as_str();
            json!({
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [
                    {"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                    {"SpecialToken": {"id": t, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}},
                ],
                "special_tokens": {t: {"id": t, "ids": [bos], "tokens": [t]}},
            })
        }
        None => Value::Null,
    };

    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added.iter().map(|(id, c, s)| added_token(*id, c, *s)).collect::<Vec<_>>(),
        "normalizer": normalizer,
        "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false},
        "post_processor": post_processor,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
        ]},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": unk,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": true,
            "byte_fallback": true,
            "ignore_merges": false,
            "vocab": Value::Object(vocab_map),
            "merges": merges_json,
        },
    });
    serde_json::to_string(&doc).map_err(|e| TokenizerError::InvalidVocab(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn tiny() -> Tokenizer {
        let p =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/tiny-gemma3/tokenizer.json");
        Tokenizer::from_json(&std::fs::read_to_string(p).expect("tiny tokenizer.json")).unwrap()
    }

    #[derive(serde::Deserialize)]
    struct Case {
        text: String,
        add_special_tokens: bool,
        ids: Vec<u32>,
        decoded: String,
    }

    #[test]
    fn tokenizer_tiny_json_matches_transformers() {
        let tok = tiny();
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/tiny-gemma3/tokenizer_cases.json");
        let cases: Vec<Case> = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        for c in cases {
            assert_eq!(
                tok.encode(&c.text, c.add_special_tokens).unwrap(),
                c.ids,
                "{:?}",
                c.text
            );
            assert_eq!(tok.decode(&c.ids).unwrap(), c.decoded);
        }
        assert_eq!(tok.bos_id(), Some(2));
        assert_eq!(tok.token_id("<start_of_turn>"), Some(5));
        assert_eq!(tok.token(2).as_deref(), Some("<bos>"));
        assert!(tok.is_special(2) && tok.is_special(5) && !tok.is_special(355));
        let ids = tok
            .encode("<start_of_turn>user\nhi<end_of_turn>", true)
            .unwrap();
        assert_eq!(tok.decode_skip_special(&ids).unwrap(), "user\nhi");
    }

    #[test]
    fn tokenizer_stream_waits_for_whole_characters() {
        let tok = tiny();
        let ids = tok.encode("a 🙂 héllo\n日本", false).unwrap();
        let mut s = tok.stream();
        let mut pieces = Vec::new();
        for &id in &ids {
            if let Some(p) = s.push(id) {
                assert!(!p.contains('\u{FFFD}'), "{p:?}");
                pieces.push(p);
            }
        }
        assert!(s.finish().is_none());
        assert_eq!(pieces.concat(), "a 🙂 héllo\n日本");
        // The emoji is four byte pieces: nothing comes out until the last one.
        let emoji = tok.encode("🙂", false).unwrap();
        assert_eq!(emoji.len(), 4);
        let mut s = tok.stream();
        assert_eq!(s.push(emoji[0]), None);
        assert_eq!(s.push(emoji[1]), None);
        assert_eq!(s.push(emoji[2]), None);
        assert_eq!(s.push(emoji[3]).as_deref(), Some("🙂"));
        // An unfinished sequence is flushed by finish().
        let mut s = tok.stream();
        assert_eq!(s.push(emoji[0]), None);
        assert_eq!(s.finish().as_deref(), Some("\u{FFFD}"));
    }

    #[test]
    fn tokenizer_stream_joins_pieces_under_a_stripping_decoder() {
        // A Llama-style decoder strips the leading space of a decoded text: decoding each
        // piece alone would glue words together.
        let p =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/tiny-gemma3/tokenizer.json");
        let mut j: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        j["decoder"]["decoders"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
        let tok = Tokenizer::from_json(&j.to_string()).unwrap();
        let ids = tok.encode("one two  three 🙂 four", false).unwrap();
        let mut s = tok.stream();
        let mut out = String::new();
        for &id in &ids {
            out.extend(s.push(id));
        }
        out.extend(s.finish());
        assert_eq!(out, tok.decode(&ids).unwrap());
        assert_eq!(out, "one two  three 🙂 four");
    }

    #[test]
    fn tokenizer_spm_json_rejects_bad_vocabularies() {
        assert!(spm_tokenizer_json(&SpmVocab::default()).is_err());
        let v = SpmVocab {
            tokens: vec!["<unk>".into(), "a".into()],
            token_types: vec![2],
            ..Default::default()
        };
        assert!(spm_tokenizer_json(&v).is_err());
        let v = SpmVocab {
            tokens: vec!["<unk>".into(), "a".into()],
            bos_id: Some(9),
            ..Default::default()
        };
        assert!(spm_tokenizer_json(&v).is_err());
    }

    #[test]
    fn tokenizer_spm_json_merges_follow_file_order() {
        // "ab" comes before "bc" in the file, so "abc" splits as "ab" + "c".
        let toks = [
            "<unk>", "<bos>", "a", "b", "c", "ab", "bc", "abc", "▁", "  ",
        ];
        let v = SpmVocab {
            tokens: toks.iter().map(|s| s.to_string()).collect(),
            scores: vec![0.0; toks.len()],
            token_types: vec![2, 3, 1, 1, 1, 1, 1, 1, 1, 1],
            bos_id: Some(1),
            unk_id: Some(0),
            add_bos: true,
            ..Default::default()
        };
        let tok = Tokenizer::from_json(&spm_tokenizer_json(&v).unwrap()).unwrap();
        assert_eq!(tok.encode("abc", true).unwrap(), vec![1, 7]);
        assert_eq!(tok.encode("bcab", false).unwrap(), vec![6, 5]);
        // The all-space token is looked up as "▁▁".
        assert_eq!(tok.encode("  ", false).unwrap(), vec![9]);
        assert_eq!(tok.decode(&[9, 2]).unwrap(), "  a");
    }
}
