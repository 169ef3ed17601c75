//! Gemma 4 vision input: image decoding and preprocessing, and the vision tower.

#[cfg(feature = "gpu")]
pub mod gpu;
pub mod preprocess;
pub mod resize;
pub mod tower;

pub use preprocess::{PreprocessedImage, RgbImage, load_rgb, preprocess_file, preprocess_rgb};
pub use tower::{VisionTower, encode_image_file, encode_image_file_with};
