//! The `auto` profile's choice: per tensor f16 / int8 / int4 from measured KL costs, greedy by
//! KL cost per byte saved under a budget (a multiple-choice knapsack, costs assumed to add).

use cellm_engine::tensor::DType;
use serde::Serialize;

/// Storage levels a candidate tensor can take, most precise first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    F16,
    Q8,
    Q4,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::F16, Level::Q8, Level::Q4];

    pub fn dtype(self) -> DType {
        match self {
            Level::F16 => DType::F16,
            Level::Q8 => DType::Q8,
            Level::Q4 => DType::Q4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::F16 => "f16",
            Level::Q8 => "int8",
            Level::Q4 => "int4",
        }
    }
}

/// One candidate's size and measured KL cost at each [`Level`] (index = level as usize).
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub name: String,
    pub bytes: [u64; 3],
    /// Extra KL over the unquantized model (0 for f16).
    pub cost: [f64; 3],
}

/// A chosen level per candidate, with the predicted (summed) KL cost and the bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    pub levels: Vec<Level>,
    pub predicted: f64,
    pub bytes: u64,
}

/// Greedy multiple-choice knapsack: start from f16 everywhere and take the steps to int8 / int4
/// with the least KL cost per byte saved while the summed cost stays within `budget`. Each
/// tensor's steps follow the lower convex hull of its (bytes, cost) points, so its ratios
/// increase and its steps are taken in order; a step that does not fit is skipped (smaller ones
/// after it may still fit).
pub fn select(cands: &[Candidate], budget: f64) -> Selection {
    struct Step {
        tensor: usize,
        from: Level,
        to: Level,
        cost: f64,
        ratio: f64,
    }
    let mut steps = Vec::new();
    for (i, c) in cands.iter().enumerate() {
        // Costs below zero are measurement noise; int4 never costs less than int8.
        let c8 = c.cost[1].max(0.0);
        let c4 = c.cost[2].max(c8);
        let saved = |a: Level, b: Level| c.bytes[a as usize] as f64 - c.bytes[b as usize] as f64;
        let step = |from, to, cost: f64| Step {
            tensor: i,
            from,
            to,
            cost,
            ratio: cost / saved(from, to).max(1.0),
        };
        let (a, b) = (
            step(Level::F16, Level::Q8, c8),
            step(Level::Q8, Level::Q4, c4 - c8),
        );
        if a.ratio <= b.ratio {
            steps.push(a);
            steps.push(b);
        } else {
            steps.push(step(Level::F16, Level::Q4, c4));
        }
    }
    // Stable: a tensor's own steps keep their order on equal ratios.
    steps.sort_by(|a, b| a.ratio.total_cmp(&b.ratio));
    let mut levels = vec![Level::F16; cands.len()];
    let mut predicted = 0.0;
    for s in &steps {
        if levels[s.tensor] == s.from && predicted + s.cost <= budget {
            levels[s.tensor] = s.to;
            predicted += s.cost;
        }
    }
    let bytes = cands
        .iter()
        .zip(&levels)
        .map(|(c, &l)| c.bytes[l as usize])
        .sum();
    Selection {
        levels,
        predicted,
        bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(name: &str, n: u64, c8: f64, c4: f64) -> Candidate {
        Candidate {
            name: name.into(),
            bytes: [2 * n, n + n / 16, n / 2 + n / 16],
            cost: [0.0, c8, c4],
        }
    }

    #[test]
    fn zero_budget_keeps_everything_f16() {
        let c = vec![cand("a", 1000, 0.001, 0.01), cand("b", 1000, 0.0, 0.0)];
        let s = select(&c, 0.0);
        // Free steps (cost 0) are taken even with no budget.
        assert_eq!(s.levels, vec![Level::F16, Level::Q4]);
        let s = select(&c, -1.0);
        assert_eq!(s.levels, vec![Level::F16, Level::F16]);
    }

    #[test]
    fn cheapest_per_byte_first_and_budget_respected() {
        // Same sizes: the insensitive tensor goes to int4 first; the sensitive one to int8.
        let c = vec![
            cand("sensitive", 1000, 0.002, 0.05),
            cand("robust", 1000, 0.0005, 0.004),
        ];
        let s = select(&c, 0.0065);
        assert_eq!(s.levels, vec![Level::Q8, Level::Q4]);
        assert!((s.predicted - 0.006).abs() < 1e-12);
        assert!(s.predicted <= 0.0065);
        // A huge budget quantizes everything to int4.
        let s = select(&c, 1.0);
        assert_eq!(s.levels, vec![Level::Q4, Level::Q4]);
        assert_eq!(s.bytes, c.iter().map(|c| c.bytes[2]).sum::<u64>());
    }

    #[test]
    fn bigger_tensors_win_at_equal_cost() {
        let c = vec![
            cand("small", 100, 0.001, 0.01),
            cand("big", 10000, 0.001, 0.01),
        ];
        let s = select(&c, 0.0015);
        assert_eq!(s.levels, vec![Level::F16, Level::Q8]);
    }

    #[test]
    fn non_convex_int8_is_skipped() {
        // int8 costs nearly as much as int4: the hull goes f16 -> int4 directly.
        let c = vec![cand("t", 1000, 0.009, 0.01)];
        let s = select(&c, 0.0095);
        assert_eq!(s.levels, vec![Level::F16]);
        let s = select(&c, 0.01);
        assert_eq!(s.levels, vec![Level::Q4]);
    }

    #[test]
    fn predicted_cost_never_exceeds_budget_on_a_random_table() {
        let mut seed = 12345u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let c: Vec<Candidate> = (0..60)
            .map(|i| {
                let c8 = rnd() * 1e-3;
                cand(
                    &format!("t{i}"),
                    64 + (rnd() * 5000.0) as u64,
                    c8,
                    c8 + rnd() * 2e-2,
                )
            })
            .collect();
        let f16: u64 = c.iter().map(|c| c.bytes[0]).sum();
        for budget in [0.0, 1e-4, 1e-3, 1e-2, 0.1, 1.0] {
            let s = select(&c, budget);
            assert!(s.predicted <= budget + 1e-15, "{} > {budget}", s.predicted);
            assert!(s.bytes <= f16);
        }
        assert_eq!(select(&c, 10.0).levels, vec![Level::Q4; 60]);
    }
}
