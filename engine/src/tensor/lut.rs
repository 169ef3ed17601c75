//! Palettized ("LUT") layouts `lut4` / `lut6`: every weight is an index into a palette of 16 / 64
//! f16 values shared by a group of `group_size` consecutive rows (the last group may be shorter).
//!
//! Index payload first, row-major, `row_bytes(cols)` bytes per row; per block of 32 consecutive
//! columns:
//! - `lut4` (16 bytes): byte `j` (0..16) holds index `j` in its low nibble and index `j+16` in its
//!   high nibble (the q4 order).
//! - `lut6` (24 bytes): bytes 0..16 hold the low 4 bits of the indices in the `lut4` order; byte
//!   `16+m` (m in 0..8) holds the high 2 bits of indices `m`, `m+8`, `m+16`, `m+24` in its bit
//!   pairs 0-1, 2-3, 4-5, 6-7. SIMD decodes 8 indices with one widening load, a shift and a mask.
//!
//! Then `ceil(rows / group_size)` palettes of 16 / 64 f16 values (palette `g` serves rows
//! `g*group_size ..`). value = palette[row / group_size][index].
//!
//! The reference encoder here fits a uniform palette (min..max of the group); the converter fits
//! palettes with k-means and packs them with [`pack`].

use super::{DType, TensorError};
use half::f16;

/// Palette entries of a LUT dtype.
pub const fn palette_len(dtype: DType) -> usize {
    match dtype {
        DType::Lut6 => 64,
        _ => 16,
    }
}

/// Index bytes of one row of `cols` values (cols must be a multiple of 32).
pub const fn row_bytes(dtype: DType, cols: usize) -> usize {
    match dtype {
        DType::Lut6 => cols / 32 * 24,
        _ => cols / 2,
    }
}

/// Number of palettes of a `[rows, _]` tensor with `group_size` rows per palette.
pub const fn groups(rows: usize, group_size: usize) -> usize {
    if group_size == 0 {
        0
    } else {
        rows.div_ceil(group_size)
    }
}

/// Packs one row of indices (each < palette_len) into its byte layout.
pub fn pack_row(dtype: DType, idx: &[u8], out: &mut [u8]) {
    let bb = row_bytes(dtype, 32);
    for (ib, ob) in idx.chunks_exact(32).zip(out.chunks_exact_mut(bb)) {
        for j in 0..16 {
            ob[j] = (ib[j] & 15) | ((ib[j + 16] & 15) << 4);
        }
        if dtype == DType::Lut6 {
            for m in 0..8 {
                let hi = |v: u8| (v >> 4) & 3;
                ob[16 + m] = hi(ib[m])
                    | (hi(ib[m + 8]) << 2)
                    | (hi(ib[m + 16]) << 4)
                    | (hi(ib[m + 24]) << 6);
            }
        }
    }
}

/// Unpacks one row's bytes into indices (the inverse of [`pack_row`]).
pub fn unpack_row(dtype: DType, bytes: &[u8], idx: &mut [u8]) {
    let bb = row_bytes(dtype, 32);
    for (ob, ib) in idx.chunks_exact_mut(32).zip(bytes.chunks_exact(bb)) {
        for j in 0..16 {
            ob[j] = ib[j] & 15;
            ob[j + 16] = ib[j] >> 4;
        }
        if dtype == DType::Lut6 {
            for m in 0..8 {
                let h = ib[16 + m];
                ob[m] |= (h & 3) << 4;
                ob[m + 8] |= ((h >> 2) & 3) << 4;
                ob[m + 16] |= ((h >> 4) & 3) << 4;
                ob[m + 24] |= ((h >> 6) & 3) << 4;
            }
        }
    }
}

/// Builds the tensor bytes from per-value indices (row-major, `rows*cols`) and the palettes
/// (`groups(rows, gs) * palette_len` values).
pub fn pack(
    dtype: DType,
    indices: &[u8],
    palettes: &[f16],
    shape: &[usize],
    group_size: usize,
) -> Result<Vec<u8>, TensorError> {
    let len = dtype.byte_len(shape, group_size)?;
    let (rows, cols) = super::rows_cols(shape);
    let k = palette_len(dtype);
    if indices.len() != rows * cols || palettes.len() != groups(rows, group_size) * k {
        return Err(TensorError::Layout(format!(
            "{dtype} {shape:?}: {} indices / {} palette values do not fit",
            indices.len(),
            palettes.len()
        )));
    }
    if let Some(bad) = indices.iter().find(|&&i| i as usize >= k) {
        return Err(TensorError::Layout(format!(
            "{dtype} index {bad} is out of the palette (0..{k})"
        )));
    }
    let rb = row_bytes(dtype, cols);
    let mut out = vec![0u8; len];
    let (payload, pal) = out.split_at_mut(rows * rb);
    if cols > 0 {
        for (ir, or) in indices.chunks_exact(cols).zip(payload.chunks_exact_mut(rb)) {
            pack_row(dtype, ir, or);
        }
    }
    for (o, p) in pal.chunks_exact_mut(2).zip(palettes) {
        o.copy_from_slice(&p.to_le_bytes());
    }
    Ok(out)
}

