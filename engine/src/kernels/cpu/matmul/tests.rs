//! Every ISA level against the scalar reference (dequantize with `tensor::quant`, f64 dot).
//!
//! Tolerances:
//! - f32/f16/bf16 weights: the exact f64 dot of the (converted) values, up to f32 summation
//!   order: |err| <= 1e-5 * sum|x*w|.
//! - q8/q4 weights with int8 activations: each activation moves by at most half its block's
//!   step (scale/2), so |err| <= sum_i |w_i| * scale_block(i) / 2 (+ f32 rounding). On top of
//!   that bound, the RMS relative error of the whole output vs the f32 result is checked to be
//!   below 2e-2: these random inputs (uncorrelated, with 6x outliers that widen their block's
//!   step) measure about 1e-2; real activations give a few 1e-3.
//! - Every SIMD level against the scalar int8 kernel: the same integer sums, so only f32
//!   rounding: |err| <= 1e-5 * sum|x*w|.

use super::*;
use crate::tensor::encode;

/// Deterministic pseudo-random values in about [-1, 1] with some larger outliers.
fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|i| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0;
            if i % 97 == 0 { u * 6.0 } else { u }
        })
        .collect()
}

struct Case {
    dtype: DType,
    gs: usize,
    n: usize,
    k: usize,
    t: usize,
}

fn check(case: &Case, n0: usize, n1: usize) {
    let Case { dtype, gs, n, k, t } = *case;
    let shape = [n, k];
    let wv = rand_vec(n * k, (n * 31 + k * 7 + t) as u64);
    let x = rand_vec(t * k, (k * 13 + t) as u64 ^ 0x5555);
    let bytes = encode(dtype, &wv, &shape, gs).unwrap();
    // keep the data 4-byte aligned whatever Vec<u8> gave us
    let aligned: Vec<u32> = bytes
        .chunks(4)
        .map(|c| {
            let mut b = [0u8; 4];
            b[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(b)
        })
        .collect();
    let data = &bytemuck::cast_slice::<u32, u8>(&aligned)[..bytes.len()];
    let w = TensorView::new(dtype, &shape, gs, data).unwrap();
    let wf = w.to_f32_vec();
    let nn = n1 - n0;

    // quantized activations as the kernels see them (for the error bound)
    let act_scale: Vec<f32> = x
        .chunks(32)
        .map(|b| b.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0)
        .collect();

    let mut refs = vec![0f32; t * nn];
    let mut bound = vec![0f32; t * nn];
    let mut mag = vec![0f32; t * nn];
    for ti in 0..t {
        for r in n0..n1 {
            let (mut s, mut m, mut e) = (0f64, 0f64, 0f64);
            for i in 0..k {
                let (a, b) = (x[ti * k + i] as f64, wf[r * k + i] as f64);
                s += a * b;
                m += (a * b).abs();
                e += b.abs() * act_scale[(ti * k + i) / 32] as f64 * 0.5;
            }
            refs[ti * nn + r - n0] = s as f32;
            mag[ti * nn + r - n0] = m as f32;
            bound[ti * nn + r - n0] = e as f32;
        }
    }

    let mut scalar = vec![0f32; t * nn];
    matmul_rows_isa(Isa::Scalar, &x, t, &w, n0, n1, &mut scalar);
    for isa in isa::available() {
        let mut out = vec![f32::NAN; t * nn];
        matmul_rows_isa(isa, &x, t, &w, n0, n1, &mut out);
        let (mut num, mut den) = (0f64, 0f64);
        for i in 0..t * nn {
            let (o, r, s) = (out[i], refs[i], scalar[i]);
            let tol = if dtype.is_quantized() {
                bound[i] * 1.001 + 1e-5 * mag[i]
            } else {
                1e-5 * mag[i] + 1e-30
            };
            assert!(
                (o - r).abs() <= tol,
                "{isa:?} {dtype} gs{gs} n{n} k{k} t{t} [{i}]: {o} vs ref {r} (tol {tol})"
            );
            assert!(
                (o - s).abs() <= 1e-5 * mag[i] + 1e-30,
                "{isa:?} {dtype} gs{gs} n{n} k{k} t{t} [{i}]: {o} vs scalar {s}"
            );
            num += ((o - r) as f64).powi(2);
            den += (r as f64).powi(2);
        }
        let rel = (num / den.max(1e-30)).sqrt();
        let lim = if dtype.is_quantized() { 2e-2 } else { 1e-6 };
        assert!(
            rel <= lim,
            "{isa:?} {dtype} gs{gs} k{k} t{t}: relative error {rel}"
        );
    }
}

#[test]
fn matmul_all_dtypes_all_isas() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    pool.install(|| {
        for &t in &[1, 2, 3, 5, 8] {
            for &(n, k) in &[
                (37, 32),
                (67, 96),
                (101, 160),
                (23, 288),
                (45, 640),
                (259, 256),
                (13, 4096),
            ] {
                for dtype in [DType::F32, DType::F16, DType::BF16] {
                    check(
                        &Case {
                            dtype,
                            gs: 0,
                            n,
                            k,
                            t,
                        },
                        0,
                        n,
                    );
                }
                for dtype in [DType::Q8, DType::Q4] {
                    for gs in [32, 64, 96, 128] {
                        if k % gs == 0 {
                            check(&Case { dtype, gs, n, k, t }, 0, n);
                        }
                    }
                }
            }
        }
    });
}

#[test]
fn matmul_float_odd_k() {
    for &t in &[1, 2, 5] {
        for &(n, k) in &[(11, 1), (11, 37), (9, 100), (6, 15)] {
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                check(
                    &Case {
                        dtype,
                        gs: 0,
                        n,
                        k,
                        t,
                    },
                    0,
                    n,
                );
            }
        }
    }
}

#[test]
fn matmul_rows_slice_and_many_threads() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    pool.install(|| {
        for dtype in [DType::F16, DType::Q8, DType::Q4] {
            let gs = if dtype.is_quantized() { 64 } else { 0 };
            check(
                &Case {
                    dtype,
                    gs,
                    n: 1031,
                    k: 128,
                    t: 3,
                },
                17,
                1000,
            );
            check(
                &Case {
                    dtype,
                    gs,
                    n: 1031,
                    k: 128,
                    t: 1,
                },
                0,
                1031,
            );
        }
    });
}

#[test]
fn matmul_public_entry_matches_isa_entry() {
    let (n, k, t) = (9, 64, 2);
    let shape = [n, k];
    let wv = rand_vec(n * k, 3);
    let x = rand_vec(t * k, 4);
    let bytes = encode(DType::Q8, &wv, &shape, 32).unwrap();
    let w = TensorView::new(DType::Q8, &shape, 32, &bytes).unwrap();
    let mut a = vec![0f32; t * n];
    let mut b = vec![0f32; t * n];
    matmul(&x, t, &w, &mut a);
    matmul_rows_isa(isa::detected(), &x, t, &w, 0, n, &mut b);
    assert_eq!(a, b);
}
