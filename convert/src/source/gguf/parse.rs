//! GGUF container parsing (versions 2 and 3, little-endian): header, metadata key/values, tensor
//! infos and the aligned data section, read from a memory map. Every read is bounds-checked and
//! every count is checked against the bytes left before anything is allocated, so a truncated or
//! corrupt file yields a [`GgufError`], never a panic or a huge allocation.

use super::GgufError;
use super::types::GgmlType;
use memmap2::Mmap;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"GGUF";
/// ggml's GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;
/// Nested metadata arrays deeper than this are refused (no real file nests more than twice).
const MAX_ARRAY_DEPTH: usize = 8;
const DEFAULT_ALIGNMENT: u64 = 32;
/// Longest metadata array accepted: real vocabularies (tokens, scores, merges) stay far below;
/// the cap keeps a corrupt length from expanding file bytes into gigabytes of values.
const MAX_ARRAY_LEN: usize = 1 << 22;

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    /// Any integer type as u64 (negative values give None).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type as i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => i64::try_from(v).ok(),
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::I64(v) => Some(v),
            _ => None,
        }
    }

    /// Float or integer as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// Where one tensor lives and how it is encoded.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `ne[0]` is the contiguous (innermost) dimension.
    pub ne: Vec<u64>,
    pub ty: GgmlType,
    /// Offset relative to the data section.
    pub offset: u64,
    /// Bytes of the encoded tensor.
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }

    /// Shape in PyTorch order (ggml's `ne` reversed).
    pub fn torch_shape(&self) -> Vec<usize> {
        self.ne.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A memory-mapped, validated GGUF file.
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    pub version: u32,
    /// Key/values in file order.
    pub metadata: Vec<(String, GgufValue)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    by_name: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .finish()
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let io = |source| GgufError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; like every mmap-based reader we assume the file is not
        // truncated by another process while we read it.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::from_mmap(path.to_path_buf(), mmap)
    }

    fn from_mmap(path: PathBuf, mmap: Mmap) -> Result<Self, GgufError> {
        let parsed = parse(&mmap)
            .map_err(|what| GgufError::Invalid(format!("{}: {what}", path.display())))?;
        let mut by_name = HashMap::with_capacity(parsed.tensors.len());
        for (i, t) in parsed.tensors.iter().enumerate() {
            if by_name.insert(t.name.clone(), i).is_some() {
                return Err(GgufError::Invalid(format!(
                    "{}: duplicate tensor name '{}'",
                    path.display(),
                    t.name
                )));
            }
        }
        Ok(GgufFile {
            path,
            mmap,
            version: parsed.version,
            metadata: parsed.metadata,
            tensors: parsed.tensors,
            alignment: parsed.alignment,
            data_offset: parsed.data_offset,
            by_name,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The encoded bytes of a tensor (bounds were checked when the file was opened).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> Result<&[u8], GgufError> {
        let start = self.data_offset.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(info.n_bytes));
        match (start, end) {
            (Some(s), Some(e)) if e <= self.mmap.len() as u64 => {
                Ok(&self.mmap[s as usize..e as usize])
            }
            _ => Err(GgufError::Invalid(format!(
                "{}: tensor '{}' lies outside the file",
                self.path.display(),
                info.name
            ))),
        }
    }

    /// A tensor dequantized to f32, in ggml element order (= PyTorch row-major of the reversed shape).
    pub fn dequantize(&self, info: &TensorInfo) -> Result<Vec<f32>, GgufError> {
        let bytes = self.tensor_bytes(info)?;
        super::dequant::dequantize(info.ty, bytes, info.n_elements() as usize).map_err(|what| {
            GgufError::Invalid(format!(
                "{}: tensor '{}': {what}",
                self.path.display(),
                info.name
            ))
        })
    }
}

struct Parsed {
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
}

/// A bounds-checked little-endian reader over the file bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "truncated: {what} needs {n} bytes at offset {}, file has {}",
                self.pos,
                self.buf.len()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count that must fit in what is left of the file at `min_size` bytes per item.
    fn count(&mut self, min_size: usize, what: &str) -> Result<usize, String> {
        let n = self.u64(what)?;
        let fits = usize::try_from(n).ok().filter(|&n| {
            n.checked_mul(min_size)
                .is_some_and(|b| b <= self.remaining())
        });
        fits.ok_or_else(|| {
            format!(
                "{what} = {n} is impossible: only {} bytes remain at offset {}",
                self.remaining(),
                self.pos
            )
        })
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let n = self.count(1, what)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not valid UTF-8"))
    }

    fn value(&mut self, ty: u32, depth: usize, key: &str) -> Result<GgufValue, String> {
        Ok(match ty {
            0 => GgufValue::U8(self.array::<1>(key)?[0]),
            1 => GgufValue::I8(self.array::<1>(key)?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(key)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(key)?)),
            4 => GgufValue::U32(u32::from_le_bytes(self.array(key)?)),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(key)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(format!("metadata '{key}': invalid bool byte {b}")),
            },
            8 => GgufValue::String(self.string(key)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(format!(
                        "metadata '{key}': arrays nested deeper than {MAX_ARRAY_DEPTH}"
                    ));
                }
                let elem_ty = self.u32(key)?;
                let min = value_min_size(elem_ty).ok_or_else(|| {
                    format!("metadata '{key}': unknown array element type {elem_ty}")
                })?;
                let n = self.count(min, key)?;
                if n > MAX_ARRAY_LEN {
                    return Err(format!(
                        "metadata '{key}': array of {n} items is longer than {MAX_ARRAY_LEN}"
                    ));
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem_ty, depth + 1, key)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(u64::from_le_bytes(self.array(key)?)),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(key)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(key)?)),
            t => return Err(format!("metadata '{key}': unknown value type {t}")),
        })
    }
}

