// Rotate-half RoPE in place: for token i (position pos0 + i), head h, pair (j, j + half):
// angle = pos * inv_freq[j] (see norm_rope.wgsl, appended by the host).

struct Params {
    n_heads: u32,
    head_dim: u32,
    pos0: u32,
    t: u32,
    row_stride: u32, // floats between consecutive tokens
    eps: f32,        // rmsnorm_rope only
    mode: u32,       // rmsnorm_rope: norm weight 1 (0), w (1), 1 + w (2)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> inv_freq: array<f32>;

@group(0) @binding(3) var<storage, read> nw: array<f32>;

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
    let cs = cos_sin(f32(p.pos0 + i) * f);
    let base = i * p.row_stride + h * p.head_dim;
    let x0 = x[base + j];
    let x1 = x[base + j + half];
    x[base + j] = x0 * cs.x - x1 * cs.y;
    x[base + j + half] = x1 * cs.x + x0 * cs.y;
}



// RMSNorm of each head row (q/k norm) and then RoPE, in place: one workgroup per (token, head),
// one thread per rotated pair (head_dim <= 512), the row never leaves registers.
@compute @workgroup_size(256)
fn rmsnorm_rope(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.t * p.n_heads) {
        return;
    }
    let i = row / p.n_heads;
    let h = row % p.n_heads;
    let half = p.head_dim / 2u;
    let base = i * p.row_stride + h * p.head_dim;
    // every load before the reduction: one memory round trip per row
    let l = min(lid, half - 1u);
    var x0 = x[base + l];
    var x1 = x[base + l + half];
    let w = vec2<f32>(mode_weight(p.mode, nw[l]), mode_weight(p.mode, nw[l + half]));
    let f = inv_freq[l];
    if (lid >= half) {
        x0 = 0.0;
        x1 = 0.0;
    }
    let r = norm_rope(lid, x0, x1, w, f, p.pos0 + i, p.head_dim, p.eps);
    if (lid < half) {
        x[base + lid] = r.x;
        x[base + lid + half] = r.y;
    }
}
