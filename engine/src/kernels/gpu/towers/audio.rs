//! GPU ops of the Gemma 4 audio tower.
