//! Text <-> token ids through the `tokenizers` crate, plus a builder that turns a GGUF
//! SentencePiece vocabulary into an equivalent Hugging Face `tokenizer.json`.

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer: {0}")]
    Tokenizers(String),
    #[error("invalid vocabulary: {0}")]
    InvalidVocab(String),
}

/// A loaded tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    pub fn from_json(json: &str) -> Result<Self, TokenizerError> {
        let inner: tokenizers::Tokenizer = json
            .parse()
            .map_err(|e: tokenizers::Error| TokenizerError::Tokenizers(e.to_string()))?;
        Ok(Self { inner })
    }

    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode(text, add_bos)
            .map_err(|e| TokenizerError::Tokenizers(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| TokenizerError::Tokenizers(e.to_string()))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn stream(&self) -> StreamDecoder<'_> {
        StreamDecoder {
            tok: self,
            ids: Vec::new(),
            emitted: 0,
        }
    }
}

/// Incremental decoder: push ids, get text once it is final.
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    ids: Vec<u32>,
    emitted: usize,
}

impl StreamDecoder<'_> {
    pub fn push(&mut self, id: u32) -> Option<String> {
        self.ids.push(id);
        let text = self.tok.decode(&self.ids).ok()?;
        if text.ends_with('\u{FFFD}') || text.len() <= self.emitted {
            return None;
        }
        let new = text.get(self.emitted..)?.to_string();
        self.emitted = text.len();
        Some(new)
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

/// A Hugging Face tokenizer.json equivalent to llama.cpp's SPM tokenizer for a GGUF vocabulary.
pub fn spm_tokenizer_json(vocab: &SpmVocab) -> Result<String, TokenizerError> {
    let _ = vocab;
    Err(TokenizerError::InvalidVocab("not yet implemented".into()))
}
