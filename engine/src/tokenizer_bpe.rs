//! A compact byte-fallback BPE for the SentencePiece-style `tokenizer.json` Gemma uses, giving
//! the same ids and text as the `tokenizers` crate with a fraction of its memory.
//!
//! `tokenizers` keeps each of Gemma's 262144 tokens twice as an owned `String` in two hash maps
//! and the ~515k merges in a third: about 60 MB of heap (plus what its loader frees) for what
//! fits in 15 MB as one byte blob with offsets, a `u32` open-addressing index and a sorted merge
//! table. Only one pipeline shape is handled, checked field by field at load: normalizer
//! `Replace(" " -> "▁")` (optionally after `Prepend("▁")`), pre-tokenizer absent or
//! `Split(" ", MergedWithPrevious)` (a no-op once spaces are gone), a BPE without dropout,
//! prefixes or suffixes, decoder `Replace("▁" -> " "), ByteFallback, Fuse`, and added tokens
//! matched whole on the raw text. Any other file goes to `tokenizers` unchanged.
//!
//! The algorithms follow `tokenizers` 0.22 step for step: leftmost-longest matching of added
//! tokens, per-character symbols with byte fallback and fused unknowns, and merges applied by a
//! priority queue on (rank, position).

use aho_corasick::{AhoCorasick, MatchKind};
use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_json::{Value, json};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};

/// Token strings by id in one blob. Ids absent from the vocabulary have `NONE` as their offset.
struct Strings {
    blob: Vec<u8>,
    /// `offs[id]..offs[id + 1]` for present ids; start `NONE` for absent ones.
    offs: Vec<u32>,
}

const NONE: u32 = u32::MAX;

impl Strings {
    fn get(&self, id: u32) -> Option<&str> {
        let i = id as usize;
        let (a, b) = (*self.offs.get(i)?, *self.offs.get(i + 1)?);
        if a == NONE {
            return None;
        }
        // Only ever filled from `&str`s, so always valid UTF-8 on char boundaries.
        std::str::from_utf8(&self.blob[a as usize..self.end(i, b) as usize]).ok()
    }

    /// End of entry `i` whose successor offset is `b` (absent successors borrow the next start).
    fn end(&self, i: usize, b: u32) -> u32 {
        if b != NONE {
            return b;
        }
        self.offs[i + 1..]
            .iter()
            .copied()
            .find(|&o| o != NONE)
            .unwrap_or(self.blob.len() as u32)
    }
}

fn hash(s: &[u8]) -> u64 {
    // FNV-1a: short keys, no adversary (the vocabulary is the model's).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in s {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// String -> id: open addressing with linear probing over `id + 1` (0 is empty).
struct Index {
    slots: Vec<u32>,
}

impl Index {
    fn build(strings: &Strings, ids: impl Iterator<Item = u32> + Clone) -> Self {
        let n = ids.clone().count();
        let size = (2 * n).next_power_of_two().max(16);
        let mut slots = vec![0u32; size];
        let mask = size - 1;
        for id in ids {
            let Some(s) = strings.get(id) else { continue };
            let mut i = hash(s.as_bytes()) as usize & mask;
            while slots[i] != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = id + 1;
        }
        Self { slots }
    }

    fn get(&self, strings: &Strings, s: &str) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut i = hash(s.as_bytes()) as usize & mask;
        loop {
            match self.slots[i] {
                0 => return None,
                v if strings.get(v - 1) == Some(s) => return Some(v - 1),
                _ => i = (i + 1) & mask,
            }
        }
    }
}

/// What the compact tokenizer needs from a `tokenizer.json`; `None` when the file has another
/// shape (then `tokenizers` reads it).
pub(crate) struct CompactBpe {
    strings: Strings,
    index: Index,
    /// Distinct token strings of the vocabulary.
    vocab_len: usize,
    /// `(left << 32 | right, rank << 32 | new_id)`, sorted by key.
    merges: Vec<(u64, u64)>,
    unk: Option<u32>,
    fuse_unk: bool,
    byte_fallback: bool,
    /// Id of `<0xXX>` for each byte.
    bytes: [Option<u32>; 256],
    prepend: bool,
    /// Added tokens matched on the raw text: the matcher and each pattern's id.
    added: Option<(AhoCorasick, Vec<u32>)>,
    /// Content of special added tokens (decoding can skip them).
    special: HashSet<String>,
    special_ids: Vec<u32>,
}

