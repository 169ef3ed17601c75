//! 1-D weighted k-means (palettes of the lut4/lut6 dtypes).
//!
//! Why it is cheap: in one dimension every cluster of an optimal assignment is a contiguous run
//! of the sorted values, bounded by the midpoints between neighbouring centres. The values are
//! sorted once; prefix sums of `w` and `w*x` then give each cluster's weighted mean with two
//! binary searches, so one Lloyd iteration costs O(k log n) instead of O(n k).
//!
//! Deterministic: quantile initialisation (centre i at the weighted quantile (i + 1/2) / k),
//! Lloyd iterations until no centre moves (or [`MAX_ITERS`]); a cluster left empty is re-seeded
//! inside the cluster with the largest squared error. With at most k distinct values the
//! centres are exactly those values.

/// Upper bound on Lloyd iterations (each is O(k log n), so this is a safety net only).
pub const MAX_ITERS: usize = 300;

/// Sorted values with prefix sums of w, w*x and w*x^2 (f64 so long groups stay exact enough).
struct Sorted {
    x: Vec<f32>,
    sw: Vec<f64>,
    swx: Vec<f64>,
    swxx: Vec<f64>,
}

impl Sorted {
    fn new(values: &[f32], weights: Option<&[f32]>) -> Self {
        let mut pairs: Vec<(f32, f32)> = match weights {
            Some(w) => values.iter().copied().zip(w.iter().copied()).collect(),
            None => values.iter().map(|&v| (v, 1.0)).collect(),
        };
        pairs.retain(|p| p.0.is_finite() && p.1 > 0.0);
        pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        // equal values become one weighted point (weights from an already quantized source
        // repeat a lot), which shrinks the prefix sums of big groups
        pairs.dedup_by(|next, kept| {
            let same = next.0 == kept.0;
            if same {
                kept.1 += next.1;
            }
            same
        });
        let n = pairs.len();
        let (mut sw, mut swx, mut swxx) = (
            Vec::with_capacity(n + 1),
            Vec::with_capacity(n + 1),
            Vec::with_capacity(n + 1),
        );
        let (mut a, mut b, mut c) = (0f64, 0f64, 0f64);
        sw.push(0.0);
        swx.push(0.0);
        swxx.push(0.0);
        for &(x, w) in &pairs {
            let (x, w) = (x as f64, w as f64);
            a += w;
            b += w * x;
            c += w * x * x;
            sw.push(a);
            swx.push(b);
            swxx.push(c);
        }
        Self {
            x: pairs.into_iter().map(|p| p.0).collect(),
            sw,
            swx,
            swxx,
        }
    }

    /// Weight, mean and squared error of the run `a..b`.
    fn stats(&self, a: usize, b: usize) -> (f64, f64, f64) {
        let w = self.sw[b] - self.sw[a];
        if w <= 0.0 {
            return (0.0, 0.0, 0.0);
        }
        let sx = self.swx[b] - self.swx[a];
        let sse = (self.swxx[b] - self.swxx[a]) - sx * sx / w;
        (w, sx / w, sse.max(0.0))
    }

    /// Run boundaries of the clusters of sorted centres `c` (len k + 1, first 0, last n).
    fn bounds(&self, c: &[f64], out: &mut Vec<usize>) {
        out.clear();
        out.push(0);
        for pair in c.windows(2) {
            let mid = (pair[0] + pair[1]) * 0.5;
            out.push(self.x.partition_point(|&v| (v as f64) < mid));
        }
        out.push(self.x.len());
    }
}

/// Fits `k` centres to `values` (optionally weighted; non-positive weights and non-finite values
/// are ignored). Returns k centres in ascending order (repeated when there are fewer distinct
/// values than k; all zero when there are no values).
pub fn fit(values: &[f32], weights: Option<&[f32]>, k: usize) -> Vec<f32> {
    assert!(k > 0, "k-means needs k >= 1");
    let s = Sorted::new(values, weights);
    let n = s.x.len();
    if n == 0 {
        return vec![0.0; k];
    }
    // Few distinct values (s.x is deduplicated): they are the exact answer.
    if n <= k {
        let mut distinct = s.x.clone();
        let last = *distinct.last().unwrap_or(&0.0);
        distinct.resize(k, last);
        return distinct;
    }

    // Quantile initialisation.
    let total = s.sw[n];
    let mut c: Vec<f64> = (0..k)
        .map(|i| {
            let q = total * (i as f64 + 0.5) / k as f64;
            let at = s.sw[1..].partition_point(|&w| w < q).min(n - 1);
            s.x[at] as f64
        })
        .collect();
    let mut bounds = Vec::with_capacity(k + 1);
    for _ in 0..MAX_ITERS {
        c.sort_by(f64::total_cmp);
        s.bounds(&c, &mut bounds);
        let mut next = c.clone();
        let mut empty = Vec::new();
        for i in 0..k {
            let (w, mean, _) = s.stats(bounds[i], bounds[i + 1]);
            if w > 0.0 {
                next[i] = mean;
            } else {
                empty.push(i);
            }
        }
        // Re-seed empty clusters inside the worst cluster (split it at its mean's far side).
        let mut split = vec![false; k];
        for &e in &empty {
            let worst = (0..k)
                .filter(|&i| !split[i] && !empty.contains(&i))
                .map(|i| (s.stats(bounds[i], bounds[i + 1]).2, i))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            match worst {
                Some((sse, i)) if sse > 0.0 => {
                    let (a, b) = (bounds[i], bounds[i + 1]);
                    // value three quarters into the run: a new centre that splits it
                    next[e] = s.x[a + (b - a) * 3 / 4] as f64;
                    split[i] = true;
                }
                _ => next[e] = c[e],
            }
        }
        if next == c {
            break;
        }
        c = next;
    }
    c.sort_by(f64::total_cmp);
    c.into_iter().map(|v| v as f32).collect()
}

