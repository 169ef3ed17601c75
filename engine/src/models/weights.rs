//! Named access to a `.cellm` file's tensors with a module-path prefix, the way candle's
//! `VarBuilder` is used: `w.pp("self_attn").linear("q_proj", out, in)`.

use super::ModelError;
use crate::format::CellmFile;
use crate::tensor::{DType, TensorError, TensorView};
use std::collections::HashMap;

/// In-memory tensors that replace a file's tensors of the same full name when a model is built
/// (see [`super::load_model_with`]): evaluating a quantization choice without writing a file.
#[derive(Default)]
pub struct TensorOverrides {
    map: HashMap<String, OwnedTensor>,
}

/// Encoded bytes kept in `u64` words so that every dtype's element alignment holds.
struct OwnedTensor {
    dtype: DType,
    shape: Vec<usize>,
    group_size: usize,
    words: Vec<u64>,
    len: usize,
}

impl OwnedTensor {
    fn view(&self) -> Result<TensorView<'_>, TensorError> {
        let bytes = &bytemuck::cast_slice::<u64, u8>(&self.words)[..self.len];
        TensorView::new(self.dtype, &self.shape, self.group_size, bytes)
    }
}

impl TensorOverrides {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) tensor `name` (the full name, as in the file) with `bytes` in the
    /// layout of `dtype`; the layout is checked here.
    pub fn insert(
        &mut self,
        name: impl Into<String>,
        dtype: DType,
        shape: &[usize],
        group_size: usize,
        bytes: &[u8],
    ) -> Result<(), TensorError> {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        let t = OwnedTensor {
            dtype,
            shape: shape.to_vec(),
            group_size,
            words,
            len: bytes.len(),
        };
        t.view()?;
        self.map.insert(name.into(), t);
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> bool {
        self.map.remove(name).is_some()
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// The override of `name`, if any.
    pub fn get(&self, name: &str) -> Option<TensorView<'_>> {
        // Checked on insert, so the view cannot fail here.
        self.map.get(name).and_then(|t| t.view().ok())
    }
}

#[derive(Clone)]
pub struct Weights<'a> {
    file: &'a CellmFile,
    prefix: String,
    overrides: Option<&'a TensorOverrides>,
}

impl<'a> Weights<'a> {
    pub fn new(file: &'a CellmFile, prefix: &str) -> Self {
        Self {
            file,
            prefix: prefix.to_string(),
            overrides: None,
        }
    }

    /// The same weights with `overrides` taking precedence over the file's tensors.
    pub fn with_overrides(mut self, overrides: &'a TensorOverrides) -> Self {
        self.overrides = Some(overrides);
        self
    }

    /// The override or, failing that, the file's tensor of full name `full`.
    fn lookup(&self, full: &str) -> Result<TensorView<'a>, ModelError> {
        if let Some(t) = self.overrides.and_then(|o| o.get(full)) {
            return Ok(t);
        }
        Ok(self.file.tensor(full)?)
    }

    /// The text stack of a checkpoint: multimodal checkpoints nest it under
    /// `model.language_model`, text-only ones under `model`.
    pub fn text_stack(file: &'a CellmFile) -> Self {
        let prefix = if file.contains("model.language_model.embed_tokens.weight") {
            "model.language_model"
        } else {
            "model"
        };
        Self::new(file, prefix)
    }

    /// A 2-D tensor whose row count the caller does not know (e.g. a vocabulary-sized table),
    /// checked to have `cols` columns.
    pub fn matrix_with_cols(&self, name: &str, cols: usize) -> Result<TensorView<'a>, ModelError> {
        let t = self.file_tensor(name)?;
        if t.shape.len() != 2 || t.cols() != cols {
            return Err(ModelError::Shape {
                name: self.full(name),
                expected: vec![t.rows(), cols],
                found: t.shape.to_vec(),
            });
        }
        Ok(t)
    }

    /// The same file under `prefix.sub`.
    pub fn pp(&self, sub: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() {
            sub.to_string()
        } else {
            format!("{}.{sub}", self.prefix)
        };
        Self {
            file: self.file,
            prefix,
            overrides: self.overrides,
        }
    }

    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        let full = self.full(name);
        self.overrides.is_some_and(|o| o.contains(&full)) || self.file.contains(&full)
    }

    /// A zero-copy view, checked against the expected shape.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<TensorView<'a>, ModelError> {
        let full = self.full(name);
        let t = self.lookup(&full)?;
        if t.shape != shape {
            return Err(ModelError::Shape {
                name: full,
                expected: shape.to_vec(),
                found: t.shape.to_vec(),
            });
        }
        Ok(t)
    }

    /// A zero-copy view without a shape check (the caller checks).
    pub fn file_tensor(&self, name: &str) -> Result<TensorView<'a>, ModelError> {
        self.lookup(&self.full(name))
    }

    /// A small vector (norm weight, scalar) converted to f32.
    pub fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        let full = self.full(name);
        let t = self.lookup(&full)?;
        if t.numel() != len {
            return Err(ModelError::Shape {
                name: full,
                expected: vec![len],
                found: t.shape.to_vec(),
            });
        }
        let v = t.to_f32_vec();
        // Norm weights and scalars are read once at load: a NaN here would turn every output
        // into padding, so refuse it with the tensor's name.
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(ModelError::NonFinite {
                name: full,
                index: i,
                value: v[i],
            });
        }
        Ok(v)
    }
}
