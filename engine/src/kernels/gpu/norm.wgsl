// RMSNorm of `rows` consecutive rows of `dim`: x * (mean(x^2) + eps)^-1/2 * s, s = 1 (mode 0),
// w (mode 1), 1 + w (mode 2, Gemma 3). One workgroup per row. `rmsnorm` works in place;
// `rmsnorm_to` reads `x` and stores into `dst` (add = 0) or adds into it and scales the sum
// (add = 1: the residual add after a post-norm, with Gemma 4's layer scalar).

struct Params {
    dim: u32,
    rows: u32,
    eps: f32,
    mode: u32,
    add: u32,
    out_scale: f32,
    mode2: u32, // rmsnorm_add_norm: the second norm's weight mode
    in_scale: f32, // ple_combine: the scale applied before the norm
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;

// rmsnorm_add_norm holds a row of up to 2048 values in registers (PER a thread): it reads the
// row it has just written.
const PER: u32 = 8u;

fn weight(i: u32) -> f32 {
    if (p.mode == 1u) {
        return w[i];
    } else if (p.mode == 2u) {
        return 1.0 + w[i];
    }
    return 1.0;
}

// 1 / rms of the row at `base`.
fn inv_rms(lid: u32, base: u32) -> f32 {
    var ss = 0.0;
    for (var i = lid; i < p.dim; i += 256u) {
        let v = x[base + i];
        ss += v * v;
    }
    return 1.0 / sqrt(block_sum(lid, ss) / f32(p.dim) + p.eps);
}

@compute @workgroup_size(256)
fn rmsnorm(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.rows) {
        return;
    }
    let base = r * p.dim;
    let inv = inv_rms(lid, base);
    for (var i = lid; i < p.dim; i += 256u) {
        x[base + i] = x[base + i] * inv * weight(i);
    }
}

@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

fn put(i: u32, v: f32, d: f32) {
    if (p.add == 1u) {
        dst[i] = (d + v) * p.out_scale;
    } else {
        dst[i] = v;
    }
}

@compute @workgroup_size(256)
fn rmsnorm_to(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.rows) {
        return;
    }
    let base = r * p.dim;
    let inv = inv_rms(lid, base);
    for (var i = lid; i < p.dim; i += 256u) {
        var d = 0.0;
        if (p.add == 1u) {
            d = dst[base + i];
        }
        put(base + i, x[base + i] * inv * weight(i), d);
    }
}

// ple_combine (Gemma 4's per-layer inputs): x = (norm(x * in_scale) * w + dst) * out_scale per
// row, the context part's scale and norm, the token part's add and the final scale in one pass
// (the same f32 operations, in the same order, as the separate ops).
@compute @workgroup_size(256)
fn ple_combine(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.rows) {
        return;
    }
    let base = r * p.dim;
    var ss = 0.0;
    for (var i = lid; i < p.dim; i += 256u) {
        let v = x[base + i] * p.in_scale;
        ss += v * v;
    }
    let inv = 1.0 / sqrt(block_sum(lid, ss) / f32(p.dim) + p.eps);
    for (var i = lid; i < p.dim; i += 256u) {
        let v = x[base + i] * p.in_scale;
        x[base + i] = (v * inv * weight(i) + dst[base + i]) * p.out_scale;
    }
}

// rmsnorm_add_norm: dst = (dst + norm(x) * w) * out_scale, then h = norm(dst) * w2 (a post-norm's
// residual add and the next block's pre-norm in one pass over the row, held in registers).
@group(0) @binding(4) var<storage, read> w2: array<f32>;
@group(0) @binding(5) var<storage, read_write> h: array<f32>;

fn weight2(i: u32) -> f32 {
    if (p.mode2 == 1u) {
        return w2[i];
    } else if (p.mode2 == 2u) {
        return 1.0 + w2[i];
    }
    return 1.0;
}

@compute @workgroup_size(256)
fn rmsnorm_add_norm(@builtin(local_invocation_index) lid: u32,
                    @builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.rows) {
        return;
    }
    let base = r * p.dim;
    // rows wider than 256 * PER take the general path in the host code
    var xv: array<f32, PER>;
    var rv: array<f32, PER>;
    var ss = 0.0;
    for (var j = 0u; j < PER; j++) {
        let i = lid + 256u * j;
        if (i < p.dim) {
            xv[j] = x[base + i] * weight(i);
            rv[j] = dst[base + i];
            ss += x[base + i] * x[base + i];
        }
    }
    let inv = 1.0 / sqrt(block_sum(lid, ss) / f32(p.dim) + p.eps);
    var ss2 = 0.0;
    for (var j = 0u; j < PER; j++) {
        let i = lid + 256u * j;
        if (i < p.dim) {
            rv[j] = (rv[j] + xv[j] * inv) * p.out_scale;
            dst[base + i] = rv[j];
            ss2 += rv[j] * rv[j];
        }
    }
    let inv2 = 1.0 / sqrt(block_sum(lid, ss2) / f32(p.dim) + p.eps);
    for (var j = 0u; j < PER; j++) {
        let i = lid + 256u * j;
        if (i < p.dim) {
            h[base + i] = rv[j] * inv2 * weight2(i);
        }
    }
}

