//! Encoding one tensor from f32 row blocks into its `.cellm` byte layout, in parallel.
//!
//! q8/q4 store all values first and all scales after them, so a block of rows lands in two
//! places of the output buffer; float dtypes are one contiguous span per block.

use crate::error::ConvertError;
use cellm_engine::tensor::{DType, encode, rows_cols};
use rayon::prelude::*;

/// Rows per rayon task: about 256 K values, big enough to amortize task overhead.
fn rows_per_task(cols: usize) -> usize {
    ((1usize << 18) / cols.max(1)).max(1)
}

/// The output buffer of one tensor, filled by consecutive row blocks.
pub struct TensorEncoder {
    dtype: DType,
    cols: usize,
    rows: usize,
    group_size: usize,
    /// Bytes per row of the value part (all bytes of a row for float dtypes).
    value_row: usize,
    /// Bytes per row of the scale part (0 for float dtypes).
    scale_row: usize,
    next_row: usize,
    buf: Vec<u8>,
}

impl TensorEncoder {
    pub fn new(dtype: DType, shape: &[usize], group_size: usize) -> Result<Self, ConvertError> {
        let len = dtype.byte_len(shape, group_size)?;
        let (rows, cols) = rows_cols(shape);
        let (value_row, scale_row) = match dtype {
            DType::F32 => (cols * 4, 0),
            DType::F16 | DType::BF16 => (cols * 2, 0),
            DType::Q8 => (cols, cols / group_size * 2),
            DType::Q4 => (cols / 2, cols / group_size * 2),
        };
        Ok(Self {
            dtype,
            cols,
            rows,
            group_size,
            value_row,
            scale_row,
            next_row: 0,
            buf: vec![0u8; len],
        })
    }

    /// Encodes the next `values.len() / cols` rows.
    pub fn push_rows(&mut self, values: &[f32]) -> Result<(), ConvertError> {
        if self.cols == 0 || !values.len().is_multiple_of(self.cols) {
            return Err(ConvertError::Invalid(format!(
                "row block of {} values does not hold whole rows of {}",
                values.len(),
                self.cols
            )));
        }
        let n = values.len() / self.cols;
        if self.next_row + n > self.rows {
            return Err(ConvertError::Invalid(
                "more rows than the tensor has".into(),
            ));
        }
        let (dtype, cols, gs) = (self.dtype, self.cols, self.group_size);
        let task = rows_per_task(cols);
        let parts: Vec<Vec<u8>> = values
            .par_chunks(task * cols)
            .map(|block| encode(dtype, block, &[block.len() / cols, cols], gs))
            .collect::<Result<_, _>>()?;
        let scale_base = self.rows * self.value_row;
        let mut row = self.next_row;
        for part in parts {
            let k = part.len() / (self.value_row + self.scale_row);
            let (vals, scales) = part.split_at(k * self.value_row);
            self.buf[row * self.value_row..(row + k) * self.value_row].copy_from_slice(vals);
            if self.scale_row > 0 {
                let at = scale_base + row * self.scale_row;
                self.buf[at..at + k * self.scale_row].copy_from_slice(scales);
            }
            row += k;
        }
        self.next_row = row;
        Ok(())
    }

    /// The finished bytes; every row must have been pushed.
    pub fn finish(self) -> Result<Vec<u8>, ConvertError> {
        if self.next_row != self.rows {
            return Err(ConvertError::Invalid(format!(
                "only {} of {} rows were encoded",
                self.next_row, self.rows
            )));
        }
        Ok(self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 300.0)
            .collect()
    }

    /// Row-block encoding must equal the engine's whole-tensor reference encode.
    #[test]
    fn blocks_match_reference() {
        let shape = [1000usize, 320];
        let v = values(1000 * 320);
        for (dtype, gs) in [
            (DType::F32, 0),
            (DType::F16, 0),
            (DType::BF16, 0),
            (DType::Q8, 32),
            (DType::Q4, 32),
            (DType::Q4, 64),
        ] {
            let want = encode(dtype, &v, &shape, gs).unwrap();
            let mut e = TensorEncoder::new(dtype, &shape, gs).unwrap();
            for block in [0..3usize, 3..900, 900..1000] {
                e.push_rows(&v[block.start * 320..block.end * 320]).unwrap();
            }
            assert_eq!(e.finish().unwrap(), want, "{dtype} gs {gs}");
        }
    }

    #[test]
    fn incomplete_is_an_error() {
        let mut e = TensorEncoder::new(DType::Q8, &[4, 32], 32).unwrap();
        e.push_rows(&values(64)).unwrap();
        assert!(e.finish().is_err());
        let mut e = TensorEncoder::new(DType::Q8, &[4, 32], 32).unwrap();
        assert!(e.push_rows(&values(33)).is_err());
    }
}