/// Index of the entry of the ascending `palette` closest to `v` (lower one on ties).
pub fn nearest_sorted(palette: &[f32], v: f32) -> usize {
    let i = palette.partition_point(|&p| p < v);
    if i == 0 {
        0
    } else if i == palette.len() {
        palette.len() - 1
    } else if (v - palette[i - 1]) <= (palette[i] - v) {
        i - 1
    } else {
        i
    }
}

/// Weighted squared error of `values` reconstructed with their nearest palette entries.
pub fn sse(values: &[f32], palette: &[f32]) -> f64 {
    values
        .iter()
        .map(|&v| {
            let e = (v - palette[nearest_sorted(palette, v)]) as f64;
            e * e
        })
        .sum()
}

/// One palette group of a lut tensor: k-means centres rounded to f16 (ascending) and each
/// value's nearest entry.
pub fn palettize(values: &[f32], k: usize) -> (Vec<u8>, Vec<half::f16>) {
    let centres = fit(values, None, k);
    let pal: Vec<half::f16> = centres.iter().map(|&c| half::f16::from_f32(c)).collect();
    // f16 rounding is monotonic, so the palette stays ascending
    let pf: Vec<f32> = pal.iter().map(|p| p.to_f32()).collect();
    let idx = values
        .iter()
        .map(|&v| nearest_sorted(&pf, v) as u8)
        .collect();
    (idx, pal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_separated_clusters_give_exact_centres() {
        // 4 clusters of symmetric offsets around 1, 5, 10, 20.
        let mut v = Vec::new();
        for &c in &[20.0f32, 1.0, 10.0, 5.0] {
            for d in [-0.25f32, -0.125, 0.0, 0.125, 0.25] {
                v.push(c + d);
            }
        }
        let got = fit(&v, None, 4);
        for (g, want) in got.iter().zip([1.0, 5.0, 10.0, 20.0]) {
            assert!((g - want).abs() < 1e-5, "{got:?}");
        }
    }

    #[test]
    fn few_distinct_values_are_reconstructed_exactly() {
        let v: Vec<f32> = (0..1000).map(|i| [0.5f32, -2.0, 3.25][i % 3]).collect();
        let p = fit(&v, None, 16);
        assert_eq!(p.len(), 16);
        assert_eq!(sse(&v, &p), 0.0);
        // k == distinct
        let v: Vec<f32> = (0..64).map(|i| i as f32 * 0.5).collect();
        let p = fit(&v, None, 64);
        assert_eq!(sse(&v, &p), 0.0);
    }

    #[test]
    fn weights_pull_centres() {
        // one cluster: the weighted mean.
        let v = [0.0f32, 1.0];
        let w = [3.0f32, 1.0];
        assert!((fit(&v, Some(&w), 1)[0] - 0.25).abs() < 1e-6);
    }

    #[test]
    fn beats_uniform_grid_and_is_deterministic() {
        // Gaussian-like data (sum of uniforms), where a uniform grid wastes levels on the tails.
        let mut s = 12345u32;
        let mut rnd = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s as f32 / u32::MAX as f32
        };
        let v: Vec<f32> = (0..5000)
            .map(|_| (0..4).map(|_| rnd()).sum::<f32>() - 2.0)
            .collect();
        let p = fit(&v, None, 16);
        let (lo, hi) = v
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        let grid: Vec<f32> = (0..16).map(|i| lo + (hi - lo) * i as f32 / 15.0).collect();
        assert!(sse(&v, &p) < 0.8 * sse(&v, &grid));
        assert_eq!(p, fit(&v, None, 16));
        assert!(p.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn degenerate_inputs() {
        assert_eq!(fit(&[], None, 4), vec![0.0; 4]);
        assert_eq!(fit(&[2.0; 10], None, 4), vec![2.0; 4]);
        let p = fit(&[1.0, f32::NAN, 3.0], None, 2);
        assert_eq!(p, vec![1.0, 3.0]);
        assert_eq!(nearest_sorted(&[0.0, 1.0, 2.0], 0.5), 0);
        assert_eq!(nearest_sorted(&[0.0, 1.0, 2.0], 0.6), 1);
        assert_eq!(nearest_sorted(&[0.0, 1.0, 2.0], 9.0), 2);
    }
}
