//! Dequantization of ggml tensor encodings to f32, written to give bit-for-bit the values of
//! ggml's `dequantize_row_*` in ggml-quants.c (same block layouts, same float operation order,
//! no fused multiply-add).
//!
//! Block layouts (bytes, little-endian; d/dmin are f16 unless noted):
//! - Q4_0 (32): d, qs[16] (low nibbles = elements 0..16, high = 16..32), value (q - 8) * d
//! - Q4_1 (32): d, m, qs[16], value q * d + m
//! - Q5_0 (32): d, qh u32 (5th bits), qs[16], value (q - 16) * d
//! - Q5_1 (32): d, m, qh u32, qs[16], value q * d + m
//! - Q8_0 (32): d, qs i8[32]
//! - Q2_K (256): scales[16] (4-bit scale | 4-bit min), qs[64], d, dmin
//! - Q3_K (256): hmask[32], qs[64], scales[12] (6-bit, packed), d
//! - Q4_K (256): d, dmin, scales[12] (8 6-bit scales + 8 6-bit mins), qs[128]
//! - Q5_K (256): d, dmin, scales[12], qh[32], qs[128]
//! - Q6_K (256): ql[128], qh[64], scales i8[16], d
//! - Q8_K (256): d f32, qs i8[256], bsums i16[16]

use super::types::GgmlType;
use half::{bf16, f16};
use rayon::prelude::*;

/// Blocks per parallel work item.
const BLOCKS_PER_TASK: usize = 512;

type Kernel = fn(&[u8], &mut [f32]);

/// Dequantize `n` elements of type `ty` from `bytes` (exactly `n / block * block_bytes` bytes).
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>, String> {
    let mut out = vec![0f32; n];
    dequantize_into(ty, bytes, &mut out)?;
    Ok(out)
}

/// Dequantize into a caller-provided buffer whose length is the element count.
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), String> {
    let kernel = kernel(ty).ok_or_else(|| format!("dequantizing {ty} is not supported"))?;
    let (bs, bb) = ty.block();
    let n = out.len();
    if !n.is_multiple_of(bs) {
        return Err(format!(
            "{n} elements is not a multiple of the {ty} block size {bs}"
        ));
    }
    let expected = n / bs * bb;
    if bytes.len() != expected {
        return Err(format!(
            "{n} {ty} elements need {expected} bytes, got {}",
            bytes.len()
        ));
    }
    out.par_chunks_mut(bs * BLOCKS_PER_TASK)
        .zip(bytes.par_chunks(bb * BLOCKS_PER_TASK))
        .for_each(|(dst, src)| kernel(src, dst));
    Ok(())
}

/// Whether [`dequantize`] handles this type.
pub fn is_supported(ty: GgmlType) -> bool {
    kernel(ty).is_some()
}

fn kernel(ty: GgmlType) -> Option<Kernel> {
    Some(match ty {
        GgmlType::F32 => f32_,
        GgmlType::F16 => f16_,
        GgmlType::BF16 => bf16_,
        GgmlType::Q4_0 => q4_0,
        GgmlType::Q4_1 => q4_1,
        GgmlType::Q5_0 => q5_0,
        GgmlType::Q5_1 => q5_1,
        GgmlType::Q8_0 => q8_0,
        GgmlType::Q2_K => q2_k,
        GgmlType::Q3_K => q3_k,
        GgmlType::Q4_K => q4_k,
        GgmlType::Q5_K => q5_k,
        GgmlType::Q6_K => q6_k,
        GgmlType::Q8_K => q8_k,
        _ => return None,
    })
}

