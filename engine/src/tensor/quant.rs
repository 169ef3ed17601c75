//! Reference (scalar) quantizers and dequantizers for the q8 and q4 layouts described in
//! [`super`]. The SIMD kernels in `kernels::cpu` are tested against these.

use super::DType;
use half::f16;

/// Quantizes a row-major `[rows, cols]` matrix. Output: values then f16 scales.
pub fn quantize(dtype: DType, values: &[f32], rows: usize, cols: usize, gs: usize) -> Vec<u8> {
    let gpr = cols / gs;
    let payload = match dtype {
        DType::Q8 => rows * cols,
        DType::Q4 => rows * cols / 2,
        _ => panic!("quantize: {dtype} is not a quantized dtype"),
    };
    let mut out = vec![0u8; payload + rows * gpr * 2];
    let (data, scales) = out.split_at_mut(payload);
    for r in 0..rows {
        for g in 0..gpr {
            let src = &values[r * cols + g * gs..r * cols + (g + 1) * gs];
            let scale = match dtype {
                DType::Q8 => quantize_group_q8(src, &mut data[r * cols + g * gs..][..gs]),
                _ => quantize_group_q4(src, &mut data[(r * cols + g * gs) / 2..][..gs / 2]),
            };
            let i = (r * gpr + g) * 2;
            scales[i..i + 2].copy_from_slice(&scale.to_le_bytes());
        }
    }
    out
}

/// int8: scale = max|x| / 127, q = round(x / scale).
fn quantize_group_q8(src: &[f32], dst: &mut [u8]) -> f16 {
    let amax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = f16::from_f32(amax / 127.0);
    let s = scale.to_f32();
    let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
    for (d, v) in dst.iter_mut().zip(src) {
        *d = ((v * inv).round().clamp(-127.0, 127.0) as i8) as u8;
    }
    scale
}

/// int4 with a searched scale (as llama.cpp's `make_qx_quants`): the value of largest magnitude
/// is mapped near -8 with a few slightly different step sizes; for each, the least-squares scale
/// of the rounded levels is refitted, and the candidate with the smallest squared error wins.
/// Then q = clamp(round(x / scale) + 8, 0, 15) with the winning (f16-rounded) scale.
fn quantize_group_q4(src: &[f32], dst: &mut [u8]) -> f16 {
    let mut m = 0f32;
    for &v in src {
        if v.abs() > m.abs() {
            m = v;
        }
    }
    let mut best = (f32::INFINITY, f16::ZERO);
    if m != 0.0 {
        for k in -5..=5 {
            let iscale = -(8.0 + 0.2 * k as f32) / m;
            let (mut sxq, mut sqq) = (0f32, 0f32);
            for &x in src {
                let q = (x * iscale).round().clamp(-8.0, 7.0);
                sxq += x * q;
                sqq += q * q;
            }
            if sqq == 0.0 {
                continue;
            }
            let d = f16::from_f32(sxq / sqq);
            let err = group_error_q4(src, d.to_f32());
            if err < best.0 {
                best = (err, d);
            }
        }
    }
    let scale = best.1;
    let s = scale.to_f32();
    let inv = if s != 0.0 { 1.0 / s } else { 0.0 };
    for (b, block) in src.chunks(32).enumerate() {
        for j in 0..16 {
            let lo = ((block[j] * inv).round() + 8.0).clamp(0.0, 15.0) as u8;
            let hi = ((block[j + 16] * inv).round() + 8.0).clamp(0.0, 15.0) as u8;
            dst[b * 16 + j] = lo | (hi << 4);
        }
    }
    scale
}

/// Squared error of a group quantized to int4 with scale `d` (nearest level, clamped).
fn group_error_q4(src: &[f32], d: f32) -> f32 {
    if d == 0.0 {
        return src.iter().map(|x| x * x).sum();
    }
    let inv = 1.0 / d;
    src.iter()
        .map(|&x| {
            let q = (x * inv).round().clamp(-8.0, 7.0);
            let e = x - q * d;
            e * e
        })
        .sum()
}

