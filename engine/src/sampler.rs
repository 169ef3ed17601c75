//! Token sampling: greedy, temperature, top-k, top-p, min-p, repetition penalty, seeded RNG.
//! Never sorts the whole vocabulary.

use serde::{Deserialize, Serialize};
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// User-facing sampling settings (CLI flags and the app's settings panel).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 disables top-k.
    pub top_k: usize,
    /// 1.0 disables top-p.
    pub top_p: f32,
    /// 0.0 disables min-p.
    pub min_p: f32,
    /// 1.0 disables the repetition penalty.
    pub repetition_penalty: f32,
    /// How many recent tokens the repetition penalty looks at.
    pub repetition_window: usize,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 64,
            top_p: 0.95,
            min_p: 0.0,
            repetition_penalty: 1.0,
            repetition_window: 64,
            seed: 0,
        }
    }
}

/// Draws token ids from logits according to [`SamplingParams`]; deterministic for a seed.
pub struct Sampler {
    params: SamplingParams,
    rng: Pcg32,
    /// Reused buffers so sampling does not allocate per token.
    candidates: Vec<(u32, f32)>,
    heap: BinaryHeap<Reverse<Ranked>>,
    seen: Vec<u32>,
}

/// A candidate ordered by logit, then by *lower* id as the better one (so ties go to low ids).
#[derive(Clone, Copy, Debug)]
struct Ranked {
    logit: f32,
    id: u32,
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.logit
            .total_cmp(&other.logit)
            .then(other.id.cmp(&self.id))
    }
}