/// The BPE model object as read here: the vocabulary straight into the blob.
struct RawVocab {
    strings: Strings,
    len: usize,
}

impl<'de> Deserialize<'de> for RawVocab {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawVocab;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a vocabulary object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawVocab, A::Error> {
                let mut entries: Vec<(u32, u32, u32)> = Vec::new(); // (id, start, end)
                let mut blob = Vec::new();
                while let Some((k, id)) = map.next_entry::<std::borrow::Cow<'de, str>, u32>()? {
                    let start = blob.len() as u32;
                    blob.extend_from_slice(k.as_bytes());
                    entries.push((id, start, blob.len() as u32));
                }
                let max = entries
                    .iter()
                    .map(|e| e.0)
                    .max()
                    .map_or(0, |m| m as usize + 1);
                let len = entries.len();
                // A repeated key keeps its last id (as a map does); a repeated id its last key.
                let mut starts = vec![NONE; max + 1];
                let mut ends = vec![NONE; max];
                for &(id, s, e) in &entries {
                    starts[id as usize] = s;
                    ends[id as usize] = e;
                }
                drop(entries);
                // Lay the strings out in id order so each end is the next start.
                let mut ordered = Vec::with_capacity(blob.len());
                let mut offs = vec![NONE; max + 1];
                for ((off, &s), &e) in offs.iter_mut().zip(&starts).zip(&ends) {
                    if s != NONE {
                        *off = ordered.len() as u32;
                        ordered.extend_from_slice(&blob[s as usize..e as usize]);
                    }
                }
                offs[max] = ordered.len() as u32;
                Ok(RawVocab {
                    strings: Strings {
                        blob: ordered,
                        offs,
                    },
                    len,
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// Merges as `[left, right]` pairs or `"left right"` lines, kept as text until the vocabulary
/// is known (`\0`-separated pairs, one entry per merge).
struct RawMerges {
    blob: String,
    ends: Vec<u32>,
}

impl<'de> Deserialize<'de> for RawMerges {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawMerges;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of merges")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawMerges, A::Error> {
                let mut m = RawMerges {
                    blob: String::new(),
                    ends: Vec::new(),
                };
                while let Some(e) = seq.next_element::<MergeEntry>()? {
                    match e {
                        MergeEntry::Pair(l, r) => {
                            m.blob.push_str(&l);
                            m.blob.push('\0');
                            m.blob.push_str(&r);
                        }
                        MergeEntry::Line(line) if line.starts_with("#version") => continue,
                        MergeEntry::Line(line) => {
                            let mut parts = line.split(' ');
                            match (parts.next(), parts.next(), parts.next()) {
                                (Some(l), Some(r), None) => {
                                    m.blob.push_str(l);
                                    m.blob.push('\0');
                                    m.blob.push_str(r);
                                }
                                _ => return Err(de::Error::custom("bad merge line")),
                            }
                        }
                    }
                    m.ends.push(m.blob.len() as u32);
                }
                Ok(m)
            }
        }
        d.deserialize_seq(V)
    }
}

enum MergeEntry<'a> {
    Pair(std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>),
    Line(std::borrow::Cow<'a, str>),
}

impl<'de> Deserialize<'de> for MergeEntry<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MergeEntry<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a merge")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MergeEntry::Line(v.into()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MergeEntry::Line(v.to_string().into()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let l: std::borrow::Cow<'de, str> = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let r: std::borrow::Cow<'de, str> = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &self));
                }
                Ok(MergeEntry::Pair(l, r))
            }
        }
        d.deserialize_any(V)
    }
}

/// The model object, with the vocabulary and merges in this reader's own types.
type RawModel = crate::tokenizer_load::BpeModel<RawVocab, RawMerges>;

