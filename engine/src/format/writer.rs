//! Streaming writer: tensors are written one at a time into `<out>.tmp-<pid>`; the header is
//! rewritten with checksums at the end and the file renamed into place. Dropping an unfinished
//! writer removes the temporary file, so a failed or cancelled conversion leaves nothing behind.

use super::{FormatError, Header};
use crate::tensor::DType;
use std::path::{Path, PathBuf};

/// What will be written for one tensor; the full plan is known before the first byte so the
/// header (which precedes the data) can hold final offsets.
#[derive(Clone, Debug)]
pub struct TensorPlan {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub group_size: usize,
}

pub struct CellmWriter {
    final_path: PathBuf,
    header: Header,
}

impl CellmWriter {
    /// Creates the temporary file, lays out the tensor table from `plan` (offsets 64-aligned),
    /// and reserves header space (JSON plus slack so `fidelity` can be filled in later).
    /// `header.tensors` is ignored and replaced by the plan.
    pub fn create(path: &Path, header: Header, plan: Vec<TensorPlan>) -> Result<Self, FormatError> {
        let _ = (path, header, plan);
        todo!("format helper")
    }

    /// Writes the bytes of the next tensor of the plan (in plan order; exact length required).
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<(), FormatError> {
        let _ = (name, bytes, &self.final_path);
        todo!("format helper")
    }

    /// The header as it will be written (e.g. to set `fidelity` before [`CellmWriter::finish`]).
    pub fn header_mut(&mut self) -> &mut Header {
        &mut self.header
    }

    /// Writes the final header, syncs, and renames the temporary file to its final path.
    pub fn finish(self) -> Result<PathBuf, FormatError> {
        todo!("format helper")
    }
}
