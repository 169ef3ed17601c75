//! Memory-mapped, validated reader.

use super::{ALIGNMENT, FORMAT_VERSION, FormatError, Header, MAGIC, PREAMBLE_LEN, TensorEntry};
use crate::tensor::TensorView;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// An open `.cellm` file: the memory map plus the parsed and validated header.
/// Tensor views borrow straight from the map (no copies).
pub struct CellmFile {
    path: PathBuf,
    mmap: memmap2::Mmap,
    header: Header,
    header_len: u64,
    data_offset: usize,
    index: HashMap<String, usize>,
}

impl std::fmt::Debug for CellmFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CellmFile")
            .field("path", &self.path)
            .field("file_len", &self.mmap.len())
            .field("family", &self.header.family)
            .field("tensors", &self.header.tensors.len())
            .finish()
    }
}

/// Fixed fields of the preamble.
struct Preamble {
    header_len: u64,
    data_offset: u64,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Checks magic, version, flags, and that the header region and data offset lie in the file.
/// `bytes` is the whole file.
fn parse_preamble(bytes: &[u8], shown: &str) -> Result<Preamble, FormatError> {
    let file_len = bytes.len() as u64;
    let prefix = &bytes[..bytes.len().min(MAGIC.len())];
    if prefix != &MAGIC[..prefix.len()] {
        return Err(FormatError::BadMagic(shown.to_string()));
    }
    if bytes.len() < PREAMBLE_LEN {
        return Err(FormatError::Truncated {
            path: shown.to_string(),
            what: format!(
                "the file is {file_len} bytes; the preamble alone is {PREAMBLE_LEN} bytes"
            ),
        });
    }
    let version = le_u32(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(FormatError::Version {
            path: shown.to_string(),
            found: version,
            expected: FORMAT_VERSION,
        });
    }
    let header_err = |what: String| FormatError::Header {
        path: shown.to_string(),
        what,
    };
    let flags = le_u32(bytes, 12);
    if flags != 0 {
        return Err(header_err(format!(
            "unknown preamble flags {flags:#010x} (version {FORMAT_VERSION} defines none)"
        )));
    }
    let header_len = le_u64(bytes, 16);
    let data_offset = le_u64(bytes, 24);
    let header_end = (PREAMBLE_LEN as u64)
        .checked_add(header_len)
        .ok_or_else(|| header_err(format!("header length {header_len} overflows")))?;
    if header_end > file_len {
        return Err(FormatError::Truncated {
            path: shown.to_string(),
            what: format!(
                "the header needs bytes {PREAMBLE_LEN}..{header_end} but the file is {file_len} bytes"
            ),
        });
    }
    if data_offset < header_end {
        return Err(header_err(format!(
            "data offset {data_offset} lies inside the header (which ends at {header_end})"
        )));
    }
    if !data_offset.is_multiple_of(ALIGNMENT) {
        return Err(header_err(format!(
            "data offset {data_offset} is not a multiple of {ALIGNMENT}"
        )));
    }
    if data_offset > file_len {
        return Err(FormatError::Truncated {
            path: shown.to_string(),
            what: format!(
                "the data section starts at {data_offset} but the file is {file_len} bytes"
            ),
        });
    }
    Ok(Preamble {
        header_len,
        data_offset,
    })
}

/// Validates every tensor entry against the layout rules and the file bounds; returns the
/// name -> index map.
fn validate_tensors(
    header: &Header,
    data_offset: u64,
    file_len: u64,
    shown: &str,
) -> Result<HashMap<String, usize>, FormatError> {
    let data_len = file_len - data_offset;
    let mut index = HashMap::with_capacity(header.tensors.len());
    let mut data_end = 0u64;
    for (i, t) in header.tensors.iter().enumerate() {
        let err = |what: String| FormatError::Tensor {
            path: shown.to_string(),
            tensor: t.name.clone(),
            what,
        };
        if t.name.is_empty() {
            return Err(FormatError::Header {
                path: shown.to_string(),
                what: format!("tensor #{i} has an empty name"),
            });
        }
        if index.insert(t.name.clone(), i).is_some() {
            return Err(err("listed twice in the tensor table".into()));
        }
        // Checked up front so DType::byte_len (plain arithmetic) cannot wrap on hostile shapes.
        let numel = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if numel.and_then(|n| n.checked_mul(4)).is_none() {
            return Err(err(format!("shape {:?} is too large", t.shape)));
        }
        if !t.dtype.is_quantized() && t.group_size != 0 {
            return Err(err(format!(
                "{} tensors must have group_size 0, found {}",
                t.dtype, t.group_size
            )));
        }
        let need = t
            .dtype
            .byte_len(&t.shape, t.group_size)
            .map_err(|e| err(e.to_string()))?;
        if need as u64 != t.byte_len {
            return Err(err(format!(
                "{} {:?} (group size {}) needs {need} bytes but byte_len is {}",
                t.dtype, t.shape, t.group_size, t.byte_len
            )));
        }
        if !t.offset.is_multiple_of(ALIGNMENT) {
            return Err(err(format!(
                "offset {} is not a multiple of {ALIGNMENT}",
                t.offset
            )));
        }
        let end = t.offset.checked_add(t.byte_len).filter(|&e| e <= data_len);
        let Some(end) = end else {
            return Err(FormatError::Truncated {
                path: shown.to_string(),
                what: format!(
                    "tensor '{}' needs data bytes {}..{} but the data section is {data_len} bytes",
                    t.name,
                    t.offset,
                    t.offset.saturating_add(t.byte_len)
                ),
            });
        };
        data_end = data_end.max(end);
    }

    // Overlaps: walk non-empty tensors in offset order.
    let mut order: Vec<&TensorEntry> = header.tensors.iter().filter(|t| t.byte_len > 0).collect();
    order.sort_by_key(|t| t.offset);
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        // Both ends were bounds-checked above, so this cannot overflow.
        if a.offset + a.byte_len > b.offset {
            return Err(FormatError::Tensor {
                path: shown.to_string(),
                tensor: b.name.clone(),
                what: format!(
                    "bytes {}..{} overlap tensor '{}' at {}..{}",
                    b.offset,
                    b.offset + b.byte_len,
                    a.name,
                    a.offset,
                    a.offset + a.byte_len
                ),
            });
        }
    }