#[derive(Deserialize)]
struct RawDoc {
    version: String,
    #[serde(default)]
    truncation: Value,
    #[serde(default)]
    padding: Value,
    #[serde(default)]
    added_tokens: Vec<Value>,
    #[serde(default)]
    normalizer: Value,
    #[serde(default)]
    pre_tokenizer: Value,
    #[serde(default)]
    decoder: Value,
    model: RawModel,
}

/// Which normalizer: `Some(prepend)` for the two supported shapes.
fn normalizer_shape(v: &Value) -> Option<bool> {
    let replace = json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
    if *v == replace {
        return Some(false);
    }
    let prepend = json!({"type": "Prepend", "prepend": "\u{2581}"});
    (*v == json!({"type": "Sequence", "normalizers": [prepend, replace]})).then_some(true)
}

fn pre_tokenizer_ok(v: &Value) -> bool {
    v.is_null()
        || *v
            == json!({"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false})
}

fn decoder_ok(v: &Value) -> bool {
    *v == json!({"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
        {"type": "ByteFallback"},
        {"type": "Fuse"},
    ]})
}

impl CompactBpe {
    /// The compact form of `json`, or `None` when the file is not of the handled shape (or is
    /// invalid: `tokenizers` then reports why).
    pub(crate) fn from_json(json: &str) -> Option<Self> {
        let doc: RawDoc = serde_json::from_str(json).ok()?;
        let m = doc.model;
        let plain_bpe = m.kind.as_deref() == Some("BPE")
            && m.dropout.is_none_or(|d| d == 0.0)
            && m.continuing_subword_prefix.is_none()
            && m.end_of_word_suffix.is_none()
            && !m.ignore_merges.unwrap_or(false);
        if doc.version != "1.0"
            || !plain_bpe
            || !doc.truncation.is_null()
            || !doc.padding.is_null()
            || !pre_tokenizer_ok(&doc.pre_tokenizer)
            || !decoder_ok(&doc.decoder)
        {
            return None;
        }
        let prepend = normalizer_shape(&doc.normalizer)?;
        let strings = m.vocab.strings;
        let ids = (0..strings.offs.len() as u32 - 1).filter(|&i| strings.offs[i as usize] != NONE);
        let index = Index::build(&strings, ids);
        let lookup = |s: &str| index.get(&strings, s);

        let mut merges = Vec::with_capacity(m.merges.ends.len());
        let mut start = 0usize;
        for (rank, &end) in m.merges.ends.iter().enumerate() {
            let pair = &m.merges.blob[start..end as usize];
            start = end as usize;
            let (l, r) = pair.split_once('\0')?;
            let (a, b) = (lookup(l)?, lookup(r)?);
            let new = lookup(&format!("{l}{r}"))?;
            merges.push((
                (a as u64) << 32 | b as u64,
                (rank as u64) << 32 | new as u64,
            ));
        }
        drop(m.merges);
        // A repeated pair keeps its last rank, as the crate's map does.
        merges.sort_by_key(|e| e.0);
        let mut deduped: Vec<(u64, u64)> = Vec::with_capacity(merges.len());
        for e in merges {
            match deduped.last_mut() {
                Some(last) if last.0 == e.0 => {
                    if e.1 >> 32 > last.1 >> 32 {
                        *last = e;
                    }
                }
                _ => deduped.push(e),
            }
        }
        deduped.shrink_to_fit();

        let unk = match m.unk_token {
            Some(u) => Some(lookup(&u)?),
            None => None,
        };
        let mut bytes = [None; 256];
        for (b, slot) in bytes.iter_mut().enumerate() {
            *slot = lookup(&format!("<{b:#04X}>"));
        }

        // Added tokens: all matched whole on the raw text, each already in the vocabulary.
        let mut patterns: Vec<String> = Vec::new();
        let mut pattern_ids = Vec::new();
        let mut special = HashSet::new();
        let mut special_ids = Vec::new();
        for t in &doc.added_tokens {
            let content = t.get("content")?.as_str()?;
            let flag = |k: &str| t.get(k).and_then(Value::as_bool);
            if flag("single_word")? || flag("lstrip")? || flag("rstrip")? || flag("normalized")? {
                return None;
            }
            let id = lookup(content)?;
            if patterns.iter().any(|p| p == content) {
                continue; // the crate keeps the first of a repeated content
            }
            if flag("special")? {
                special.insert(content.to_string());
                special_ids.push(id);
            }
            patterns.push(content.to_string());
            pattern_ids.push(id);
        }
        let added = if patterns.is_empty() {
            None
        } else {
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
                .ok()?;
            Some((ac, pattern_ids))
        };
        Some(Self {
            strings,
            index,
            vocab_len: m.vocab.len,
            merges: deduped,
            unk,
            fuse_unk: m.fuse_unk.unwrap_or(false),
            byte_fallback: m.byte_fallback.unwrap_or(false),
            bytes,
            prepend,
            added,
            special,
            special_ids,
        })
    }

    pub(crate) fn token_to_id(&self, s: &str) -> Option<u32> {
        self.index.get(&self.strings, s)
    }

    pub(crate) fn id_to_token(&self, id: u32) -> Option<&str> {
        self.strings.get(id)
    }

    pub(crate) fn vocab_size(&self) -> usize {
        self.vocab_len
    }

    /// Ids of the special added tokens.
    pub(crate) fn special_ids(&self) -> &[u32] {
        &self.special_ids
    }

    /// Bytes of the tables (the small added-token matcher not counted).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.strings.blob.capacity()
            + 4 * self.strings.offs.capacity()
            + 4 * self.index.slots.capacity()
            + 16 * self.merges.capacity()
    }

    fn merge(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        let key = (a as u64) << 32 | b as u64;
        let i = self.merges.binary_search_by_key(&key, |e| e.0).ok()?;
        let v = self.merges[i].1;
        Some(((v >> 32) as u32, v as u32))
    }

    /// Ids of `text`, special-token strings included, as `tokenizers`' `encode(text, false)`.
    pub(crate) fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let mut piece = String::new();
        let mut from = 0;
        if let Some((ac, ids)) = &self.added {
            for m in ac.find_iter(text) {
                self.encode_piece(&text[from..m.start()], &mut piece, &mut out);
                out.push(ids[m.pattern().as_usize()]);
                from = m.end();
            }
        }
        self.encode_piece(&text[from..], &mut piece, &mut out);
        out
    }

    /// Normalizes and encodes text between added tokens.
    fn encode_piece(&self, raw: &str, norm: &mut String, out: &mut Vec<u32>) {
        if raw.is_empty() {
            return;
        }
        norm.clear();
        if self.prepend {
            norm.push('\u{2581}');
        }
        for c in raw.chars() {
            norm.push(if c == ' ' { '\u{2581}' } else { c });
        }
        self.bpe(norm, out);
    }

    /// The crate's `BPE::merge_word` + `Word::merge_all` without dropout.
    fn bpe(&self, w: &str, out: &mut Vec<u32>) {
        let mut syms: Vec<Symbol> = Vec::with_capacity(w.len());
        let add = |syms: &mut Vec<Symbol>, c: u32| {
            let n = syms.len() as isize;
            if let Some(last) = syms.last_mut() {
                last.next = n;
            }
            syms.push(Symbol {
                c,
                prev: n - 1,
                next: -1,
                live: true,
            });
        };
        let mut unk: Option<u32> = None;
        let mut buf = [0u8; 4];
        for ch in w.chars() {
            let s = ch.encode_utf8(&mut buf);
            if let Some(id) = self.token_to_id(s) {
                if let Some(u) = unk.take() {
                    add(&mut syms, u);
                }
                add(&mut syms, id);
                continue;
            }
            if self.byte_fallback {
                let ids: Option<Vec<u32>> = s.bytes().map(|b| self.bytes[b as usize]).collect();
                if let Some(ids) = ids {
                    // The crate adds the bytes before a pending unknown; so does this.
                    for id in ids {
                        add(&mut syms, id);
                    }
                    continue;
                }
            }
            if let Some(u) = self.unk {
                match (unk, self.fuse_unk) {
                    (Some(_), true) => {}
                    (Some(prev), false) => {
                        add(&mut syms, prev);
                        unk = Some(u);
                    }
                    (None, _) => unk = Some(u),
                }
            }
        }
        if let Some(u) = unk {
            add(&mut syms, u);
        }

        let mut queue: BinaryHeap<Merge> = syms
            .windows(2)
            .enumerate()
            .filter_map(|(pos, w)| {
                self.merge(w[0].c, w[1].c)
                    .map(|(rank, new_id)| Merge { pos, rank, new_id })
            })
            .collect();
        while let Some(top) = queue.pop() {
            let cur = syms[top.pos];
            if !cur.live || cur.next == -1 {
                continue;
            }
            let next_pos = cur.next as usize;
            let right = syms[next_pos];
            if self
                .merge(cur.c, right.c)
                .is_none_or(|(_, id)| id != top.new_id)
            {
                continue;
            }
            syms[top.pos].c = top.new_id;
            syms[top.pos].next = right.next;
            syms[next_pos].live = false;
            if right.next > -1 && (right.next as usize) < syms.len() {
                syms[right.next as usize].prev = top.pos as isize;
            }
            let cur = syms[top.pos];
            if cur.prev >= 0 {
                let prev = cur.prev as usize;
                if let Some((rank, new_id)) = self.merge(syms[prev].c, cur.c) {
                    queue.push(Merge {
                        pos: prev,
                        rank,
                        new_id,
                    });
                }
            }
            let next = cur.next as usize;
            if cur.next >= 0
                && next < syms.len()
                && let Some((rank, new_id)) = self.merge(cur.c, syms[next].c)
            {
                queue.push(Merge {
                    pos: top.pos,
                    rank,
                    new_id,
                });
            }
        }
        out.extend(syms.iter().filter(|s| s.live).map(|s| s.c));
    }

    /// Text of `ids` as `tokenizers`' `decode`: unknown ids dropped, special tokens dropped on
    /// request, then "▁" -> " ", `<0xXX>` runs joined into UTF-8 (U+FFFD per byte when invalid).
    pub(crate) fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let mut out = String::new();
        let mut pending: Vec<u8> = Vec::new();
        let flush = |pending: &mut Vec<u8>, out: &mut String| {
            if pending.is_empty() {
                return;
            }
            match std::str::from_utf8(pending) {
                Ok(s) => out.push_str(s),
                Err(_) => (0..pending.len()).for_each(|_| out.push('\u{FFFD}')),
            }
            pending.clear();
        };
        for &id in ids {
            let Some(tok) = self.id_to_token(id) else {
                continue;
            };
            if skip_special && self.special.contains(tok) {
                continue;
            }
            // The Replace decoder runs first: "<0x..>" never contains "▁", so the byte test
            // can look at the stored token.
            let b = tok.as_bytes();
            let byte = (b.len() == 6 && tok.starts_with("<0x") && tok.ends_with('>'))
                .then(|| u8::from_str_radix(&tok[3..5], 16).ok())
                .flatten();
            match byte {
                Some(v) => pending.push(v),
                None => {
                    flush(&mut pending, &mut out);
                    out.push_str(&tok.replace('\u{2581}', " "));
                }
            }
        }
        flush(&mut pending, &mut out);
        out
    }
}