// ---- Rows of up to 1024 * V4 values with dim % 4 == 0 (every Gemma width): each thread keeps
// its V4 vec4s of the row in registers and issues all its loads before using any (clamped
// indices, no data-dependent branches), so a row costs one memory round trip, not one per loop
// step; the row is then reused from registers for both passes.

override V4: u32 = 2u; // <= 4 (the register arrays' size)

@group(0) @binding(1) var<storage, read_write> xq: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> wq: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> dq: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> w2q: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> hq: array<vec4<f32>>;

// The weight vec4 `i` of a norm in `mode` (0 none, 1 w, 2 1 + w) read from `v`.
fn wmode(mode: u32, v: vec4<f32>) -> vec4<f32> {
    if (mode == 1u) {
        return v;
    } else if (mode == 2u) {
        return vec4<f32>(1.0) + v;
    }
    return vec4<f32>(1.0);
}

fn row_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// The sum of squares of the row's vec4s this thread holds (those inside the row).
fn sum_sq(lid: u32, n4: u32, v: array<vec4<f32>, 4>) -> f32 {
    var ss = 0.0;
    for (var j = 0u; j < V4; j++) {
        if (lid + 256u * j < n4) {
            ss += dot(v[j], v[j]);
        }
    }
    return ss;
}

fn inv_rms_of(lid: u32, ss: f32) -> f32 {
    return 1.0 / sqrt(block_sum(lid, ss) / f32(p.dim) + p.eps);
}

@compute @workgroup_size(256)
fn rmsnorm_v(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = row_of(wid, nwg);
    let n4 = p.dim / 4u;
    let base = min(r, p.rows - 1u) * n4;
    var xv: array<vec4<f32>, 4>;
    var wv: array<vec4<f32>, 4>;
    for (var j = 0u; j < V4; j++) {
        let i = min(lid + 256u * j, n4 - 1u);
        xv[j] = xq[base + i];
        wv[j] = wq[i];
    }
    let inv = inv_rms_of(lid, sum_sq(lid, n4, xv));
    for (var j = 0u; j < V4; j++) {
        let i = lid + 256u * j;
        if (i < n4 && r < p.rows) {
            xq[base + i] = xv[j] * inv * wmode(p.mode, wv[j]);
        }
    }
}

@compute @workgroup_size(256)
fn rmsnorm_to_v(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = row_of(wid, nwg);
    let n4 = p.dim / 4u;
    let base = min(r, p.rows - 1u) * n4;
    var xv: array<vec4<f32>, 4>;
    var wv: array<vec4<f32>, 4>;
    var dv: array<vec4<f32>, 4>;
    for (var j = 0u; j < V4; j++) {
        let i = min(lid + 256u * j, n4 - 1u);
        xv[j] = xq[base + i];
        wv[j] = wq[i];
        if (p.add == 1u) {
            dv[j] = dq[base + i];
        }
    }
    let inv = inv_rms_of(lid, sum_sq(lid, n4, xv));
    for (var j = 0u; j < V4; j++) {
        let i = lid + 256u * j;
        if (i < n4 && r < p.rows) {
            let v = xv[j] * inv * wmode(p.mode, wv[j]);
            if (p.add == 1u) {
                dq[base + i] = (dv[j] + v) * p.out_scale;
            } else {
                dq[base + i] = v;
            }
        }
    }
}

@compute @workgroup_size(256)
fn rmsnorm_add_norm_v(@builtin(local_invocation_index) lid: u32,
                      @builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = row_of(wid, nwg);
    let n4 = p.dim / 4u;
    let base = min(r, p.rows - 1u) * n4;
    var xv: array<vec4<f32>, 4>;
    var rv: array<vec4<f32>, 4>;
    var wv: array<vec4<f32>, 4>;
    var w2v: array<vec4<f32>, 4>;
    for (var j = 0u; j < V4; j++) {
        let i = min(lid + 256u * j, n4 - 1u);
        xv[j] = xq[base + i];
        rv[j] = dq[base + i];
        wv[j] = wq[i];
        w2v[j] = w2q[i];
    }
    let inv = inv_rms_of(lid, sum_sq(lid, n4, xv));
    for (var j = 0u; j < V4; j++) {
        rv[j] = (rv[j] + xv[j] * inv * wmode(p.mode, wv[j])) * p.out_scale;
    }
    let inv2 = inv_rms_of(lid, sum_sq(lid, n4, rv));
    for (var j = 0u; j < V4; j++) {
        let i = lid + 256u * j;
        if (i < n4 && r < p.rows) {
            dq[base + i] = rv[j];
            hq[base + i] = rv[j] * inv2 * wmode(p.mode2, w2v[j]);
        }
    }
}
