//! Sample-rate conversion by polyphase FIR filtering, defined exactly as SciPy's
//! `resample_poly(x, up, down)` with its default Kaiser (beta 5) low-pass: the same filter, the
//! same padding and the same alignment, so features computed from resampled audio match a
//! reference pipeline that resamples with SciPy to float rounding. (Crate resamplers tried here
//! shift the output by a fraction of a sample, which the log-mel floor turns into visible error.)

use crate::EncoderError;

/// Resamples mono audio from `from` Hz to `to` Hz; output length `ceil(len * to / from)`.
pub fn to_rate(input: &[f32], from: u32, to: u32) -> Result<Vec<f32>, EncoderError> {
    if from == 0 || to == 0 {
        return Err(EncoderError::Resample(format!(
            "invalid sample rates {from} -> {to}"
        )));
    }
    let g = gcd(from as u64, to as u64);
    let (up, down) = ((to as u64 / g) as usize, (from as u64 / g) as usize);
    if up == down || input.is_empty() {
        return Ok(input.to_vec());
    }
    if up.max(down) > 100_000 {
        return Err(EncoderError::Resample(format!(
            "rate ratio {from}:{to} is too irregular to resample"
        )));
    }
    let x: Vec<f64> = input.iter().map(|&v| v as f64).collect();
    let n_in = x.len();
    let n_out = (n_in * up).div_ceil(down);

    let max_rate = up.max(down);
    let half_len = 10 * max_rate;
    let mut h = firwin_kaiser(2 * half_len + 1, 1.0 / max_rate as f64, 5.0);
    h.iter_mut().for_each(|v| *v *= up as f64);
    let n_pre_pad = down - half_len % down;
    let n_pre_remove = (half_len + n_pre_pad) / down;
    let mut n_post_pad = 0;
    while upfirdn_len(h.len() + n_pre_pad + n_post_pad, n_in, up, down) < n_out + n_pre_remove {
        n_post_pad += 1;
    }
    let mut taps = vec![0f64; n_pre_pad];
    taps.extend_from_slice(&h);
    taps.resize(taps.len() + n_post_pad, 0.0);

    // y[k] = sum_j taps[j] * xu[k*down - j], xu the zero-stuffed input; only j with
    // (k*down - j) % up == 0 contribute.
    let mut out = Vec::with_capacity(n_out);
    for k in n_pre_remove..n_pre_remove + n_out {
        let t = k * down;
        let mut acc = 0f64;
        let mut j = t % up;
        while j < taps.len() && j <= t {
            let i = (t - j) / up;
            if i < n_in {
                acc += taps[j] * x[i];
            }
            j += up;
        }
        out.push(acc as f32);
    }
    Ok(out)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn upfirdn_len(len_h: usize, n_in: usize, up: usize, down: usize) -> usize {
    ((n_in - 1) * up + len_h).div_ceil(down)
}

/// SciPy `firwin(numtaps, cutoff, window=("kaiser", beta))` with nyq = 1, low-pass, scaled to unit
/// gain at DC.
fn firwin_kaiser(numtaps: usize, cutoff: f64, beta: f64) -> Vec<f64> {
    let alpha = 0.5 * (numtaps - 1) as f64;
    let i0b = bessel_i0(beta);
    let mut h: Vec<f64> = (0..numtaps)
        .map(|n| {
            let m = n as f64 - alpha;
            let r = 2.0 * n as f64 / (numtaps - 1) as f64 - 1.0;
            let w = bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / i0b;
            cutoff * sinc(cutoff * m) * w
        })
        .collect();
    let s: f64 = h.iter().sum();
    h.iter_mut().for_each(|v| *v /= s);
    h
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

/// Modified Bessel function of the first kind, order 0 (power series; converges fast for the
/// small arguments a Kaiser window uses).
fn bessel_i0(x: f64) -> f64 {
    let q = x * x / 4.0;
    let (mut term, mut sum) = (1.0f64, 1.0f64);
    for k in 1..200 {
        term *= q / (k as f64 * k as f64);
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sine_survives_resampling() {
        let (from, to) = (44_100u32, 16_000u32);
        let f = 440.0f64;
        let x: Vec<f32> = (0..44_100)
            .map(|i| (2.0 * std::f64::consts::PI * f * i as f64 / from as f64).sin() as f32)
            .collect();
        let y = to_rate(&x, from, to).unwrap();
        assert_eq!(y.len(), 16_000);
        // Away from the edges the output is the same sine sampled at 16 kHz.
        for (i, &v) in y.iter().enumerate().take(15_000).skip(1000) {
            let want = (2.0 * std::f64::consts::PI * f * i as f64 / to as f64).sin();
            assert!((v as f64 - want).abs() < 1e-3, "sample {i}: {v} vs {want}");
        }
    }

    #[test]
    fn bessel_and_lengths() {
        assert!((bessel_i0(5.0) - 27.239871823604442).abs() < 1e-12);
        assert_eq!(to_rate(&[0.5; 3], 8_000, 16_000).unwrap().len(), 6);
        assert_eq!(to_rate(&[0.5; 1], 44_100, 16_000).unwrap().len(), 1);
        assert!(to_rate(&[0.5; 4], 0, 16_000).is_err());
    }
}