/// Reference encoder: per group, a uniform palette over [min, max] and nearest-entry indices.
pub fn quantize_uniform(
    dtype: DType,
    values: &[f32],
    shape: &[usize],
    group_size: usize,
) -> Result<Vec<u8>, TensorError> {
    let (rows, cols) = super::rows_cols(shape);
    let k = palette_len(dtype);
    let mut idx = vec![0u8; values.len()];
    let mut pals = Vec::with_capacity(groups(rows, group_size) * k);
    if group_size > 0 && cols > 0 {
        for (g, src) in values.chunks(group_size * cols).enumerate() {
            let (lo, hi) = src
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            let step = if hi > lo {
                (hi - lo) / (k - 1) as f32
            } else {
                0.0
            };
            let pal: Vec<f16> = (0..k)
                .map(|i| f16::from_f32(lo + step * i as f32))
                .collect();
            let pf: Vec<f32> = pal.iter().map(|p| p.to_f32()).collect();
            for (d, &v) in idx[g * group_size * cols..].iter_mut().zip(src) {
                *d = nearest(&pf, v);
            }
            pals.extend(pal);
        }
    }
    pack(dtype, &idx, &pals, shape, group_size)
}

/// Index of the palette entry closest to `v` (first on ties).
pub fn nearest(palette: &[f32], v: f32) -> u8 {
    let mut best = (f32::INFINITY, 0u8);
    for (i, &p) in palette.iter().enumerate() {
        let e = (p - v).abs();
        if e < best.0 {
            best = (e, i as u8);
        }
    }
    best.1
}

/// Dequantizes row `row` given the whole index payload and this row's palette.
pub fn dequantize_row(
    dtype: DType,
    payload: &[u8],
    palette: &[f16],
    row: usize,
    cols: usize,
    out: &mut [f32],
) {
    let rb = row_bytes(dtype, cols);
    let mut idx = vec![0u8; cols];
    unpack_row(dtype, &payload[row * rb..(row + 1) * rb], &mut idx);
    for (o, &i) in out.iter_mut().zip(&idx) {
        *o = palette[i as usize].to_f32();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{TensorView, encode};

    #[test]
    fn pack_unpack_round_trip() {
        for dtype in [DType::Lut4, DType::Lut6] {
            let k = palette_len(dtype);
            let idx: Vec<u8> = (0..96).map(|i| ((i * 37 + 5) % k) as u8).collect();
            let mut bytes = vec![0u8; row_bytes(dtype, 96)];
            pack_row(dtype, &idx, &mut bytes);
            let mut back = vec![0u8; 96];
            unpack_row(dtype, &bytes, &mut back);
            assert_eq!(back, idx, "{dtype}");
        }
    }

    /// Hand-checked bytes of the documented layout.
    #[test]
    fn layout_bytes() {
        let mut idx = [0u8; 32];
        idx[0] = 0x3f; // low 15, high 3
        idx[16] = 0x21; // low 1, high 2
        idx[9] = 0x10; // low 0, high 1
        let mut b = [0u8; 24];
        pack_row(DType::Lut6, &idx, &mut b);
        assert_eq!(b[0], 0x1f);
        assert_eq!(b[16], 3 | (2 << 4));
        assert_eq!(b[17], 1 << 2);
        let mut b4 = [0u8; 16];
        pack_row(DType::Lut4, &idx, &mut b4);
        assert_eq!(b4[0], 0x1f);
    }

    #[test]
    fn byte_len_and_views() {
        assert_eq!(
            DType::Lut4.byte_len(&[10, 64], 4).unwrap(),
            10 * 32 + 3 * 16 * 2
        );
        assert_eq!(
            DType::Lut6.byte_len(&[10, 64], 10).unwrap(),
            10 * 48 + 64 * 2
        );
        assert!(DType::Lut4.byte_len(&[10, 48], 4).is_err());
        assert!(DType::Lut6.byte_len(&[10, 64], 0).is_err());
        for dtype in [DType::Lut4, DType::Lut6] {
            let shape = [5usize, 64];
            let x: Vec<f32> = (0..320).map(|i| (i as f32 * 0.71).sin()).collect();
            let bytes = encode(dtype, &x, &shape, 2).unwrap();
            let v = TensorView::new(dtype, &shape, 2, &bytes).unwrap();
            let (idx, pal) = v.lut_parts().unwrap();
            assert_eq!(idx.len(), 5 * row_bytes(dtype, 64));
            assert_eq!(pal.len(), 3 * palette_len(dtype));
            let y = v.to_f32_vec();
            // uniform palette over [-1, 1]: half a step of error (plus f16 rounding)
            let step = 2.0 / (palette_len(dtype) - 1) as f32;
            for (a, b) in x.iter().zip(&y) {
                assert!((a - b).abs() <= step * 0.5 + 2e-3, "{dtype}: {a} vs {b}");
            }
            assert!(TensorView::new(dtype, &shape, 2, &bytes[1..]).is_err());
        }
    }

    #[test]
    fn exact_when_values_are_palette_entries() {
        let pal: Vec<f16> = (0..64)
            .map(|i| f16::from_f32(i as f32 * 0.25 - 8.0))
            .collect();
        let idx: Vec<u8> = (0..4 * 32).map(|i| (i * 13 % 64) as u8).collect();
        let shape = [4usize, 32];
        let bytes = pack(DType::Lut6, &idx, &pal, &shape, 4).unwrap();
        let v = TensorView::new(DType::Lut6, &shape, 4, &bytes).unwrap();
        let y = v.to_f32_vec();
        for (o, &i) in y.iter().zip(&idx) {
            assert_eq!(*o, pal[i as usize].to_f32());
        }
        let bad = vec![16u8; 128];
        assert!(pack(DType::Lut4, &bad, &pal[..16], &shape, 4).is_err());
    }
}