/// Smallest encoding of a value of a type (used to bound array lengths before allocating).
fn value_min_size(ty: u32) -> Option<usize> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,     // length prefix
        9 => 4 + 8, // element type + length
        10..=12 => 8,
        _ => return None,
    })
}

fn parse(buf: &[u8]) -> Result<Parsed, String> {
    let mut c = Cursor { buf, pos: 0 };
    if c.take(4, "magic")? != MAGIC {
        return Err("not a GGUF file (bad magic bytes)".into());
    }
    let version = c.u32("version")?;
    match version {
        2 | 3 => {}
        1 => return Err("GGUF version 1 is not supported (only 2 and 3)".into()),
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err("big-endian GGUF files are not supported".into());
        }
        v => return Err(format!("unsupported GGUF version {v} (only 2 and 3)")),
    }
    // Minimal tensor info: name length 8 + n_dims 4 + type 4 + offset 8.
    let n_tensors = c.u64("tensor count")?;
    // Minimal key/value: key length 8 + value type 4 + 1 byte of value.
    let n_kv = c.count(13, "metadata count")?;
    if n_tensors > (c.remaining() / 24) as u64 {
        return Err(format!(
            "tensor count {n_tensors} is impossible for a file of {} bytes",
            buf.len()
        ));
    }
    let n_tensors = n_tensors as usize;

    let mut metadata = Vec::with_capacity(n_kv);
    let mut seen = std::collections::HashSet::with_capacity(n_kv);
    for _ in 0..n_kv {
        let key = c.string("metadata key")?;
        // As llama.cpp: a repeated key is ambiguous (which value holds?), so the file is corrupt.
        if !seen.insert(key.clone()) {
            return Err(format!("duplicate metadata key '{key}'"));
        }
        let ty = c.u32(&key)?;
        let value = c.value(ty, 0, &key)?;
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, GgufValue::U32(a))) if a.is_power_of_two() => u64::from(*a),
        Some((_, v)) => {
            return Err(format!(
                "general.alignment must be a power-of-two u32, found {v:?}"
            ));
        }
    };

    let mut tensors = Vec::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let name = c.string("tensor name")?;
        let n_dims = c.u32(&name)?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(format!(
                "tensor '{name}': {n_dims} dimensions (1..={MAX_DIMS} allowed)"
            ));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            ne.push(c.u64(&name)?);
        }
        let ty_id = c.u32(&name)?;
        let ty = GgmlType::from_id(ty_id)
            .ok_or_else(|| format!("tensor '{name}': unknown ggml type {ty_id}"))?;
        let offset = c.u64(&name)?;
        let n_elements = ne
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("tensor '{name}': element count overflows"))?;
        let (block, block_bytes) = ty.block();
        if ne[0] % block as u64 != 0 {
            return Err(format!(
                "tensor '{name}': first dimension {} is not a multiple of the {} block size {block}",
                ne[0],
                ty.name()
            ));
        }
        let n_bytes = (n_elements / block as u64)
            .checked_mul(block_bytes as u64)
            .ok_or_else(|| format!("tensor '{name}': byte size overflows"))?;
        if offset % alignment != 0 {
            return Err(format!(
                "tensor '{name}': data offset {offset} is not {alignment}-byte aligned"
            ));
        }
        tensors.push(TensorInfo {
            name,
            ne,
            ty,
            offset,
            n_bytes,
        });
    }

    let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
    let file_len = buf.len() as u64;
    for t in &tensors {
        let end = data_offset
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.n_bytes));
        if end.is_none_or(|e| e > file_len) {
            return Err(format!(
                "tensor '{}' ({} bytes at data offset {}) lies outside the file ({} bytes): truncated?",
                t.name, t.n_bytes, t.offset, file_len
            ));
        }
    }
    // Two tensors sharing bytes would alias each other's data: a corrupt or hostile table.
    let mut spans: Vec<(u64, u64, &str)> = tensors
        .iter()
        .filter(|t| t.n_bytes > 0)
        .map(|t| (t.offset, t.offset + t.n_bytes, t.name.as_str()))
        .collect();
    spans.sort_unstable();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(format!(
                "tensors '{}' and '{}' overlap in the data section (offsets {} and {})",
                w[0].2, w[1].2, w[0].0, w[1].0
            ));
        }
    }
    Ok(Parsed {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

/// Parse a whole file held in memory (the tests, the mutation test and the fuzz target feed it
/// truncated and corrupted bytes).
pub fn parse_bytes(buf: &[u8]) -> Result<(), String> {
    parse(buf).map(|_| ())
}
