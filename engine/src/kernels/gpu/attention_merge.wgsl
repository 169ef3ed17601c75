// Combines the parts written by attention.wgsl's `attend_part` for one query row: per head,
// M = max_s m_s, out = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s. One workgroup per head.

struct Params {
    n_heads: u32,
    head_dim: u32,
    parts: u32, // <= 256
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> parts: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

var<workgroup> weight: array<f32, 256>;

@compute @workgroup_size(256)
fn attend_merge(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let h = wid.x + wid.y * nwg.x;
    if (h >= p.n_heads) {
        return;
    }
    let d = p.head_dim;
    let stride = d + 2u;
    let base = h * p.parts * stride;
    var m = -3.4028235e38;
    if (lid < p.parts) {
        m = parts[base + lid * stride];
    }
    let mx = block_max(lid, m);
    var w = 0.0;
    var l = 0.0;
    if (lid < p.parts) {
        w = exp(m - mx);
        l = w * parts[base + lid * stride + 1u];
    }
    weight[lid] = w;
    let total = block_sum(lid, l);
    for (var x = lid; x < d; x += 256u) {
        var acc = 0.0;
        for (var s = 0u; s < p.parts; s++) {
            acc += weight[s] * parts[base + s * stride + 2u + x];
        }
        out[h * d + x] = acc / total;
    }
}