#[derive(Clone, Copy)]
struct Symbol {
    c: u32,
    prev: isize,
    next: isize,
    live: bool,
}

#[derive(PartialEq, Eq)]
struct Merge {
    pos: usize,
    rank: u32,
    new_id: u32,
}

impl Ord for Merge {
    // The crate's order: the lowest rank first, then the leftmost position.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .rank
            .cmp(&self.rank)
            .then_with(|| other.pos.cmp(&self.pos))
    }
}

impl PartialOrd for Merge {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use crate::tokenizer::{SpmVocab, Tokenizer, spm_tokenizer_json};
    use std::path::Path;

    /// Strings from a pool of pieces that exercise spaces, newlines, byte fallback, unknown
    /// characters and added tokens glued to text (a fixed pseudo-random sequence).
    fn texts(pool: &[&str], n: usize) -> Vec<String> {
        let mut s: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        (0..n)
            .map(|_| {
                let len = (next() % 12) as usize;
                (0..len)
                    .map(|_| pool[(next() % pool.len() as u64) as usize])
                    .collect()
            })
            .collect()
    }

    const POOL: &[&str] = &[
        " ",
        "  ",
        "\n",
        "\t",
        "a",
        "b",
        "ab",
        "the",
        " the",
        "hello",
        "héllo",
        "日本",
        "🙂",
        "x",
        "<bos>",
        "<start_of_turn>",
        "<end_of_turn>",
        "<start_of_",
        "▁",
        "\u{2581}\u{2581}",
        "\r\n",
        "0",
        "123",
        ".",
        ",",
        "<0x0A>",
        "\u{0}",
        "ß",
        "Ω",
    ];

