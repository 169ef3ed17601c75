//! Reading a `tokenizer.json` with a BPE model without the `tokenizers` crate's generic path.
//!
//! `tokenizers`' own deserializer buffers the whole `model` object twice over (an untagged
//! enum, whose serde `Content` copy holds every vocabulary entry and merge as owned strings,
//! then a `serde_json::Value` of the same), and only then builds the BPE. For Gemma's 262144
//! tokens and ~515k merges those copies are a few hundred MB of heap that the allocator keeps
//! after loading (docs/memory.md). Here the vocabulary and merges are read straight into the
//! types [`BpeBuilder`] takes, and the small parts (normalizer, pre-tokenizer, decoder, added
//! tokens) through the crate's own deserializers, then assembled exactly as the crate's
//! `TokenizerVisitor` does. Anything else (another model type, a legacy file without `type`)
//! goes through the crate's generic path.

use serde::Deserialize;
use serde::de::{self, SeqAccess, Visitor};
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::{
    AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PaddingParams,
    PostProcessorWrapper, PreTokenizerWrapper, TokenizerBuilder, TokenizerImpl, TruncationParams,
};

type Impl = TokenizerImpl<
    ModelWrapper,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// A `tokenizer.json` document; unknown keys are ignored, as `tokenizers` does.
#[derive(Deserialize)]
struct Document {
    version: String,
    #[serde(default)]
    truncation: Option<TruncationParams>,
    #[serde(default)]
    padding: Option<PaddingParams>,
    #[serde(default)]
    added_tokens: Vec<AddedTokenWithId>,
    #[serde(default)]
    normalizer: Option<NormalizerWrapper>,
    #[serde(default)]
    pre_tokenizer: Option<PreTokenizerWrapper>,
    #[serde(default)]
    post_processor: Option<PostProcessorWrapper>,
    #[serde(default)]
    decoder: Option<DecoderWrapper>,
    model: BpeModel<Vocab, MergeList>,
}

/// The crate's (private) `AddedTokenWithId`.
#[derive(Deserialize)]
struct AddedTokenWithId {
    id: u32,
    #[serde(flatten)]
    token: AddedToken,
}

/// The fields `tokenizers` reads from a BPE model object, with the vocabulary and merges typed
/// by the reader (this one's crate types, or the compact tokenizer's own in `tokenizer_bpe`).
#[derive(Deserialize)]
pub(crate) struct BpeModel<V, M> {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub dropout: Option<f32>,
    #[serde(default)]
    pub unk_token: Option<String>,
    #[serde(default)]
    pub continuing_subword_prefix: Option<String>,
    #[serde(default)]
    pub end_of_word_suffix: Option<String>,
    #[serde(default)]
    pub fuse_unk: Option<bool>,
    #[serde(default)]
    pub byte_fallback: Option<bool>,
    #[serde(default)]
    pub ignore_merges: Option<bool>,
    pub vocab: V,
    pub merges: M,
}

/// Merges as `[left, right]` pairs or as legacy `"left right"` strings.
struct MergeList(Merges);

impl<'de> Deserialize<'de> for MergeList {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(MergeListVisitor)
    }
}

struct MergeListVisitor;

impl<'de> Visitor<'de> for MergeListVisitor {
    type Value = MergeList;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of merges")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MergeList, A::Error> {
        let mut merges = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        let mut rank = 0usize;
        while let Some(m) = seq.next_element::<Merge>()? {
            match m {
                Merge::Pair(l, r) => merges.push((l, r)),
                // As `convert_merges_to_hashmap`: "#version" lines are skipped, and each other
                // line must be exactly two space-separated parts.
                Merge::Line(line) if line.starts_with("#version") => continue,
                Merge::Line(line) => {
                    let mut parts = line.split(' ');
                    match (parts.next(), parts.next(), parts.next()) {
                        (Some(l), Some(r), None) => merges.push((l.to_string(), r.to_string())),
                        _ => {
                            return Err(de::Error::custom(format!(
                                "Merges text file invalid at line {}",
                                rank + 1
                            )));
                        }
                    }
                }
            }
            rank += 1;
        }
        Ok(MergeList(merges))
    }
}

enum Merge {
    Pair(String, String),
    Line(String),
}

impl<'de> Deserialize<'de> for Merge {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MergeVisitor)
    }
}

struct MergeVisitor;

impl<'de> Visitor<'de> for MergeVisitor {
    type Value = Merge;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a merge: [left, right] or \"left right\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Merge, E> {
        Ok(Merge::Line(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Merge, E> {
        Ok(Merge::Line(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Merge, A::Error> {
        let l: String = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let r: String = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?;
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(3, &self));
        }
        Ok(Merge::Pair(l, r))
    }
}

/// Why the direct path did not apply or failed.
#[derive(Debug)]
pub(crate) enum Fallback {
    /// Not a BPE document this reader knows: let `tokenizers` read it.
    NotBpe,
    /// A BPE document that is invalid (the message says why).
    Invalid(String),
}

/// Builds the tokenizer of a BPE `tokenizer.json`, as `json.parse::<tokenizers::Tokenizer>()`
/// would, without its intermediate copies of the model.
pub(crate) fn bpe_tokenizer(json: &str) -> Result<tokenizers::Tokenizer, Fallback> {
    // A document this reader cannot type (say a Unigram model, whose vocabulary is a list) is
    // left to the crate, which also gives the better error for a broken one.
    let doc: Document = serde_json::from_str(json).map_err(|_| Fallback::NotBpe)?;
    if doc.version != "1.0" {
        return Err(Fallback::Invalid(format!(
            "Unknown tokenizer version '{}'",
            doc.version
        )));
    }
    let m = doc.model;
    if m.kind.as_deref() != Some("BPE") {
        return Err(Fallback::NotBpe);
    }
    // The same builder calls, in the same order, as the crate's BPE deserializer.
    let mut b = BPE::builder();
    if let Some(p) = m.dropout {
        b = b.dropout(p);
    }
    if let Some(u) = m.unk_token {
        b = b.unk_token(u);
    }
    if let Some(p) = m.continuing_subword_prefix {
        b = b.continuing_subword_prefix(p);
    }
    if let Some(s) = m.end_of_word_suffix {
        b = b.end_of_word_suffix(s);
    }
    if let Some(f) = m.fuse_unk {
        b = b.fuse_unk(f);
    }
    if let Some(f) = m.byte_fallback {
        b = b.byte_fallback(f);
    }
    if let Some(f) = m.ignore_merges {
        b = b.ignore_merges(f);
    }
    let bpe = b
        .vocab_and_merges(m.vocab, m.merges.0)
        .build()
        .map_err(|e| Fallback::Invalid(e.to_string()))?;

    let mut tok: Impl = TokenizerBuilder::new()
        .with_truncation(doc.truncation)
        .with_padding(doc.padding)
        .with_normalizer(doc.normalizer)
        .with_pre_tokenizer(doc.pre_tokenizer)
        .with_model(ModelWrapper::BPE(bpe))
        .with_decoder(doc.decoder)
        .with_post_processor(doc.post_processor)
        .build()
        .map_err(|e| Fallback::Invalid(e.to_string()))?;
    for t in &doc.added_tokens {
        if let Some(got) = tok.token_to_id(&t.token.content)
            && got != t.id
        {
            log::warn!(
                "tokenizer: token '{}' was expected to have id {} but was given id {got}",
                t.token.content,
                t.id
            );
        }
    }
    let added: Vec<AddedToken> = doc.added_tokens.into_iter().map(|t| t.token).collect();
    tok.add_tokens(&added);
    Ok(tok.into())
}
