//! cellm-encoders: the Gemma 4 vision tower (ViT) and audio tower (USM conformer), with their
//! preprocessing, projecting images and audio into soft tokens for the text stack.

pub mod audio;
pub mod clipped;
pub mod embed;
pub mod error;
pub mod vision;

pub use error::EncoderError;