#[inline(always)]
fn h(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Run `f` over each (block bytes, block values) pair.
#[inline(always)]
fn blocks(
    src: &[u8],
    dst: &mut [f32],
    block_bytes: usize,
    block_len: usize,
    f: impl Fn(&[u8], &mut [f32]),
) {
    for (b, y) in src
        .chunks_exact(block_bytes)
        .zip(dst.chunks_exact_mut(block_len))
    {
        f(b, y);
    }
}

fn f32_(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(4).zip(dst.iter_mut()) {
        *y = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

fn f16_(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(2).zip(dst.iter_mut()) {
        *y = f16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}

fn bf16_(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(2).zip(dst.iter_mut()) {
        *y = bf16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}

fn q4_0(src: &[u8], dst: &mut [f32]) {
    blocks(src, dst, 18, 32, |b, y| {
        let d = h(b, 0);
        let qs = &b[2..18];
        for j in 0..16 {
            y[j] = ((qs[j] & 0x0F) as i32 - 8) as f32 * d;
            y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    })
}

fn q4_1(src: &[u8], dst: &mut [f32]) {
    blocks(src, dst, 20, 32, |b, y| {
        let d = h(b, 0);
        let m = h(b, 2);
        let qs = &b[4..20];
        for j in 0..16 {
            y[j] = (qs[j] & 0x0F) as f32 * d + m;
            y[j + 16] = (qs[j] >> 4) as f32 * d + m;
        }
    })
}

fn q5_0(src: &[u8], dst: &mut [f32]) {
    blocks(src, dst, 22, 32, |b, y| {
        let d = h(b, 0);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = &b[6..22];
        for j in 0..16 {
            let xh0 = ((qh >> j) << 4) & 0x10;
            let xh1 = (qh >> (j + 12)) & 0x10;
            let x0 = ((qs[j] as u32 & 0x0F) | xh0) as i32 - 16;
            let x1 = ((qs[j] as u32 >> 4) | xh1) as i32 - 16;
            y[j] = x0 as f32 * d;
            y[j + 16] = x1 as f32 * d;
        }
    })
}

fn q5_1(src: &[u8], dst: &mut [f32]) {
    blocks(src, dst, 24, 32, |b, y| {
        let d = h(b, 0);
        let m = h(b, 2);
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let qs = &b[8..24];
        for j in 0..16 {
            let xh0 = ((qh >> j) << 4) & 0x10;
            let xh1 = (qh >> (j + 12)) & 0x10;
            let x0 = (qs[j] as u32 & 0x0F) | xh0;
            let x1 = (qs[j] as u32 >> 4) | xh1;
            y[j] = x0 as f32 * d + m;
            y[j + 16] = x1 as f32 * d + m;
        }
    })
}

fn q8_0(src: &[u8], dst: &mut [f32]) {
    blocks(src, dst, 34, 32, |b, y| {
        let d = h(b, 0);
        for (v, &q) in y.iter_mut().zip(&b[2..34]) {
            *v = q as i8 as f32 * d;
        }
    })
}

fn q2_k(src: &[u8], dst: &mut [f32]) {
    blocks(src, dst, 84, 256, |b, y| {
        let scales = &b[0..16];
        let qs = &b[16..80];
        let d = h(b, 80);
        let min = h(b, 82);
        let mut is = 0;
        let mut out = 0;
        for n in 0..2 {
            let q = &qs[n * 32..n * 32 + 32];
            for shift in [0u32, 2, 4, 6] {
                for half in 0..2 {
                    let sc = scales[is];
                    is += 1;
                    let dl = d * (sc & 0x0F) as f32;
                    let ml = min * (sc >> 4) as f32;
                    for l in 0..16 {
                        y[out] = dl * ((q[l + 16 * half] >> shift) & 3) as f32 - ml;
                        out += 1;
                    }
                }
            }
        }
    })
}

fn q3_k(src: &[u8], dst: &mut [f32]) {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    blocks(src, dst, 110, 256, |b, y| {
        let hm = &b[0..32];
        let qs = &b[32..96];
        let sb = &b[96..108];
        let d_all = h(b, 108);
        let word =
            |i: usize| u32::from_le_bytes([sb[4 * i], sb[4 * i + 1], sb[4 * i + 2], sb[4 * i + 3]]);
        let (a0, a1, tmp) = (word(0), word(1), word(2));
        let aux = [
            (a0 & KMASK2) | ((tmp & KMASK1) << 4),
            (a1 & KMASK2) | (((tmp >> 2) & KMASK1) << 4),
            ((a0 >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4),
            ((a1 >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4),
        ];
        let mut scales = [0i8; 16];
        for (i, a) in aux.iter().enumerate() {
            for (k, byte) in a.to_le_bytes().iter().enumerate() {
                scales[4 * i + k] = *byte as i8;
            }
        }
        let mut is = 0;
        let mut out = 0;
        let mut m = 1u8;
        for n in 0..2 {
            let q = &qs[n * 32..n * 32 + 32];
            for shift in [0u32, 2, 4, 6] {
                for half in 0..2 {
                    let dl = d_all * (scales[is] as i32 - 32) as f32;
                    is += 1;
                    for l in 0..16 {
                        let k = l + 16 * half;
                        let low = ((q[k] >> shift) & 3) as i32;
                        let sub = if hm[k] & m != 0 { 0 } else { 4 };
                        y[out] = dl * (low - sub) as f32;
                        out += 1;
                    }
                }
                m <<= 1;
            }
        }
    })
}

/// 6-bit scale and min number `j` (0..8) of a Q4_K / Q5_K block (ggml's get_scale_min_k4).
#[inline(always)]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

fn q4_k(src: &[u8], dst: &mut [f32]) {
    blocks(src, dst, 144, 256, |b, y| {
        let d = h(b, 0);
        let min = h(b, 2);
        let scales = &b[4..16];
        let qs = &b[16..144];
        for g in 0..4 {
            let (sc1, m1) = scale_min_k4(2 * g, scales);
            let (sc2, m2) = scale_min_k4(2 * g + 1, scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let q = &qs[32 * g..32 * g + 32];
            let y = &mut y[64 * g..64 * g + 64];
            for l in 0..32 {
                y[l] = d1 * (q[l] & 0x0F) as f32 - m1;
                y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    })
}

fn q5_k(src: &[u8], dst: &mut [f32]) {
    blocks(src, dst, 176, 256, |b, y| {
        let d = h(b, 0);
        let min = h(b, 2);
        let scales = &b[4..16];
        let qh = &b[16..48];
        let qs = &b[48..176];
        for g in 0..4 {
            let (sc1, m1) = scale_min_k4(2 * g, scales);
            let (sc2, m2) = scale_min_k4(2 * g + 1, scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let u1 = 1u8 << (2 * g);
            let u2 = 2u8 << (2 * g);
            let q = &qs[32 * g..32 * g + 32];
            let y = &mut y[64 * g..64 * g + 64];
            for l in 0..32 {
                let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                y[l] = d1 * ((q[l] & 0x0F) + h1) as f32 - m1;
                y[l + 32] = d2 * ((q[l] >> 4) + h2) as f32 - m2;
            }
        }
    })
}

fn q6_k(src: &[u8], dst: &mut [f32]) {
    blocks(src, dst, 210, 256, |b, y| {
        let d = h(b, 208);
        for n in 0..2 {
            let ql = &b[64 * n..64 * n + 64];
            let qh = &b[128 + 32 * n..128 + 32 * n + 32];
            let sc = &b[192 + 8 * n..192 + 8 * n + 8];
            let y = &mut y[128 * n..128 * n + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                y[l] = d * sc[is] as i8 as f32 * q1 as f32;
                y[l + 32] = d * sc[is + 2] as i8 as f32 * q2 as f32;
                y[l + 64] = d * sc[is + 4] as i8 as f32 * q3 as f32;
                y[l + 96] = d * sc[is + 6] as i8 as f32 * q4 as f32;
            }
        }
    })
}

fn q8_k(src: &[u8], dst: &mut [f32]) {
    blocks(src, dst, 292, 256, |b, y| {
        let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        for (v, &q) in y.iter_mut().zip(&b[4..260]) {
            *v = d * q as i8 as f32;
        }
    })
}