impl Sampler {
    pub fn new(params: &SamplingParams) -> Self {
        Self {
            params: params.clone(),
            rng: Pcg32::new(params.seed),
            candidates: Vec::new(),
            heap: BinaryHeap::new(),
            seen: Vec::new(),
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token. `logits` is modified in place (NaN becomes -inf, the repetition
    /// penalty is applied); `recent` holds the previous tokens, oldest first.
    ///
    /// Order as in transformers: repetition penalty, temperature, top-k, top-p, min-p.
    pub fn sample(&mut self, logits: &mut [f32], recent: &[u32]) -> u32 {
        if logits.is_empty() {
            return 0;
        }
        self.apply_repetition_penalty(logits, recent);

        let t = self.params.temperature;
        if !t.is_finite() || t <= 0.0 || self.params.top_k == 1 {
            // argmax never picks a NaN (it compares with `>` / `==`), so the greedy path skips
            // the NaN pass over the vocabulary; the penalty keeps NaN as NaN.
            return argmax(logits);
        }
        for l in logits.iter_mut() {
            if l.is_nan() {
                *l = f32::NEG_INFINITY;
            }
        }
        self.select_candidates(logits);
        let cands = &mut self.candidates;
        let Some(max) = cands.iter().map(|c| c.1).reduce(f32::max) else {
            return argmax(logits);
        };
        // From here on a candidate carries its unnormalised probability exp((l - max) / t).
        let inv_t = 1.0 / t;
        for c in cands.iter_mut() {
            c.1 = ((c.1 - max) * inv_t).exp();
        }

        let top_p = self.params.top_p;
        if top_p > 0.0 && top_p < 1.0 && cands.len() > 1 {
            nucleus(cands, top_p as f64);
        }
        // min-p keeps p_i >= min_p * p_max; p_max has weight 1 and survives every filter.
        let min_p = self.params.min_p;
        if min_p > 0.0 && min_p <= 1.0 {
            cands.retain(|c| c.1 >= min_p);
        }

        let total: f64 = cands.iter().map(|c| c.1 as f64).sum();
        let mut target = self.rng.next_f64() * total;
        for &(id, w) in cands.iter() {
            target -= w as f64;
            if target < 0.0 {
                return id;
            }
        }
        // Rounding left a sliver past the last weight: take the most likely candidate.
        cands
            .iter()
            .copied()
            .min_by(|a, b| cmp_desc(*a, *b))
            .map_or(0, |c| c.0)
    }

    /// Hugging Face semantics: each token in the window once, positive logits divided by the
    /// penalty, negative ones multiplied.
    fn apply_repetition_penalty(&mut self, logits: &mut [f32], recent: &[u32]) {
        let penalty = self.params.repetition_penalty;
        if penalty == 1.0
            || !penalty.is_finite()
            || penalty <= 0.0
            || self.params.repetition_window == 0
        {
            return;
        }
        let start = recent.len().saturating_sub(self.params.repetition_window);
        self.seen.clear();
        self.seen.extend_from_slice(&recent[start..]);
        self.seen.sort_unstable();
        self.seen.dedup();
        for &id in &self.seen {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = if *l < 0.0 { *l * penalty } else { *l / penalty };
            }
        }
    }

    /// Fills `self.candidates` with the top-k finite logits (one pass with a k-sized heap, no
    /// sort of the vocabulary) or with every finite logit when top-k is off.
    fn select_candidates(&mut self, logits: &[f32]) {
        let cands = &mut self.candidates;
        cands.clear();
        let k = self.params.top_k;
        if k == 0 || k >= logits.len() {
            cands.extend(
                logits
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| **l > f32::NEG_INFINITY)
                    .map(|(i, &l)| (i as u32, l)),
            );
            return;
        }
        let heap = &mut self.heap;
        heap.clear();
        for (i, &logit) in logits.iter().enumerate() {
            if logit == f32::NEG_INFINITY {
                continue;
            }
            if heap.len() < k {
                heap.push(Reverse(Ranked {
                    logit,
                    id: i as u32,
                }));
            } else if heap.peek().is_some_and(|worst| logit > worst.0.logit) {
                // Strictly greater: an equal logit at a later (higher) id loses the tie.
                heap.pop();
                heap.push(Reverse(Ranked {
                    logit,
                    id: i as u32,
                }));
            }
        }
        cands.extend(heap.drain().map(|Reverse(r)| (r.id, r.logit)));
        // Heap order depends only on the input, but sort the few survivors for a stable walk.
        cands.sort_unstable_by(|a, b| cmp_desc(*a, *b));
    }
}

/// Orders by value descending, then id ascending (a total order; NaN is gone by now).
fn cmp_desc(a: (u32, f32), b: (u32, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Index of the largest logit; ties go to the lowest id.
fn argmax(logits: &[f32]) -> u32 {
    // Two passes that vectorize (lane-wise max, then the first index holding it) instead of
    // one branchy scan: the first maximum, as a strict `>` scan finds; 0 when none is > -inf.
    const L: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; L];
    let chunks = logits.chunks_exact(L);
    let rest = chunks.remainder();
    for c in chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    let mut max = f32::NEG_INFINITY;
    for &v in lanes.iter().chain(rest) {
        if v > max {
            max = v;
        }
    }
    if max == f32::NEG_INFINITY {
        return 0;
    }
    // Find the first 16-wide chunk holding `max` (a branch-free test per chunk), then the lane.
    let chunk = logits
        .chunks(L)
        .position(|c| c.iter().fold(false, |hit, &v| hit | (v == max)))
        .unwrap_or(0);
    let base = chunk * L;
    (base + logits[base..].iter().position(|&l| l == max).unwrap_or(0)) as u32
}

/// Keeps the most probable candidates until their mass reaches `top_p` (transformers: a token
/// stays when the mass strictly above it is < top_p; at least one stays). Candidates carry
/// weights. Only a head picked by a probability threshold gets sorted, never the whole vocabulary:
/// the head is a prefix of the sorted order, so once it holds `top_p` of the mass it holds the
/// whole nucleus.
fn nucleus(cands: &mut Vec<(u32, f32)>, top_p: f64) {
    let total: f64 = cands.iter().map(|c| c.1 as f64).sum();
    let need = top_p * total;
    let mut thresh = 1e-3 * total;
    while thresh > 1e-30 * total {
        let head: f64 = cands
            .iter()
            .filter(|c| c.1 as f64 >= thresh)
            .map(|c| c.1 as f64)
            .sum();
        if head >= need {
            cands.retain(|c| c.1 as f64 >= thresh);
            break;
        }
        thresh *= 1e-3;
    }
    cands.sort_unstable_by(|a, b| cmp_desc(*a, *b));
    let mut mass = 0.0f64;
    let mut keep = 0usize;
    for c in cands.iter() {
        if keep > 0 && mass >= need {
            break;
        }
        mass += c.1 as f64;
        keep += 1;
    }
    cands.truncate(keep);
}

/// PCG32 (XSH-RR, O'Neill): tiny, fast, and the same on every platform.
#[derive(Clone, Debug)]
pub struct Pcg32 {
    state: u64,
    inc: u64,
}

impl Pcg32 {
    const MUL: u64 = 6364136223846793005;

    pub fn new(seed: u64) -> Self {
        let mut rng = Self {
            state: 0,
            inc: (0xda3e_39cb_94b9_5bdb_u64 << 1) | 1,
        };
        rng.next_u32();
        rng.state = rng.state.wrapping_add(seed);
        rng.next_u32();
        rng
    }

    pub fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.state = old.wrapping_mul(Self::MUL).wrapping_add(self.inc);
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        xorshifted.rotate_right((old >> 59) as u32)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        let hi = (self.next_u32() >> 5) as u64; // 27 bits
        let lo = (self.next_u32() >> 6) as u64; // 26 bits
        ((hi << 26) | lo) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32, min_p: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            min_p,
            repetition_penalty: 1.0,
            repetition_window: 64,
            seed: 7,
        }
    }

