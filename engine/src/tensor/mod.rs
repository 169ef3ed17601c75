//! Tensor dtypes, their byte layouts, and borrowed views into weight bytes.
//!
//! Layouts (all little-endian, rows = product of all dims but the last, cols = last dim):
//! - `f32`, `f16`, `bf16`: plain row-major.
//! - `q8`: int8 symmetric per group of `group_size` consecutive values of a row.
//!   `rows*cols` i8 values (row-major), then `rows*(cols/group_size)` f16 scales
//!   (scale index = row * groups_per_row + group). value = q * scale.
//! - `q4`: int4 symmetric per group. Packed data first: each row is `cols/2` bytes; inside every
//!   block of 32 consecutive values, byte `j` (0..16) holds value `j` in its low nibble and value
//!   `j+16` in its high nibble (the llama.cpp Q4_0 order, which SIMD unpacks with one mask and one
//!   shift). Nibbles are unsigned `q` in 0..16 meaning `q - 8`. Then the f16 scales as for q8.
//!   value = (q - 8) * scale.
//!
//! - `lut4`, `lut6`: palettized; indices into a palette of 16 / 64 f16 values per group of
//!   `group_size` consecutive ROWS (not columns). Layout in [`lut`].
//!
//! q8/q4 need `cols % group_size == 0` and `group_size % 32 == 0`; lut4/lut6 need
//! `cols % 32 == 0` and `group_size >= 1`.

pub mod lut;
pub mod quant;

use half::{bf16, f16};
use serde::{Deserialize, Serialize};