    if data_end != data_len {
        return Err(FormatError::Header {
            path: shown.to_string(),
            what: format!(
                "the file has {} bytes after the end of the last tensor (expected length {})",
                data_len - data_end,
                data_offset + data_end
            ),
        });
    }
    Ok(index)
}

impl CellmFile {
    /// Maps the file and validates magic, version, header JSON, and every tensor entry (dtype /
    /// shape / length agreement, alignment, bounds, no overlaps). Checksums are not read here
    /// (that would touch every page); see [`CellmFile::verify_checksums`].
    /// Runs every check [`CellmFile::open`] makes on a whole file held in memory and returns
    /// its header; for the mutation test and the fuzz target.
    pub fn check_bytes(bytes: &[u8]) -> Result<Header, FormatError> {
        let shown = "<memory>".to_string();
        let pre = parse_preamble(bytes, &shown)?;
        let header_end = PREAMBLE_LEN + pre.header_len as usize; // bounds-checked above
        let header: Header =
            serde_json::from_slice(&bytes[PREAMBLE_LEN..header_end]).map_err(|e| {
                FormatError::Header {
                    path: shown.clone(),
                    what: format!("header JSON: {e}"),
                }
            })?;
        validate_tensors(&header, pre.data_offset, bytes.len() as u64, &shown)?;
        Ok(header)
    }