    fn counts(p: &SamplingParams, logits: &[f32], n: usize) -> Vec<usize> {
        let mut s = Sampler::new(p);
        let mut c = vec![0usize; logits.len()];
        for _ in 0..n {
            let mut l = logits.to_vec();
            c[s.sample(&mut l, &[]) as usize] += 1;
        }
        c
    }

    fn pseudo_logits(n: usize, seed: u64) -> Vec<f32> {
        let mut r = Pcg32::new(seed);
        (0..n).map(|_| (r.next_f64() as f32 - 0.5) * 20.0).collect()
    }

    /// The vectorized argmax against a strict `>` scan: ties, -inf, odd lengths, signed zeros.
    #[test]
    fn argmax_matches_first_max_scan() {
        let scan = |l: &[f32]| {
            let (mut b, mut bl) = (0usize, f32::NEG_INFINITY);
            for (i, &v) in l.iter().enumerate() {
                if v > bl {
                    (b, bl) = (i, v);
                }
            }
            b as u32
        };
        let mut cases: Vec<Vec<f32>> = vec![
            vec![],
            vec![f32::NEG_INFINITY; 37],
            vec![-0.0, 0.0, 0.0],
            vec![1.0; 33],
            vec![f32::INFINITY, 1.0, f32::INFINITY],
            vec![f32::NAN; 20],
            (0..40)
                .map(|i| if i % 3 == 0 { f32::NAN } else { i as f32 % 7.0 })
                .collect(),
        ];
        for n in [1, 15, 16, 17, 100, 1001] {
            let mut l = pseudo_logits(n, n as u64);
            cases.push(l.clone());
            let m = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            l[n - 1] = m; // a tie at the end
            l[n / 2] = m; // and in the middle
            cases.push(l);
        }
        for l in &cases {
            assert_eq!(argmax(l), scan(l), "{l:?}");
        }
    }

    #[test]
    fn sampler_greedy_is_argmax_with_low_id_ties() {
        let mut s = Sampler::new(&params(0.0, 64, 0.95, 0.0));
        let mut l = vec![0.0, 3.0, -1.0, 3.0, 2.9];
        assert_eq!(s.sample(&mut l, &[]), 1);
        let big = pseudo_logits(262_144, 1);
        let want = big
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
            .unwrap()
            .0 as u32;
        assert_eq!(s.sample(&mut big.clone(), &[]), want);
        // top-k = 1 at any temperature is greedy too.
        let mut s = Sampler::new(&params(1.5, 1, 1.0, 0.0));
        for _ in 0..10 {
            assert_eq!(s.sample(&mut big.clone(), &[]), want);
        }
    }

