// f32 activations for matmul.wgsl (see there).
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;

fn xload(i: u32) -> vec4<f32> {
    return x[i];
}

// (the decode kernels' prologue: nothing to do with plain activations; see matmul_x_pro.wgsl)
fn prologue(lid: u32, first: bool) {}
