//! Encoding one tensor from f32 row blocks into its `.cellm` byte layout, in parallel.
//!
//! q8/q4 store all values first and all scales after them, so a block of rows lands in two
//! places of the output buffer; float dtypes are one contiguous span per block. lut4/lut6 fit
//! one palette per group of rows (k-means), so rows wait until their group is complete.

use super::kmeans;
use crate::error::ConvertError;
use cellm_engine::tensor::{DType, encode, lut, rows_cols};
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
    /// lut dtypes: pushed rows whose palette group is not complete yet.
    pending: Vec<f32>,
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
            // palettes are placed per row group, not per row
            DType::Lut4 | DType::Lut6 => (lut::row_bytes(dtype, cols), 0),
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
            pending: Vec::new(),
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
        if self.next_row + self.pending.len() / self.cols + n > self.rows {
            return Err(ConvertError::Invalid(
                "more rows than the tensor has".into(),
            ));
        }
        if self.dtype.is_lut() {
            self.push_lut(values);
            return Ok(());
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

    /// lut: queues rows and encodes every completed palette group (in parallel).
    fn push_lut(&mut self, values: &[f32]) {
        let (dtype, cols, gs) = (self.dtype, self.cols, self.group_size);
        self.pending.extend_from_slice(values);
        let end = self.next_row + self.pending.len() / cols;
        // whole groups only, except at the end of the tensor (the last group may be short)
        let done_to = if end == self.rows { end } else { end / gs * gs };
        if done_to <= self.next_row {
            return;
        }
        let n = done_to - self.next_row;
        let k = lut::palette_len(dtype);
        let groups: Vec<(Vec<u8>, Vec<half::f16>)> = self.pending[..n * cols]
            .par_chunks(gs * cols)
            .map(|g| kmeans::palettize(g, k))
            .collect();
        let rb = self.value_row;
        let pal_base = self.rows * rb;
        let g0 = self.next_row / gs;
        for (j, (idx, pal)) in groups.into_iter().enumerate() {
            let r = self.next_row + j * gs;
            for (i, ir) in idx.chunks_exact(cols).enumerate() {
                lut::pack_row(dtype, ir, &mut self.buf[(r + i) * rb..(r + i + 1) * rb]);
            }
            let at = pal_base + (g0 + j) * k * 2;
            for (o, p) in self.buf[at..at + k * 2].chunks_exact_mut(2).zip(&pal) {
                o.copy_from_slice(&p.to_le_bytes());
            }
        }
        self.pending.drain(..n * cols);
        self.next_row = done_to;
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

    /// lut: any split of the row blocks gives the same bytes (palettes per whole row group),
    /// and the k-means palettes reconstruct better than the engine's uniform reference.
    #[test]
    fn lut_blocks_are_split_independent() {
        let shape = [37usize, 64];
        let v = values(37 * 64);
        for dtype in [DType::Lut4, DType::Lut6] {
            for gs in [1usize, 8, 37, 100] {
                let mut one = TensorEncoder::new(dtype, &shape, gs).unwrap();
                one.push_rows(&v).unwrap();
                let one = one.finish().unwrap();
                let mut e = TensorEncoder::new(dtype, &shape, gs).unwrap();
                for block in [0..3usize, 3..20, 20..21, 21..37] {
                    e.push_rows(&v[block.start * 64..block.end * 64]).unwrap();
                }
                let split = e.finish().unwrap();
                assert_eq!(split, one, "{dtype} gs {gs}");
                let err = |bytes: &[u8]| -> f64 {
                    let t = cellm_engine::tensor::TensorView::new(dtype, &shape, gs, bytes)
                        .unwrap()
                        .to_f32_vec();
                    t.iter()
                        .zip(&v)
                        .map(|(a, b)| ((a - b) as f64).powi(2))
                        .sum()
                };
                let uniform = encode(dtype, &v, &shape, gs).unwrap();
                assert!(err(&one) <= err(&uniform), "{dtype} gs {gs}");
            }
        }
        let mut e = TensorEncoder::new(DType::Lut4, &shape, 8).unwrap();
        e.push_rows(&v[..20 * 64]).unwrap();
        assert!(e.finish().is_err());
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
