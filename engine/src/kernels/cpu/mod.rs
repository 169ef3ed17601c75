//! CPU kernels: a scalar reference for every op, SIMD paths chosen at run time, rayon threads
//! over output rows. The caller owns the rayon pool (its size is the thread count).

mod activation;
mod bandwidth;
mod isa;
mod matmul;
mod norm;
mod rope;
mod simd_math;
mod softmax;
mod vector;

pub use activation::{gelu_mul, gelu_tanh, softcap};
pub use bandwidth::measure_read_bandwidth;
pub use matmul::{matmul, matmul_at_level, matmul_many, matmul_rows};
pub use norm::rmsnorm;
pub use rope::{rope, rope_inv_freq};
pub use softmax::softmax;
pub use vector::{add, axpy, axpy_f16, dot, dot_f16, scale};
pub mod attention;
