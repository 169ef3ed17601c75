//! Several q8/q4 matmuls over the same activations in one pass (q/k/v, gate/up).
//!
//! Why: [`matmul`](super::matmul) quantizes its activations on the calling thread and opens one
//! rayon region per weight. Sharing `x` between N weights, this quantizes once (split over the
//! pool's threads when there are many tokens, as in prefill) and runs the row chunks of all N
//! weights in a single parallel region, so decode forks/joins once per group instead of N times.
//! Numerics are those of N separate [`matmul`](super::matmul) calls exactly: the same int8
//! activations, the same row kernels, the same per-row summation order.

use super::acts::{self, QActs};
use super::isa::{self, Isa};
use super::{OutPtr, lut, matmul_rows_isa, quant};
use crate::tensor::{DType, TensorView};
use rayon::prelude::*;
use std::cell::RefCell;

/// Tokens at and above which the activations are quantized in parallel.
const PAR_FILL_TOKENS: usize = 8;

thread_local! {
    static SHARED: RefCell<QActs> = const { RefCell::new(QActs {
        k: 0,
        nb: 0,
        qs: Vec::new(),
        scale: Vec::new(),
        corr: Vec::new(),
        interleaved: false,
    }) };
}

/// `outs[j][t, n_j] = x[t, k] · ws[j]ᵀ` for every `j`: the same result as N calls of
/// [`matmul`](super::matmul), one activation quantization and one parallel region when all
/// weights are q8/q4 of the same dtype and width (else it simply makes the N calls).
pub fn matmul_many<const N: usize>(
    x: &[f32],
    t: usize,
    ws: [&TensorView<'_>; N],
    outs: [&mut [f32]; N],
) {
    let isa = isa::detected();
    let first = ws[0];
    let k = first.cols();
    if first.dtype.is_lut()
        && k > 0
        && t > 0
        && ws.iter().all(|w| w.dtype == first.dtype && w.cols() == k)
    {
        matmul_many_lut(isa, x, t, ws, outs);
        return;
    }
    let fused = matches!(first.dtype, DType::Q8 | DType::Q4)
        && k > 0
        && t > 0
        && ws.iter().all(|w| w.dtype == first.dtype && w.cols() == k);
    if !fused {
        for (w, out) in ws.into_iter().zip(outs) {
            matmul_rows_isa(isa, x, t, w, 0, w.rows(), out);
        }
        return;
    }
    assert_eq!(
        x.len(),
        t * k,
        "matmul_many: x has {} values, expected {t}*{k}",
        x.len()
    );
    for (w, out) in ws.iter().zip(outs.iter()) {
        assert_eq!(out.len(), t * w.rows(), "matmul_many: out length");
    }
    let wq: [quant::QuantWeights<'_>; N] = std::array::from_fn(|j| {
        let (values, scales) = ws[j].quant_parts().expect("quantized dtype has parts");
        quant::QuantWeights {
            dtype: ws[j].dtype,
            values,
            scales,
            k,
            gs: ws[j].group_size,
        }
    });
    let mut outs = outs;
    let dst: [OutPtr; N] = std::array::from_fn(|j| OutPtr {
        ptr: outs[j].as_mut_ptr(),
        stride: ws[j].rows(),
        n0: 0,
    });
    let rows: [usize; N] = std::array::from_fn(|j| ws[j].rows());
    let run = |a: &QActs| {
        let threads = rayon::current_num_threads().max(1);
        let min_chunk = (65536 / (k * t).max(1)).clamp(4, 256);
        // Same chunking as par_rows, per weight.
        let chunk: [usize; N] =
            std::array::from_fn(|j| rows[j].div_ceil(threads * 4).max(min_chunk).max(1));
        let count: [usize; N] = std::array::from_fn(|j| rows[j].div_ceil(chunk[j]));
        let total: usize = count.iter().sum();
        let one = |c: usize| {
            let mut c = c;
            for j in 0..N {
                if c < count[j] {
                    let r0 = c * chunk[j];
                    quant::rows(isa, &wq[j], a, r0, (r0 + chunk[j]).min(rows[j]), dst[j]);
                    return;
                }
                c -= count[j];
            }
        };
        if threads == 1 || total <= 1 {
            (0..total).for_each(one);
        } else {
            (0..total).into_par_iter().for_each(one);
        }
    };
    let dtype = first.dtype;
    if t < PAR_FILL_TOKENS || !k.is_multiple_of(32) || rayon::current_num_threads() <= 1 {
        acts::with_quantized(isa, dtype, x, t, k, run);
        return;
    }
    SHARED.with(|cell| match cell.try_borrow_mut() {
        Ok(mut a) => {
            fill_parallel(&mut a, isa, dtype, x, t, k);
            run(&a)
        }
        Err(_) => {
            let mut a = QActs {
                k: 0,
                nb: 0,
                qs: Vec::new(),
                scale: Vec::new(),
                corr: Vec::new(),
                interleaved: false,
            };
            fill_parallel(&mut a, isa, dtype, x, t, k);
            run(&a)
        }
    });
}