/// Storage type of one tensor in a `.cellm` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    BF16,
    Q8,
    Q4,
    Lut4,
    Lut6,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::Q8 => "q8",
            DType::Q4 => "q4",
            DType::Lut4 => "lut4",
            DType::Lut6 => "lut6",
        }
    }

    pub fn is_quantized(self) -> bool {
        matches!(self, DType::Q8 | DType::Q4 | DType::Lut4 | DType::Lut6)
    }

    /// Palettized (`lut4`/`lut6`): `group_size` counts rows per palette.
    pub fn is_lut(self) -> bool {
        matches!(self, DType::Lut4 | DType::Lut6)
    }

    /// Bytes needed for a tensor of this dtype and shape, after checking the layout constraints.
    pub fn byte_len(self, shape: &[usize], group_size: usize) -> Result<usize, TensorError> {
        let (rows, cols) = rows_cols(shape);
        let n = rows
            .checked_mul(cols)
            .ok_or(TensorError::Layout(format!("shape {shape:?} overflows")))?;
        match self {
            DType::F32 => Ok(n * 4),
            DType::F16 | DType::BF16 => Ok(n * 2),
            DType::Q8 | DType::Q4 => {
                check_group(self, cols, group_size)?;
                let scales = rows * (cols / group_size) * 2;
                let values = if self == DType::Q8 { n } else { n / 2 };
                Ok(values + scales)
            }
            DType::Lut4 | DType::Lut6 => {
                if group_size == 0 || !cols.is_multiple_of(32) {
                    return Err(TensorError::Layout(format!(
                        "{self} needs the last dim ({cols}) to be a multiple of 32 and a group \
                         size (rows per palette) >= 1, got {group_size}"
                    )));
                }
                let idx = rows * lut::row_bytes(self, cols);
                // checked: rows may be huge when cols is 0 (hostile headers)
                lut::groups(rows, group_size)
                    .checked_mul(lut::palette_len(self) * 2)
                    .and_then(|p| p.checked_add(idx))
                    .ok_or(TensorError::Layout(format!("shape {shape:?} overflows")))
            }
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DType {
    type Err = TensorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "f32" => DType::F32,
            "f16" => DType::F16,
            "bf16" => DType::BF16,
            "q8" => DType::Q8,
            "q4" => DType::Q4,
            "lut4" => DType::Lut4,
            "lut6" => DType::Lut6,
            other => return Err(TensorError::Layout(format!("unknown dtype '{other}'"))),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    #[error("invalid tensor layout: {0}")]
    Layout(String),
    #[error("tensor '{name}': expected shape {expected:?}, found {found:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
}

/// (rows, cols) of a tensor: cols is the last dim, rows the product of the others (1 for 1-D).
pub fn rows_cols(shape: &[usize]) -> (usize, usize) {
    match shape.split_last() {
        None => (1, 1),
        Some((&cols, rest)) => (rest.iter().product::<usize>(), cols),
    }
}

fn check_group(dtype: DType, cols: usize, group_size: usize) -> Result<(), TensorError> {
    if group_size == 0 || !group_size.is_multiple_of(32) {
        return Err(TensorError::Layout(format!(
            "{dtype} needs a group size that is a multiple of 32, got {group_size}"
        )));
    }
    if !cols.is_multiple_of(group_size) {
        return Err(TensorError::Layout(format!(
            "{dtype} needs the last dim ({cols}) to be a multiple of the group size ({group_size})"
        )));
    }
    Ok(())
}

/// A borrowed, validated view of one tensor's bytes (usually straight from the memory map).
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    pub dtype: DType,
    pub shape: &'a [usize],
    /// Group size for q8/q4 (columns per scale), rows per palette for lut4/lut6; ignored for
    /// float dtypes.
    pub group_size: usize,
    pub data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// Builds a view after checking that `data` has exactly the length the layout needs.
    pub fn new(
        dtype: DType,
        shape: &'a [usize],
        group_size: usize,
        data: &'a [u8],
    ) -> Result<Self, TensorError> {
        let need = dtype.byte_len(shape, group_size)?;
        if data.len() != need {
            return Err(TensorError::Layout(format!(
                "{dtype} {shape:?} needs {need} bytes, got {}",
                data.len()
            )));
        }
        let addr = data.as_ptr() as usize;
        let align = match dtype {
            DType::F32 => 4,
            DType::Q8 => 1,
            _ => 2,
        };
        if !addr.is_multiple_of(align) {
            return Err(TensorError::Layout("tensor data is misaligned".into()));
        }
        Ok(Self {
            dtype,
            shape,
            group_size,
            data,
        })
    }

    pub fn rows(&self) -> usize {
        rows_cols(self.shape).0
    }

    pub fn cols(&self) -> usize {
        rows_cols(self.shape).1
    }

    pub fn numel(&self) -> usize {
        self.rows() * self.cols()
    }

    pub fn as_f32(&self) -> Option<&'a [f32]> {
        (self.dtype == DType::F32).then(|| bytemuck::cast_slice(self.data))
    }

    pub fn as_f16(&self) -> Option<&'a [f16]> {
        (self.dtype == DType::F16).then(|| bytemuck::cast_slice(self.data))
    }

    pub fn as_bf16(&self) -> Option<&'a [bf16]> {
        (self.dtype == DType::BF16).then(|| bytemuck::cast_slice(self.data))
    }

    /// Quantized payload (i8 values for q8, packed nibbles for q4) and the f16 scales.
    pub fn quant_parts(&self) -> Option<(&'a [u8], &'a [f16])> {
        let n = self.numel();
        let split = match self.dtype {
            DType::Q8 => n,
            DType::Q4 => n / 2,
            _ => return None,
        };
        let (values, scales) = self.data.split_at(split);
        Some((values, bytemuck::cast_slice(scales)))
    }

    /// Palettized payload (packed indices) and all palettes (`palette_len` f16 each).
    pub fn lut_parts(&self) -> Option<(&'a [u8], &'a [f16])> {
        if !self.dtype.is_lut() {
            return None;
        }
        let split = self.rows() * lut::row_bytes(self.dtype, self.cols());
        let (idx, pal) = self.data.split_at(split);
        Some((idx, bytemuck::cast_slice(pal)))
    }

    /// Palette of row `r` (lut dtypes only).
    pub fn lut_palette(&self, r: usize) -> Option<&'a [f16]> {
        let (_, pal) = self.lut_parts()?;
        let k = lut::palette_len(self.dtype);
        let g = r / self.group_size;
        pal.get(g * k..(g + 1) * k)
    }

    /// Dequantizes/converts row `r` into `out` (len = cols). Reference path, not a hot kernel.
    pub fn row_to_f32(&self, r: usize, out: &mut [f32]) {
        let cols = self.cols();
        assert_eq!(out.len(), cols, "row_to_f32: output length");
        let range = r * cols..(r + 1) * cols;
        match self.dtype {
            DType::F32 => out.copy_from_slice(&self.as_f32().unwrap()[range]),
            DType::F16 => {
                for (o, v) in out.iter_mut().zip(&self.as_f16().unwrap()[range]) {
                    *o = v.to_f32();
                }
            }
            DType::BF16 => {
                for (o, v) in out.iter_mut().zip(&self.as_bf16().unwrap()[range]) {
                    *o = v.to_f32();
                }
            }
            DType::Q8 | DType::Q4 => {
                let (values, scales) = self.quant_parts().unwrap();
                let gpr = cols / self.group_size;
                quant::dequantize_row(
                    self.dtype,
                    values,
                    &scales[r * gpr..(r + 1) * gpr],
                    r,
                    cols,
                    self.group_size,
                    out,
                );
            }
            DType::Lut4 | DType::Lut6 => {
                let (idx, _) = self.lut_parts().unwrap();
                let pal = self.lut_palette(r).unwrap();
                lut::dequantize_row(self.dtype, idx, pal, r, cols, out);
            }
        }
    }

    /// The whole tensor as f32 (allocates; for small tensors such as norms, and for tests).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let cols = self.cols();
        let mut out = vec![0f32; self.numel()];
        if cols > 0 {
            for (r, chunk) in out.chunks_mut(cols).enumerate() {
                self.row_to_f32(r, chunk);
            }
        }
        out
    }
}

/// Encodes f32 values into the byte layout of `dtype`.
pub fn encode(
    dtype: DType,
    values: &[f32],
    shape: &[usize],
    group_size: usize,
) -> Result<Vec<u8>, TensorError> {
    let (rows, cols) = rows_cols(shape);
    if values.len() != rows * cols {
        return Err(TensorError::Layout(format!(
            "{} values do not fill shape {shape:?}",
            values.len()
        )));
    }
    dtype.byte_len(shape, group_size)?;
    Ok(match dtype {
        DType::F32 => bytemuck::cast_slice(values).to_vec(),
        DType::F16 => values
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        DType::BF16 => values
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect(),
        DType::Q8 | DType::Q4 => quant::quantize(dtype, values, rows, cols, group_size),
        DType::Lut4 | DType::Lut6 => lut::quantize_uniform(dtype, values, shape, group_size)?,
    })
}