/// Dequantizes one row. `values` is the whole payload of the tensor, `scales` this row's scales.
pub fn dequantize_row(
    dtype: DType,
    values: &[u8],
    scales: &[f16],
    row: usize,
    cols: usize,
    gs: usize,
    out: &mut [f32],
) {
    match dtype {
        DType::Q8 => {
            let src = &values[row * cols..(row + 1) * cols];
            for (g, (o, q)) in out.chunks_mut(gs).zip(src.chunks(gs)).enumerate() {
                let s = scales[g].to_f32();
                for (o, &q) in o.iter_mut().zip(q) {
                    *o = (q as i8) as f32 * s;
                }
            }
        }
        DType::Q4 => {
            let src = &values[row * cols / 2..(row + 1) * cols / 2];
            for (g, (o, q)) in out.chunks_mut(gs).zip(src.chunks(gs / 2)).enumerate() {
                let s = scales[g].to_f32();
                for (ob, qb) in o.chunks_mut(32).zip(q.chunks(16)) {
                    for j in 0..16 {
                        ob[j] = ((qb[j] & 0x0f) as i32 - 8) as f32 * s;
                        ob[j + 16] = ((qb[j] >> 4) as i32 - 8) as f32 * s;
                    }
                }
            }
        }
        _ => panic!("dequantize_row: {dtype} is not a quantized dtype"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{TensorView, encode};

    fn sample(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (i as f32 * 0.37).sin() * 3.0 + (i % 7) as f32 * 0.1)
            .collect()
    }

    #[test]
    fn round_trip_error_bounds() {
        let (rows, cols) = (3, 128);
        let x = sample(rows * cols);
        // q4: the searched scale may clip the largest value by up to one step, so its bound is looser.
        for (dtype, gs, levels) in [(DType::Q8, 32, 127.0), (DType::Q4, 64, 3.5)] {
            let shape = [rows, cols];
            let bytes = encode(dtype, &x, &shape, gs).unwrap();
            let v = TensorView::new(dtype, &shape, gs, &bytes).unwrap();
            let y = v.to_f32_vec();
            for (g, (xs, ys)) in x.chunks(gs).zip(y.chunks(gs)).enumerate() {
                let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
                // half a quantization step, plus f16 rounding of the scale
                let bound = amax / levels * 0.5 + amax * 2e-3;
                for (a, b) in xs.iter().zip(ys) {
                    assert!(
                        (a - b).abs() <= bound,
                        "{dtype} group {g}: {a} vs {b} > {bound}"
                    );
                }
            }
        }
    }

    #[test]
    fn float_round_trip() {
        let x = sample(64);
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let shape = [2, 32];
            let bytes = encode(dtype, &x, &shape, 0).unwrap();
            let y = TensorView::new(dtype, &shape, 0, &bytes)
                .unwrap()
                .to_f32_vec();
            let tol = match dtype {
                DType::F32 => 0.0,
                DType::F16 => 2e-3,
                _ => 2e-2,
            };
            for (a, b) in x.iter().zip(&y) {
                assert!((a - b).abs() <= tol * a.abs().max(1.0));
            }
        }
    }

    #[test]
    fn searched_q4_scale_beats_plain_max_scale() {
        let x = sample(32 * 64);
        let (mut searched, mut plain) = (0f32, 0f32);
        for g in x.chunks(32) {
            let mut dst = [0u8; 16];
            let d = quantize_group_q4(g, &mut dst).to_f32();
            searched += group_error_q4(g, d);
            let m = g
                .iter()
                .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
            plain += group_error_q4(g, f16::from_f32(m / -8.0).to_f32());
        }
        assert!(searched <= plain, "{searched} > {plain}");
        assert!(
            searched < 0.9 * plain,
            "search should help on smooth data: {searched} vs {plain}"
        );
    }

    #[test]
    fn layout_errors() {
        assert!(DType::Q4.byte_len(&[4, 48], 32).is_err());
        assert!(DType::Q8.byte_len(&[4, 64], 48).is_err());
        assert_eq!(DType::Q4.byte_len(&[2, 64], 32).unwrap(), 64 + 8);
    }
}