/// lut weights: the row chunks of all N weights in one parallel region (no activation
/// quantization to share, only the fork/join).
fn matmul_many_lut<const N: usize>(
    isa: Isa,
    x: &[f32],
    t: usize,
    ws: [&TensorView<'_>; N],
    mut outs: [&mut [f32]; N],
) {
    let k = ws[0].cols();
    assert_eq!(x.len(), t * k, "matmul_many: x length");
    for (w, out) in ws.iter().zip(outs.iter()) {
        assert_eq!(out.len(), t * w.rows(), "matmul_many: out length");
    }
    let wl: [lut::LutWeights<'_>; N] = std::array::from_fn(|j| lut::LutWeights::new(ws[j]));
    let dst: [OutPtr; N] = std::array::from_fn(|j| OutPtr {
        ptr: outs[j].as_mut_ptr(),
        stride: ws[j].rows(),
        n0: 0,
    });
    let rows: [usize; N] = std::array::from_fn(|j| ws[j].rows());
    let threads = rayon::current_num_threads().max(1);
    let min_chunk = (65536 / (k * t).max(1)).clamp(4, 256);
    let chunk: [usize; N] =
        std::array::from_fn(|j| rows[j].div_ceil(threads * 4).max(min_chunk).max(1));
    let count: [usize; N] = std::array::from_fn(|j| rows[j].div_ceil(chunk[j]));
    let total: usize = count.iter().sum();
    let one = |c: usize| {
        let mut c = c;
        for j in 0..N {
            if c < count[j] {
                let r0 = c * chunk[j];
                lut::rows(isa, &wl[j], x, t, r0, (r0 + chunk[j]).min(rows[j]), dst[j]);
                return;
            }
            c -= count[j];
        }
    };
    if threads == 1 || total <= 1 {
        (0..total).for_each(one);
    } else {
        (0..total).into_par_iter().for_each(one);
    }
}

/// Quantizes `x` [t, k] into `a`, token ranges in parallel; each range goes through the serial
/// quantizer ([`acts::with_quantized`]) so the values are bit-identical to it.
fn fill_parallel(a: &mut QActs, isa: Isa, dtype: DType, x: &[f32], t: usize, k: usize) {
    let nb = k / 32;
    a.k = k;
    a.nb = nb;
    a.qs.resize(t * k, 0);
    a.scale.resize(t * nb, 0.0);
    a.interleaved = isa == Isa::Avx512Vnni && dtype == DType::Q4;
    let need_corr = isa == Isa::Avx512Vnni || (isa == Isa::Avx2 && dtype == DType::Q4);
    // Sized even when unused, so the token ranges below zip evenly (no allocation after the
    // first call of a shape).
    a.corr.resize(a.corr.len().max(t * nb), 0.0);
    let per = t.div_ceil(rayon::current_num_threads().max(1) * 2).max(1);
    a.qs[..t * k]
        .par_chunks_mut(per * k)
        .zip(a.scale[..t * nb].par_chunks_mut(per * nb))
        .zip(x.par_chunks(per * k))
        .zip(a.corr[..t * nb].par_chunks_mut(per * nb))
        .for_each(|(((qs, scale), xs), corr)| {
            let n = xs.len() / k;
            acts::with_quantized(isa, dtype, xs, n, k, |q| {
                qs.copy_from_slice(&q.qs[..n * k]);
                scale.copy_from_slice(&q.scale[..n * nb]);
                if need_corr {
                    corr.copy_from_slice(&q.corr[..n * nb]);
                }
            });
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::encode;

    fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005) | 1;
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

    /// Encoded weights, 4-byte aligned.
    fn weights(dtype: DType, n: usize, k: usize, seed: u64) -> Vec<u32> {
        let bytes = encode(dtype, &rand_vec(n * k, seed), &[n, k], 32).unwrap();
        bytes
            .chunks(4)
            .map(|c| {
                let mut b = [0u8; 4];
                b[..c.len()].copy_from_slice(c);
                u32::from_le_bytes(b)
            })
            .collect()
    }

    /// The fused call gives bit-identical results to separate matmuls (decode and prefill
    /// shapes, on 1 and 2 threads).
    #[test]
    fn many_equals_separate_matmuls() {
        // (lut: group_size 32 = 32 rows per palette)
        for dtype in [DType::Q4, DType::Q8, DType::F32, DType::Lut4, DType::Lut6] {
            for t in [1, 3, 8, 21] {
                for threads in [1, 2] {
                    let k = 96;
                    let ns = [40, 24, 7];
                    let raw: Vec<(Vec<u32>, usize)> = ns
                        .iter()
                        .enumerate()
                        .map(|(j, &n)| (weights(dtype, n, k, 7 + j as u64), n))
                        .collect();
                    let enc_len =
                        |n: usize| encode(dtype, &vec![0.0; n * k], &[n, k], 32).unwrap().len();
                    let shapes: Vec<[usize; 2]> = ns.iter().map(|&n| [n, k]).collect();
                    let ws: Vec<TensorView<'_>> = raw
                        .iter()
                        .zip(&shapes)
                        .map(|((a, n), shape)| {
                            let data = &bytemuck::cast_slice::<u32, u8>(a)[..enc_len(*n)];
                            TensorView::new(dtype, shape, 32, data).unwrap()
                        })
                        .collect();
                    let x = rand_vec(t * k, 99 + t as u64);
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    pool.install(|| {
                        let want: Vec<Vec<f32>> = ws
                            .iter()
                            .map(|w| {
                                let mut o = vec![0.0; t * w.rows()];
                                super::super::matmul(&x, t, w, &mut o);
                                o
                            })
                            .collect();
                        let mut got: Vec<Vec<f32>> =
                            ns.iter().map(|&n| vec![f32::NAN; t * n]).collect();
                        let [a, b, c] = &mut got[..] else {
                            unreachable!()
                        };
                        matmul_many(&x, t, [&ws[0], &ws[1], &ws[2]], [a, b, c]);
                        assert_eq!(got, want, "{dtype:?} t={t} threads={threads}");
                        let mut one = vec![f32::NAN; t * ns[0]];
                        matmul_many(&x, t, [&ws[0]], [&mut one]);
                        assert_eq!(one, want[0]);
                    });
                }
            }
        }
    }
}
