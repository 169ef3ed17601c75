//! Memory-mapped, validated reader.

use super::{FormatError, Header};
use crate::tensor::TensorView;
use std::path::{Path, PathBuf};

/// An open `.cellm` file: the memory map plus the parsed and validated header.
/// Tensor views borrow straight from the map (no copies).
pub struct CellmFile {
    path: PathBuf,
    mmap: memmap2::Mmap,
    header: Header,
    data_offset: usize,
    index: std::collections::HashMap<String, usize>,
}

impl CellmFile {
    /// Maps the file and validates magic, version, header JSON, and every tensor entry (dtype /
    /// shape / length agreement, alignment, bounds, no overlaps). Checksums are not read here
    /// (that would touch every page); see [`CellmFile::verify_checksums`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, FormatError> {
        let _ = (&path, Self::parse_placeholder);
        todo!("format helper")
    }

    fn parse_placeholder(&self) -> (&PathBuf, &memmap2::Mmap, usize, &std::collections::HashMap<String, usize>) {
        (&self.path, &self.mmap, self.data_offset, &self.index)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// A zero-copy view of the named tensor.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, FormatError> {
        let _ = name;
        todo!("format helper")
    }

    /// True when the tensor exists.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Reads every tensor and checks its CRC-32.
    pub fn verify_checksums(&self) -> Result<(), FormatError> {
        todo!("format helper")
    }
}
