// Average pooling of patches into soft tokens, then the sqrt(hidden) scaling and the optional
// standardisation, one thread per output value. `groups` holds, as f32, the slot starts
// [m + 1] and then the member patches of every slot in patch order (so sums run in the CPU's
// order): out[s, d] = ((sum of x[t, d] / div over members t) * root - bias[d]) * scale[d].

struct Params {
    m: u32,
    dim: u32,
    standardize: u32,
    div: f32,
    root: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> groups: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> stdv: array<f32>;

@compute @workgroup_size(256)
fn pool(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= p.m * p.dim) {
        return;
    }
    let s = i / p.dim;
    let d = i % p.dim;
    let a = u32(groups[s]);
    let b = u32(groups[s + 1u]);
    var acc = 0.0;
    for (var j = a; j < b; j++) {
        let t = u32(groups[p.m + 1u + j]);
        acc += x[t * p.dim + d] / p.div;
    }
    acc *= p.root;
    if (p.standardize == 1u) {
        acc = (acc - stdv[d]) * stdv[p.dim + d];
    }
    out[i] = acc;
}
