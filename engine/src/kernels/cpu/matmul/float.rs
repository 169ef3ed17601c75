//! f32/f16/bf16 row kernels: dispatch per ISA and the scalar reference.

use super::{Isa, OutPtr};
use crate::tensor::{DType, TensorView};
use half::{bf16, f16};
use std::cell::RefCell;

/// A float weight matrix, typed.
pub(crate) enum FloatWeights<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
}

impl<'a> FloatWeights<'a> {
    pub fn new(w: &TensorView<'a>) -> Self {
        match w.dtype {
            DType::F32 => Self::F32(w.as_f32().expect("f32 view")),
            DType::F16 => Self::F16(w.as_f16().expect("f16 view")),
            DType::BF16 => Self::BF16(w.as_bf16().expect("bf16 view")),
            other => panic!("FloatWeights: {other} is not a float dtype"),
        }
    }
}

thread_local! {
    /// One converted weight row per thread for the scalar path (reused across calls).
    static ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Computes rows `r0..r1` for the `t` tokens of `x` ([t, k]) into `dst`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rows(
    isa: Isa,
    w: &FloatWeights<'_>,
    x: &[f32],
    t: usize,
    k: usize,
    r0: usize,
    r1: usize,
    dst: OutPtr,
) {
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 {
        // SAFETY: `isa` never exceeds isa::detected(), so the target features are present.
        unsafe { super::x86::float_rows(isa, w, x, t, k, r0, r1, dst) };
        return;
    }
    let _ = isa;
    rows_scalar(w, x, t, k, r0, r1, dst);
}

pub(crate) fn rows_scalar(
    w: &FloatWeights<'_>,
    x: &[f32],
    t: usize,
    k: usize,
    r0: usize,
    r1: usize,
    dst: OutPtr,
) {
    let run = |row: &mut Vec<f32>| {
        row.resize(k, 0.0);
        for r in r0..r1 {
            let wr: &[f32] = match w {
                FloatWeights::F32(v) => &v[r * k..(r + 1) * k],
                FloatWeights::F16(v) => {
                    for (o, h) in row.iter_mut().zip(&v[r * k..(r + 1) * k]) {
                        *o = h.to_f32();
                    }
                    row
                }
                FloatWeights::BF16(v) => {
                    for (o, h) in row.iter_mut().zip(&v[r * k..(r + 1) * k]) {
                        *o = h.to_f32();
                    }
                    row
                }
            };
            for ti in 0..t {
                dst.set(
                    ti,
                    r,
                    crate::kernels::cpu::dot(wr, &x[ti * k..(ti + 1) * k]),
                );
            }
        }
    };
    ROW.with(|cell| match cell.try_borrow_mut() {
        Ok(mut row) => run(&mut row),
        Err(_) => run(&mut Vec::new()),
    });
}