    #[test]
    fn sampler_seeded_runs_reproduce() {
        let logits = pseudo_logits(1000, 2);
        let run = |seed: u64| {
            let mut p = params(1.0, 0, 0.9, 0.0);
            p.seed = seed;
            let mut s = Sampler::new(&p);
            (0..200)
                .map(|_| s.sample(&mut logits.clone(), &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn sampler_distribution_matches_softmax() {
        let logits = [1.0f32, 0.2, -0.5, 2.0, 0.0, -3.0, 1.5, 0.7];
        let t = 0.8f32;
        let n = 20_000;
        let c = counts(&params(t, 0, 1.0, 0.0), &logits, n);
        let z: f64 = logits.iter().map(|&l| ((l / t) as f64).exp()).sum();
        for (i, &l) in logits.iter().enumerate() {
            let p = ((l / t) as f64).exp() / z;
            let f = c[i] as f64 / n as f64;
            // ~4.5 standard deviations of a binomial frequency.
            let tol = 4.5 * (p * (1.0 - p) / n as f64).sqrt() + 1e-3;
            assert!((f - p).abs() < tol, "token {i}: freq {f} vs p {p}");
        }
        // top-k keeps exactly the k best and renormalises.
        let c = counts(&params(t, 3, 1.0, 0.0), &logits, n);
        let kept = [3usize, 6, 0];
        let zk: f64 = kept.iter().map(|&i| ((logits[i] / t) as f64).exp()).sum();
        for (i, &ci) in c.iter().enumerate() {
            if kept.contains(&i) {
                let p = ((logits[i] / t) as f64).exp() / zk;
                let f = ci as f64 / n as f64;
                assert!((f - p).abs() < 0.02, "top-k token {i}: {f} vs {p}");
            } else {
                assert_eq!(ci, 0, "token {i} is outside the top 3");
            }
        }
    }

    #[test]
    fn sampler_top_p_keeps_the_nucleus() {
        let probs = [0.5f32, 0.3, 0.15, 0.05];
        let logits: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
        let c = counts(&params(1.0, 0, 0.75, 0.0), &logits, 4000);
        assert!(c[0] > 0 && c[1] > 0 && c[2] == 0 && c[3] == 0, "{c:?}");
        let c = counts(&params(1.0, 0, 0.85, 0.0), &logits, 4000);
        assert!(c[2] > 0 && c[3] == 0, "{c:?}");
        // A tiny top-p keeps only the best token.
        let c = counts(&params(1.0, 0, 0.01, 0.0), &logits, 100);
        assert_eq!(c[0], 100);
    }

    #[test]
    fn sampler_top_p_on_a_full_vocabulary() {
        // Flat-ish logits so the nucleus is large and the threshold loop has to widen.
        let logits: Vec<f32> = pseudo_logits(262_144, 3).iter().map(|l| l * 0.05).collect();
        let mut s = Sampler::new(&params(1.0, 0, 0.9, 0.0));
        let t0 = std::time::Instant::now();
        for _ in 0..5 {
            let id = s.sample(&mut logits.clone(), &[]) as usize;
            assert!(id < logits.len());
        }
        eprintln!(
            "top-p 0.9 over 262144 logits: {:?} per token",
            t0.elapsed() / 5
        );
        let mut s = Sampler::new(&params(1.0, 64, 0.95, 0.0));
        let t0 = std::time::Instant::now();
        for _ in 0..20 {
            s.sample(&mut logits.clone(), &[]);
        }
        eprintln!(
            "top-k 64 + top-p 0.95 over 262144 logits: {:?} per token",
            t0.elapsed() / 20
        );
        // Compare the nucleus with a full sort done the slow way.
        let mut w: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, (l - 0.5).exp()))
            .collect();
        let mut fast = w.clone();
        nucleus(&mut fast, 0.9);
        w.sort_by(|a, b| cmp_desc(*a, *b));
        let total: f64 = w.iter().map(|c| c.1 as f64).sum();
        let mut mass = 0.0;
        let keep = w
            .iter()
            .take_while(|c| {
                let before = mass;
                mass += c.1 as f64;
                before < 0.9 * total
            })
            .count();
        assert_eq!(fast.len(), keep);
        assert_eq!(fast, w[..keep].to_vec());
    }

    #[test]
    fn sampler_min_p_drops_unlikely_tokens() {
        let probs = [0.5f32, 0.3, 0.15, 0.05];
        let logits: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
        let c = counts(&params(1.0, 0, 1.0, 0.2), &logits, 4000);
        assert!(c[2] > 0 && c[3] == 0, "{c:?}");
        let c = counts(&params(1.0, 0, 1.0, 0.5), &logits, 4000);
        assert!(c[1] > 0 && c[2] == 0 && c[3] == 0, "{c:?}");
    }

    #[test]
    fn sampler_top_k_ties_go_to_low_ids() {
        let mut s = Sampler::new(&params(1.0, 2, 1.0, 0.0));
        s.select_candidates(&[1.0, 5.0, 1.0, 5.0, 5.0, 0.0]);
        let mut ids: Vec<u32> = s.candidates.iter().map(|c| c.0).collect();
        ids.sort();
        assert_eq!(ids, vec![1, 3]);
    }

    #[test]
    fn sampler_nan_logits_never_win_or_panic() {
        let mut s = Sampler::new(&params(1.0, 0, 0.9, 0.05));
        for _ in 0..200 {
            let mut l = vec![f32::NAN, 1.0, f32::NAN, 0.5, f32::NEG_INFINITY];
            let id = s.sample(&mut l, &[]);
            assert!(id == 1 || id == 3, "{id}");
        }
        let mut all_nan = vec![f32::NAN; 5];
        assert!(s.sample(&mut all_nan, &[]) < 5);
        let mut g = Sampler::new(&params(0.0, 0, 1.0, 0.0));
        assert_eq!(g.sample(&mut [f32::NAN, 0.0, f32::NAN], &[]), 1);
        assert_eq!(g.sample(&mut [], &[]), 0);
    }

    #[test]
    fn sampler_repetition_penalty_follows_transformers() {
        let mut p = params(0.0, 0, 1.0, 0.0);
        p.repetition_penalty = 1.25;
        p.repetition_window = 2;
        let mut s = Sampler::new(&p);
        let mut l = vec![2.0, 1.9, -1.0, 0.5];
        // Token 0 and 2 are in the window (twice for 0: penalised once); 3 fell out of it.
        let id = s.sample(&mut l, &[3, 0, 2, 0][1..]);
        assert_eq!(l, vec![1.6, 1.9, -1.25, 0.5]);
        assert_eq!(id, 1);
        let mut l = vec![2.0, 1.9, -1.0, 0.5];
        s.sample(&mut l, &[3, 2, 0]);
        assert_eq!(l, vec![1.6, 1.9, -1.25, 0.5]);
    }
}
