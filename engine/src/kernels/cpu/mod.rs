//! CPU kernels: a scalar reference for every op, SIMD paths chosen at run time, rayon threads
//! over output rows.

use crate::tensor::TensorView;

/// `out[t, n] = sum_k x[t, k] * w[n, k]` for `t` rows of activations `x` ([t, k] row-major) and a
/// weight `w` ([n, k]) of any dtype. `out` is [t, n] row-major. t == 1 is the decode matvec.
pub fn matmul(x: &[f32], t: usize, w: &TensorView<'_>, out: &mut [f32]) {
    let _ = (x, t, w, out);
    todo!("kernels helper")
}
