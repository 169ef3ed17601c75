//! GPU ops only the media towers use (the text stack's ops are one level up and are shared with
//! the towers where they fit: matmul, norms, element-wise ops, clamp).

pub mod audio;
pub mod vision;
