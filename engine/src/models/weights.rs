//! Named access to a `.cellm` file's tensors with a module-path prefix, the way candle's
//! `VarBuilder` is used: `w.pp("self_attn").linear("q_proj", out, in)`.

use super::ModelError;
use crate::format::CellmFile;
use crate::tensor::TensorView;

#[derive(Clone)]
pub struct Weights<'a> {
    file: &'a CellmFile,
    prefix: String,
}

impl<'a> Weights<'a> {
    pub fn new(file: &'a CellmFile, prefix: &str) -> Self {
        Self {
            file,
            prefix: prefix.to_string(),
        }
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
        self.file.contains(&self.full(name))
    }

    /// A zero-copy view, checked against the expected shape.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<TensorView<'a>, ModelError> {
        let full = self.full(name);
        let t = self.file.tensor(&full)?;
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
        Ok(self.file.tensor(&self.full(name))?)
    }

    /// A small vector (norm weight, scalar) converted to f32.
    pub fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        let full = self.full(name);
        let t = self.file.tensor(&full)?;
        if t.numel() != len {
            return Err(ModelError::Shape {
                name: full,
                expected: vec![len],
                found: t.shape.to_vec(),
            });
        }
        Ok(t.to_f32_vec())
    }
}
