// Element-wise and row ops of the audio tower's conformer layers and its output:
// clip_rmsnorm(_to): v = clamp(x, -clip, clip), n = v * (mean(v^2) + eps)^-1/2 * w, optionally
//   silu(n); stored (mode 0) or added as dst += scale * n (mode 1, the residual adds). One
//   workgroup per row.
// clamp_to: y = clamp(b, lo, hi) (a clipped linear's input, leaving its source intact).
// clamp_silu: y = silu(clamp(y, lo, hi)) (a clipped linear's output, then the activation).
// glu_dwconv: the light convolution's GLU over [a | b] halves of each row, a * sigmoid(b),
//   followed by the causal depthwise conv y[t, c] = sum_j taps[c, j] * g[t - (K - 1) + j, c].
// bias_rows: y[r, c] += b[c].
// gather_rows: y[i, :] = b[c[i], :] (c holds row indices as exact floats).
// Bindings are laid out so each entry point uses 1..n: y (read-write), b, c.

struct Params {
    n: u32,
    dim: u32,
    eps: f32,
    clip: f32,
    lo: f32,
    hi: f32,
    mode: u32,
    scale: f32,
    silu: u32,
    k: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> c: array<f32>;

fn index(lid: u32, wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return (wid.x + wid.y * nwg.x) * 256u + lid;
}

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

fn norm_act(v: f32, inv: f32, i: u32) -> f32 {
    let n = v * inv * b[i];
    if (p.silu == 1u) {
        return silu(n);
    }
    return n;
}

@compute @workgroup_size(256)
fn clip_rmsnorm(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.n) {
        return;
    }
    let base = r * p.dim;
    var ss = 0.0;
    for (var i = lid; i < p.dim; i += 256u) {
        let v = clamp(y[base + i], -p.clip, p.clip);
        ss += v * v;
    }
    let inv = 1.0 / sqrt(block_sum(lid, ss) / f32(p.dim) + p.eps);
    for (var i = lid; i < p.dim; i += 256u) {
        y[base + i] = norm_act(clamp(y[base + i], -p.clip, p.clip), inv, i);
    }
}

@compute @workgroup_size(256)
fn clip_rmsnorm_to(@builtin(local_invocation_index) lid: u32,
                   @builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.n) {
        return;
    }
    let base = r * p.dim;
    var ss = 0.0;
    for (var i = lid; i < p.dim; i += 256u) {
        let v = clamp(c[base + i], -p.clip, p.clip);
        ss += v * v;
    }
    let inv = 1.0 / sqrt(block_sum(lid, ss) / f32(p.dim) + p.eps);
    for (var i = lid; i < p.dim; i += 256u) {
        let n = norm_act(clamp(c[base + i], -p.clip, p.clip), inv, i);
        if (p.mode == 1u) {
            y[base + i] += n * p.scale;
        } else {
            y[base + i] = n;
        }
    }
}

@compute @workgroup_size(256)
fn clamp_to(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(lid, wid, nwg);
    if (i < p.n) {
        y[i] = clamp(b[i], p.lo, p.hi);
    }
}

@compute @workgroup_size(256)
fn clamp_silu(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(lid, wid, nwg);
    if (i < p.n) {
        y[i] = silu(clamp(y[i], p.lo, p.hi));
    }
}

// n = frames * channels, dim = channels, k = kernel width; b = taps [dim, k], c = [frames, 2 dim].
@compute @workgroup_size(256)
fn glu_dwconv(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(lid, wid, nwg);
    if (i >= p.n) {
        return;
    }
    let ch = i % p.dim;
    let t = i / p.dim;
    var acc = 0.0;
    for (var j = 0u; j < p.k; j++) {
        // source frame t - (k - 1) + j; frames before the start are zeros
        if (t + j + 1u < p.k) {
            continue;
        }
        let row = (t + j + 1u - p.k) * 2u * p.dim;
        let g = c[row + ch] * (1.0 / (1.0 + exp(-c[row + p.dim + ch])));
        acc += b[ch * p.k + j] * g;
    }
    y[i] = acc;
}

// n = rows * dim.
@compute @workgroup_size(256)
fn bias_rows(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(lid, wid, nwg);
    if (i < p.n) {
        y[i] += b[i % p.dim];
    }
}

// n = rows * dim (rows gathered).
@compute @workgroup_size(256)
fn gather_rows(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(lid, wid, nwg);
    if (i < p.n) {
        let src = u32(c[i / p.dim]);
        y[i] = b[src * p.dim + i % p.dim];
    }
}
