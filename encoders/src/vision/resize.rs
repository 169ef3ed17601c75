//! Antialiased bicubic resize of an RGB8 image, bit-identical to torchvision's
//! `resize(uint8 tensor, BICUBIC, antialias=True)` (ATen `_upsample_bicubic2d_aa` on uint8, which
//! follows Pillow's `ImagingResample`): a horizontal pass then a vertical pass, each with Keys
//! cubic weights (a = -0.5) whose support grows with the downscale factor, weights normalised in
//! f64 and rounded to int16 with a per-pass precision, integer accumulation, and rounding to uint8
//! between the passes. A pass whose size does not change is skipped.

/// Integer weights of one resampling pass: output `i` reads inputs `xmin[i] .. xmin[i] + size[i]`.
struct PassWeights {
    xmin: Vec<usize>,
    size: Vec<usize>,
    /// `[out][ksize]` int16 weights (only the first `size[i]` of each row are used).
    w: Vec<i32>,
    ksize: usize,
    precision: u32,
}

fn cubic_aa(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

/// ATen's `_compute_index_ranges_int16_weights` for bicubic (interp_size 4) with antialias.
fn pass_weights(input: usize, output: usize) -> PassWeights {
    let scale = input as f64 / output as f64;
    let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
    let ksize = support.ceil() as usize * 2 + 1;
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let mut wf = vec![0f64; output * ksize];
    let mut xmin = vec![0usize; output];
    let mut size = vec![0usize; output];
    let mut wt_max = 0f64;
    for i in 0..output {
        let center = scale * (i as f64 + 0.5);
        // C casts truncate toward zero, as `as i64` does
        let lo = ((center - support + 0.5) as i64).max(0);
        let hi = ((center + support + 0.5) as i64).min(input as i64);
        let n = (hi - lo).clamp(0, ksize as i64) as usize;
        let row = &mut wf[i * ksize..(i + 1) * ksize];
        let mut total = 0f64;
        for (j, w) in row.iter_mut().enumerate().take(n) {
            *w = cubic_aa((j as f64 + lo as f64 - center + 0.5) * invscale);
            total += *w;
        }
        if total != 0.0 {
            for w in row.iter_mut().take(n) {
                *w /= total;
                wt_max = wt_max.max(*w);
            }
        }
        xmin[i] = lo as usize;
        size[i] = n;
    }
    let mut precision = 0u32;
    while precision < 22 {
        let next = (0.5 + wt_max * (1u64 << (precision + 1)) as f64) as i64;
        if next >= 1 << 15 {
            break;
        }
        precision += 1;
    }
    let mul = (1u64 << precision) as f64;
    let w = wf
        .iter()
        .map(|&v| {
            let v = v * mul;
            // ATen stores int16: (int)(±0.5 + v) then truncation to 16 bits
            (if v < 0.0 {
                (-0.5 + v) as i32
            } else {
                (0.5 + v) as i32
            }) as i16 as i32
        })
        .collect();
    PassWeights {
        xmin,
        size,
        w,
        ksize,
        precision,
    }
}

#[inline]
fn round_shift(acc: i32, precision: u32) -> u8 {
    (acc >> precision).clamp(0, 255) as u8
}

fn initial(precision: u32) -> i32 {
    if precision == 0 {
        0
    } else {
        1 << (precision - 1)
    }
}

/// Resizes `src` (`h × w × 3` interleaved RGB8) to `out_h × out_w`. Returns the input unchanged
/// when the size already matches.
pub fn resize_bicubic_aa(src: &[u8], w: usize, h: usize, out_w: usize, out_h: usize) -> Vec<u8> {
    assert_eq!(src.len(), w * h * 3, "resize: buffer size");
    let mut cur = src.to_vec();
    let mut cw = w;
    if out_w != w {
        let pw = pass_weights(w, out_w);
        let mut dst = vec![0u8; h * out_w * 3];
        let init = initial(pw.precision);
        for y in 0..h {
            let line = &cur[y * cw * 3..(y + 1) * cw * 3];
            let out = &mut dst[y * out_w * 3..(y + 1) * out_w * 3];
            for x in 0..out_w {
                let k = &pw.w[x * pw.ksize..x * pw.ksize + pw.size[x]];
                let base = pw.xmin[x];
                let mut acc = [init; 3];
                for (j, &kw) in k.iter().enumerate() {
                    let p = &line[(base + j) * 3..(base + j) * 3 + 3];
                    for c in 0..3 {
                        acc[c] += p[c] as i32 * kw;
                    }
                }
                for c in 0..3 {
                    out[x * 3 + c] = round_shift(acc[c], pw.precision);
                }
            }
        }
        cur = dst;
        cw = out_w;
    }
    if out_h != h {
        let pw = pass_weights(h, out_h);
        let mut dst = vec![0u8; out_h * cw * 3];
        let init = initial(pw.precision);
        let stride = cw * 3;
        let mut acc = vec![0i32; stride];
        for y in 0..out_h {
            acc.fill(init);
            let k = &pw.w[y * pw.ksize..y * pw.ksize + pw.size[y]];
            for (j, &kw) in k.iter().enumerate() {
                let row = &cur[(pw.xmin[y] + j) * stride..(pw.xmin[y] + j + 1) * stride];
                for (a, &p) in acc.iter_mut().zip(row) {
                    *a += p as i32 * kw;
                }
            }
            for (o, &a) in dst[y * stride..(y + 1) * stride].iter_mut().zip(&acc) {
                *o = round_shift(a, pw.precision);
            }
        }
        cur = dst;
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(517, 480), (100, 480), (1000, 624), (20, 48), (7, 3)] {
            let pw = pass_weights(i, o);
            for x in 0..o {
                let s: i32 = pw.w[x * pw.ksize..x * pw.ksize + pw.size[x]].iter().sum();
                let one = 1i32 << pw.precision;
                assert!(
                    (s - one).abs() <= pw.size[x] as i32,
                    "{i}->{o} x={x}: {s} vs {one}"
                );
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = vec![77u8; 13 * 9 * 3];
        let out = resize_bicubic_aa(&src, 13, 9, 48, 30);
        assert!(out.iter().all(|&v| v == 77));
    }
}
