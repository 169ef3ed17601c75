//! Every WGSL source the GPU kernels assemble (each prelude and reduction variant), with the
//! `override` values they are compiled with. A test translates each one with naga's MSL and HLSL
//! back ends, so a shader that Metal or DX12 would reject fails on any machine.

/// One assembled shader module.
#[doc(hidden)]
pub struct AssembledShader {
    /// The pipeline-cache key it is compiled under (plus a variant note where keys repeat).
    pub label: String,
    /// The whole source as compiled.
    pub source: String,
    /// Sets of `override` values it is compiled with (an empty set: the source's defaults).
    pub overrides: Vec<Vec<(&'static str, f64)>>,
}

impl AssembledShader {
    pub(crate) fn new(label: impl Into<String>, source: impl Into<String>) -> Self {
        AssembledShader {
            label: label.into(),
            source: source.into(),
            overrides: vec![Vec::new()],
        }
    }

    pub(crate) fn with(mut self, overrides: Vec<Vec<(&'static str, f64)>>) -> Self {
        self.overrides = overrides;
        self
    }
}

/// All of them: the text stack's kernels, the towers' and the bandwidth probe.
#[doc(hidden)]
pub fn assembled_shaders() -> Vec<AssembledShader> {
    let mut all = Vec::new();
    all.extend(super::matmul::shaders());
    all.extend(super::matmul_lut::shaders());
    all.extend(super::gemm::shaders());
    all.extend(super::attention::shaders());
    all.extend(super::norm::shaders());
    all.extend(super::rope::shaders());
    all.extend(super::softmax::shaders());
    all.extend(super::elementwise::shaders());
    all.extend(super::bandwidth::shaders());
    all.extend(super::towers::audio::shaders());
    all.extend(super::towers::vision::shaders());
    all
}
