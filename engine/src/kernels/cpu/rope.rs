//! Rotate-half rotary position embedding (the transformers / llama.cpp NEOX pairing).

/// `inv_freq[i] = 1 / theta^(2i / denom)` for `i < n_rot`, 0 for `n_rot <= i < half`, computed in
/// f32 the way transformers does (`base ** (arange(0, 2n, 2).float() / dim)`).
pub fn rope_inv_freq(theta: f32, denom: usize, n_rot: usize, half: usize) -> Vec<f32> {
    assert!(n_rot <= half, "rope_inv_freq: n_rot {n_rot} > half {half}");
    (0..half)
        .map(|i| {
            if i < n_rot {
                let e = (2 * i) as f32 / denom as f32;
                1.0 / theta.powf(e)
            } else {
                0.0
            }
        })
        .collect()
}

/// Rotates `n_heads` consecutive heads of `head_dim` in place for position `pos`: pairs
/// `(i, i + head_dim/2)` with angle `pos * inv_freq[i]` (f32). Zero frequencies pass through.
pub fn rope(x: &mut [f32], n_heads: usize, head_dim: usize, pos: usize, inv_freq: &[f32]) {
    let half = head_dim / 2;
    assert_eq!(inv_freq.len(), half, "rope: inv_freq length");
    assert!(x.len() >= n_heads * head_dim, "rope: x too short");
    let p = pos as f32;
    // cos/sin once per position, shared by every head (stack buffer; head_dim <= 1024 in practice)
    let mut cs = [(1f32, 0f32); 512];
    let mut heap;
    let cs: &mut [(f32, f32)] = if half <= cs.len() {
        &mut cs[..half]
    } else {
        heap = vec![(1f32, 0f32); half];
        &mut heap
    };
    for (c, &f) in cs.iter_mut().zip(inv_freq) {
        let a = p * f;
        *c = (a.cos(), a.sin());
    }
    for head in x[..n_heads * head_dim].chunks_exact_mut(head_dim) {
        let (lo, hi) = head.split_at_mut(half);
        for ((a, b), &(c, s)) in lo.iter_mut().zip(hi.iter_mut()).zip(cs.iter()) {
            let (x0, x1) = (*a, *b);
            *a = x0 * c - x1 * s;
            *b = x1 * c + x0 * s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inputs used by the torch script: x[i] = ((i * 0.37) mod 2) - 1, computed in f64.
    fn input(dim: usize) -> Vec<f32> {
        (0..dim)
            .map(|i| ((i as f64 * 0.37) % 2.0 - 1.0) as f32)
            .collect()
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() <= 2e-6
    }

    // Reference numbers from transformers' formulas in torch (float32), see the module docs:
    // inv_freq = 1 / theta ** (arange(0, 2n, 2).float() / denom), zeros appended;
    // emb = cat(freqs, freqs); y = x * cos + rotate_half(x) * sin.
    #[test]
    fn rope_matches_torch_default() {
        let inv = rope_inv_freq(10000.0, 8, 4, 4);
        let want_inv = [
            1.0,
            0.10000000149011612,
            0.009999999776482582,
            0.0010000000474974513,
        ];
        for (a, b) in inv.iter().zip(want_inv) {
            assert_eq!(*a, b as f32);
        }
        let mut x = input(8);
        rope(&mut x, 1, 8, 7, &inv);
        let want = [
            -1.0692558288574219,
            -1.029435634613037,
            -0.204807847738266,
            0.11286728084087372,
            -0.29511353373527527,
            0.2442587912082672,
            -0.7962749004364014,
            -0.4092199504375458,
        ];
        for (i, (a, b)) in x.iter().zip(want).enumerate() {
            assert!(close(*a, b as f32), "[{i}] {a} vs {b}");
        }
    }

    #[test]
    fn rope_matches_torch_proportional_and_multi_head() {
        // Gemma 4 full-layer style: n_rot 2 of 8 pairs, exponent over the full dim
        let inv = rope_inv_freq(1e6, 16, 2, 8);
        assert_eq!(inv[0], 1.0);
        assert_eq!(inv[1], 0.17782793939113617f64 as f32);
        assert!(inv[2..].iter().all(|&v| v == 0.0));
        let want = [
            0.8226277232170105,
            -0.4111894965171814,
            -0.25999999046325684,
            0.10999999940395355,
            0.47999998927116394,
            0.8500000238418579,
            -0.7799999713897705,
            -0.4099999964237213,
            -0.5699856281280518,
            0.5802785158157349,
            0.699999988079071,
            -0.9300000071525574,
            -0.5600000023841858,
            -0.1899999976158142,
            0.18000000715255737,
            0.550000011920929,
        ];
        // two identical heads: both must come out the same
        let mut x = input(16);
        x.extend(input(16));
        rope(&mut x, 2, 16, 1234, &inv);
        for h in 0..2 {
            for (i, b) in want.iter().enumerate() {
                let a = x[h * 16 + i];
                assert!(close(a, *b as f32), "head {h} [{i}] {a} vs {b}");
            }
        }
    }

    #[test]
    fn rope_matches_torch_head_256() {
        let inv = rope_inv_freq(10000.0, 256, 128, 128);
        for (i, v) in [
            (0, 1.0),
            (1, 0.9305720329284668),
            (17, 0.2942727208137512),
            (64, 0.009999999776482582),
            (127, 0.00010746077896328643),
        ] {
            assert!(
                (inv[i] - v as f32).abs() <= f32::EPSILON * inv[i],
                "inv[{i}] {} vs {v}",
                inv[i]
            );
        }
        let mut x = input(256);
        rope(&mut x, 1, 256, 511, &inv);
        let want = [
            (0, 0.15424153208732605),
            (1, 0.925899088382721),
            (5, 0.22749291360378265),
            (63, -0.017101913690567017),
            (64, 0.30018675327301025),
            (127, 0.025690235197544098),
            (128, -1.0515748262405396),
            (129, 0.26927849650382996),
            (200, 0.8689558506011963),
            (255, -0.649569034576416),
        ];
        for (i, b) in want {
            // angles up to 511 rad: allow a few ulp of sin/cos implementation differences
            assert!((x[i] - b as f32).abs() <= 1e-5, "[{i}] {} vs {b}", x[i]);
        }
    }
}
