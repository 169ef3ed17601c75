//! GPU ops of the Gemma 4 vision tower.