    pub fn open(path: impl AsRef<Path>) -> Result<Self, FormatError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let io = |source| FormatError::Io {
            path: shown.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(FormatError::NotAFile(shown));
        }
        let file_len = meta.len();
        if file_len == 0 {
            return Err(FormatError::Truncated {
                path: shown,
                what: "the file is empty".into(),
            });
        }
        // SAFETY: the map is read-only; like every mmap-based model loader we rely on the file
        // not being truncated or rewritten by another process while it is open (the writer
        // always creates a new file and renames it into place, never rewrites one in use; only
        // `update_header` touches the header region, which is parsed once here).
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let bytes: &[u8] = &mmap;
        let pre = parse_preamble(bytes, &shown)?;
        let header_end = PREAMBLE_LEN + pre.header_len as usize; // bounds-checked above
        let header: Header =
            serde_json::from_slice(&bytes[PREAMBLE_LEN..header_end]).map_err(|e| {
                FormatError::Header {
                    path: shown.clone(),
                    what: format!("header JSON: {e}"),
                }
            })?;
        let index = validate_tensors(&header, pre.data_offset, bytes.len() as u64, &shown)?;
        Ok(Self {
            path: path.to_path_buf(),
            header,
            header_len: pre.header_len,
            data_offset: pre.data_offset as usize,
            index,
            mmap,
        })
    }

    /// A file that exists only as its plan: `header` with the tensor table laid out from `plan`
    /// as [`super::CellmWriter`] lays it out, over zero-filled data that lives nowhere (an
    /// anonymous map: a page costs memory only once read, and building the models reads only
    /// small vectors). Building the models from it runs the very lookups and shape checks a load
    /// of the written file runs, so a converter can prove a file loads before writing a byte.
    /// `shown` names the file in errors.
    pub fn planned(
        mut header: Header,
        plan: Vec<super::TensorPlan>,
        shown: &str,
    ) -> Result<Self, FormatError> {
        let (entries, data_len) = super::writer::lay_out(plan, shown)?;
        header.tensors = entries;
        let io = |source| FormatError::Io {
            path: shown.to_string(),
            source,
        };
        let len = usize::try_from(data_len)
            .map_err(|_| io(std::io::Error::other("planned data does not fit in memory")))?;
        // A zero-length anonymous map is refused; one spare byte is never part of a tensor.
        let mmap = memmap2::MmapOptions::new()
            .len(len.max(1))
            .map_anon()
            .and_then(|m| m.make_read_only())
            .map_err(io)?;
        let index = validate_tensors(&header, 0, data_len, shown)?;
        Ok(Self {
            path: PathBuf::from(shown),
            header,
            header_len: 0,
            data_offset: 0,
            index,
            mmap,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Moves the embedded `tokenizer.json` out of the parsed header (leaving it empty): a
    /// session builds its tokenizer once and need not keep tens of MB of JSON alive.
    pub fn take_tokenizer_json(&mut self) -> String {
        std::mem::take(&mut self.header.tokenizer.tokenizer_json)
    }

    /// Lets the OS drop this process's resident pages of the file (they are read back from the
    /// page cache or disk if touched again): for a backend that copied the weights elsewhere
    /// (the GPU) and reads the map only rarely afterwards. Best effort; a no-op off Unix.
    pub fn release_resident_pages(&self) {
        #[cfg(unix)]
        {
            // SAFETY: MADV_DONTNEED on a read-only shared file mapping only unmaps pages; a later
            // access faults them in again with the same (unchanged) file contents.
            let r = unsafe {
                self.mmap
                    .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
            };
            if let Err(e) = r {
                log::debug!("madvise(DONTNEED) on {}: {e}", self.path.display());
            }
        }
    }

    /// Bytes reserved for the JSON header (its serialized length plus slack).
    pub fn header_len(&self) -> u64 {
        self.header_len
    }

    /// File offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset as u64
    }

    /// Length of the whole file in bytes.
    pub fn file_len(&self) -> u64 {
        self.mmap.len() as u64
    }

    /// The tensor table, in file order.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.header.tensors
    }

    /// The table entry of the named tensor.
    pub fn tensor_entry(&self, name: &str) -> Result<&TensorEntry, FormatError> {
        self.index
            .get(name)
            .map(|&i| &self.header.tensors[i])
            .ok_or_else(|| FormatError::MissingTensor(name.to_string()))
    }

    fn bytes_of(&self, e: &TensorEntry) -> &[u8] {
        // Offsets and lengths were bounds-checked in `open`.
        let start = self.data_offset + e.offset as usize;
        &self.mmap[start..start + e.byte_len as usize]
    }

    /// A zero-copy view of the named tensor.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, FormatError> {
        let e = self.tensor_entry(name)?;
        TensorView::new(e.dtype, &e.shape, e.group_size, self.bytes_of(e)).map_err(|err| {
            FormatError::Tensor {
                path: self.path.display().to_string(),
                tensor: name.to_string(),
                what: err.to_string(),
            }
        })
    }

    /// True when the tensor exists.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Reads every tensor and checks its CRC-32.
    pub fn verify_checksums(&self) -> Result<(), FormatError> {
        let mut bad: Vec<(usize, u32)> = self
            .header
            .tensors
            .par_iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let crc = crc32fast::hash(self.bytes_of(e));
                (crc != e.crc32).then_some((i, crc))
            })
            .collect();
        bad.sort_unstable();
        match bad.first() {
            None => Ok(()),
            Some(&(i, found)) => {
                let e = &self.header.tensors[i];
                let more = match bad.len() {
                    1 => String::new(),
                    n => format!(" ({} more tensors also mismatch)", n - 1),
                };
                Err(FormatError::Tensor {
                    path: self.path.display().to_string(),
                    tensor: e.name.clone(),
                    what: format!(
                        "checksum mismatch: header says {:08x}, data has {found:08x}{more}",
                        e.crc32
                    ),
                })
            }
        }
    }
}
