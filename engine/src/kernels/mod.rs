//! Compute kernels. `cpu` is the reference backend; `gpu` implements the same op set.

pub mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;
