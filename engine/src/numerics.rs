//! Numerics guard: when a forward pass yields NaN or infinite logits, generation stops with an
//! error that names where the bad values first appeared. Finding the layer costs nothing on the
//! hot path: only after a bad logit is seen, the tokens are run again through the CPU text stack
//! with an observer that checks every layer's inputs.

use crate::format::CellmFile;
use crate::kv_cache::{KvCache, KvPrecision};
use crate::models::common::{ActivationObserver, Tap};
use crate::models::{self, Logits, TextModel, gemma3, gemma4};
use std::sync::{Arc, Mutex};

/// The first (layer, tap) whose input held a non-finite value.
type FirstBad = Arc<Mutex<Option<(usize, Tap)>>>;

struct Finder(FirstBad);

impl ActivationObserver for Finder {
    fn observe(&mut self, layer: usize, tap: Tap, x: &[f32], _rows: usize) {
        if let Ok(mut first) = self.0.lock()
            && first.is_none()
            && x.iter().any(|v| !v.is_finite())
        {
            *first = Some((layer, tap));
        }
    }
}

/// Describes where `tokens` (run from position 0, text only) first produce a non-finite value:
/// "the input of decoder layer 3's MLP", "the final norm or the LM head", or why it could not
/// tell.
pub fn locate_non_finite(file: &CellmFile, tokens: &[u32]) -> String {
    let first: FirstBad = Arc::new(Mutex::new(None));
    let run = |model: &mut dyn TextModel| -> Result<bool, models::ModelError> {
        let cfg = model.config();
        let mut cache = KvCache::new(
            cfg,
            tokens.len().max(1),
            models::chunk_size(cfg),
            KvPrecision::F32,
        );
        let logits = model.forward(tokens, None, 0, &mut cache, Logits::Last)?;
        Ok(logits.iter().any(|v| !v.is_finite()))
    };
    let observer = Box::new(Finder(first.clone()));
    let result = match file.header().family.as_str() {
        "gemma3" | "gemma3_text" => gemma3::Model::new(file).and_then(|mut m| {
            m.set_observer(Some(observer));
            run(&mut m)
        }),
        "gemma4" | "gemma4_text" => gemma4::Model::new(file).and_then(|mut m| {
            m.set_observer(Some(observer));
            run(&mut m)
        }),
        other => return format!("no per-layer check for family '{other}'"),
    };
    let found = first.lock().ok().and_then(|f| *f);
    match (result, found) {
        (_, Some((layer, tap))) => {
            let at = match tap {
                Tap::AttnInput => "attention input (after input_layernorm)",
                Tap::MlpInput => "MLP input (after pre_feedforward_layernorm)",
                Tap::DownInput => "MLP down-projection input",
            };
            if layer == 0 && tap == Tap::AttnInput {
                format!("first non-finite values: decoder layer 0's {at}; check the embeddings")
            } else {
                format!("first non-finite values: decoder layer {layer}'s {at}")
            }
        }
        (Ok(true), None) => "first non-finite values: after the last decoder layer (final norm \
                             or LM head)"
            .into(),
        (Ok(false), None) => "the CPU re-run of the text was finite (the GPU backend or the \
                              media inputs produced the bad values)"
            .into(),
        (Err(e), None) => format!("the per-layer check failed: {e}"),
    }
}
