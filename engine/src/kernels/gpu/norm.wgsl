// In-place RMSNorm of `rows` consecutive rows of `dim`: x * (mean(x^2) + eps)^-1/2 * s,
// s = 1 (mode 0), w (mode 1), 1 + w (mode 2, Gemma 3). One workgroup per row.

struct Params {
    dim: u32,
    rows: u32,
    eps: f32,
    mode: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256)
fn rmsnorm(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.rows) {
        return;
    }
    let base = r * p.dim;
    var ss = 0.0;
    for (var i = lid; i < p.dim; i += 256u) {
        let v = x[base + i];
        ss += v * v;
    }
    red[lid] = ss;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / sqrt(red[0] / f32(p.dim) + p.eps);
    for (var i = lid; i < p.dim; i += 256u) {
        var v = x[base + i] * inv;
        if (p.mode == 1u) {
            v *= w[i];
        } else if (p.mode == 2u) {
            v *= 1.0 + w[i];
        }
        x[base + i] = v;
    }
}