    fn assert_same(json: &str, extra: &[&str]) {
        let compact = Tokenizer::from_json(json).unwrap();
        let crate_ = Tokenizer::from_json_with_tokenizers(json).unwrap();
        assert!(compact.is_compact() && !crate_.is_compact());
        assert_eq!(compact.vocab_size(), crate_.vocab_size());
        assert_eq!(compact.bos_id(), crate_.bos_id());
        let mut pool = POOL.to_vec();
        pool.extend_from_slice(extra);
        for t in texts(&pool, 2000) {
            let ids = crate_.encode(&t, false).unwrap();
            assert_eq!(compact.encode(&t, false).unwrap(), ids, "{t:?}");
            assert_eq!(compact.decode(&ids).unwrap(), crate_.decode(&ids).unwrap());
            assert_eq!(
                compact.decode_skip_special(&ids).unwrap(),
                crate_.decode_skip_special(&ids).unwrap()
            );
        }
        // Arbitrary id runs, out-of-range ids and lone byte pieces included.
        let n = compact.vocab_size() as u32 + 3;
        let mut s = 7u32;
        for _ in 0..500 {
            let ids: Vec<u32> = (0..(s % 9))
                .map(|_| {
                    s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (s >> 8) % n
                })
                .collect();
            assert_eq!(compact.decode(&ids).unwrap(), crate_.decode(&ids).unwrap());
            assert_eq!(
                compact.decode_skip_special(&ids).unwrap(),
                crate_.decode_skip_special(&ids).unwrap()
            );
            for &id in &ids {
                assert_eq!(compact.token(id), crate_.token(id));
                assert!(compact.is_special(id) == crate_.is_special(id));
            }
        }
    }

