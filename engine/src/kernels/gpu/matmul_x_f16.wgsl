// f16 activations for matmul.wgsl (adapters with shader-f16): half the bytes per activation
// load, widened to f32 before the products, which accumulate in f32.
enable f16;

@group(0) @binding(2) var<storage, read> x: array<vec4<f16>>;

fn xload(i: u32) -> vec4<f32> {
    return vec4<f32>(x[i]);
}

// (the decode kernels' prologue: nothing to do with plain activations; see matmul_x_pro.wgsl)
fn prologue(lid: u32, first: bool) {}
