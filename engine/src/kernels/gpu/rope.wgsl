// Rotate-half RoPE in place: for token i (position pos0 + i), head h, pair (j, j + half):
// angle = pos * inv_freq[j] (f32, as the CPU), reduced to [-pi, pi] with fma before cos/sin
// because GPU cos/sin are only accurate near zero.

struct Params {
    n_heads: u32,
    head_dim: u32,
    pos0: u32,
    t: u32,
    row_stride: u32, // floats between consecutive tokens
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> inv_freq: array<f32>;

const TWO_PI_HI: f32 = 6.28125;
const TWO_PI_LO: f32 = 0.0019353071795864769;
const INV_TWO_PI: f32 = 0.15915494309189535;

@compute @workgroup_size(256)
fn rope(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = (wid.x + wid.y * nwg.x) * 256u + lid;
    let half = p.head_dim / 2u;
    let per_tok = p.n_heads * half;
    if (idx >= p.t * per_tok) {
        return;
    }
    let i = idx / per_tok;
    let h = (idx % per_tok) / half;
    let j = idx % half;
    let f = inv_freq[j];
    if (f == 0.0) {
        return;
    }
    let a = f32(p.pos0 + i) * f;
    let k = round(a * INV_TWO_PI);
    let r = fma(-k, TWO_PI_LO, fma(-k, TWO_PI_HI, a));
    let c = cos(r);
    let s = sin(r);
    let base = i * p.row_stride + h * p.head_dim;
    let x0 = x[base + j];
    let x1 = x[base + j + half];
    x[base + j] = x0 * c - x1 * s;
    x[base + j + half] = x1 * c + x0 * s;
}