    #[test]
    fn tokenizer_compact_matches_tokenizers_on_tiny_gemma3() {
        let p =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/tiny-gemma3/tokenizer.json");
        assert_same(&std::fs::read_to_string(p).unwrap(), &[]);
    }

    #[test]
    fn tokenizer_compact_matches_tokenizers_on_spm_vocab() {
        // Merge order from the file, an all-space token, a control and a user-defined token,
        // and byte pieces for only some bytes (others fall to <unk>).
        let toks = [
            "<unk>", "<bos>", "a", "b", "c", "ab", "bc", "abc", "▁", "  ", "<ctl>", "<u>",
            "<0x0A>", "<0xC3>", "<0xA9>", "▁a", "▁▁",
        ];
        let mut types = vec![1; toks.len()];
        types[0] = 2;
        types[1] = 3;
        types[10] = 3;
        types[11] = 4;
        for prepend in [false, true] {
            let v = SpmVocab {
                tokens: toks.iter().map(|s| s.to_string()).collect(),
                scores: vec![0.0; toks.len()],
                token_types: types.clone(),
                bos_id: Some(1),
                unk_id: Some(0),
                add_bos: true,
                add_space_prefix: prepend,
                ..Default::default()
            };
            let json = spm_tokenizer_json(&v).unwrap();
            assert_same(&json, &["abc", "bcab", "<ctl>", "<u>", "é", "c a", "\n\n"]);
        }
    }

    #[test]
    fn tokenizer_other_shapes_use_the_tokenizers_crate() {
        let p =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/tiny-gemma3/tokenizer.json");
        let mut j: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        j["decoder"]["decoders"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
        let tok = Tokenizer::from_json(&j.to_string()).unwrap();
        assert!(!tok.is_compact());
        assert!(Tokenizer::from_json("{\"version\": \"1.0\"}").is_err());
        assert!(Tokenizer::from_json("not json").is_err());
    }
}
