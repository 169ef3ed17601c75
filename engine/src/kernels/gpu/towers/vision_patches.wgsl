// Per-patch ops of the vision tower: the learned 2-D position embeddings (one thread per
// element) and the q/k/v head norms with the axial RoPE of q/k (one thread per head row).

struct Params {
    n: u32,
    dim: u32,
    a: u32,
    eps: f32,
    flags: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> aux: array<f32>;
@group(0) @binding(3) var<storage, read> aux2: array<f32>;

fn index(lid: u32, wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return (wid.x + wid.y * nwg.x) * 256u + lid;
}

// x [n, dim] += table[px] + table[size + py]: `aux` is the table [2 size, dim], `aux2` holds
// (px, py) per patch as f32, `a` is size.
@compute @workgroup_size(256)
fn add_position(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(lid, wid, nwg);
    if (i >= p.n * p.dim) {
        return;
    }
    let t = i / p.dim;
    let d = i % p.dim;
    let px = u32(aux2[2u * t]);
    let py = u32(aux2[2u * t + 1u]);
    x[i] = (x[i] + aux[px * p.dim + d]) + aux[(p.a + py) * p.dim + d];
}

// Every head row of x [n, heads, 4 quarter]: RMSNorm (eps, times the weight `aux2` when flags
// bit 0), then, when flags bit 1, the axial RoPE: dims [0, 2 quarter) turn by the patch's x
// angles, [2 quarter, 4 quarter) by its y angles, each half pairing (i, i + quarter); `aux` holds
// cos_x, sin_x, cos_y, sin_y, each [n, quarter]. `dim` is heads, `a` is quarter.
@compute @workgroup_size(256)
fn head_norm_rope(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(lid, wid, nwg);
    if (i >= p.n * p.dim) {
        return;
    }
    let qr = p.a;
    let hd = 4u * qr;
    let base = i * hd;
    var ss = 0.0;
    for (var d = 0u; d < hd; d++) {
        let v = x[base + d];
        ss += v * v;
    }
    let r = 1.0 / sqrt(ss / f32(hd) + p.eps);
    let weighted = (p.flags & 1u) != 0u;
    let rope = (p.flags & 2u) != 0u;
    let t = i / p.dim;
    let nq = p.n * qr;
    for (var half = 0u; half < 2u; half++) {
        for (var f = 0u; f < qr; f++) {
            let d0 = half * 2u * qr + f;
            var x0 = x[base + d0] * r;
            var x1 = x[base + d0 + qr] * r;
            if (weighted) {
                x0 *= aux2[d0];
                x1 *= aux2[d0 + qr];
            }
            if (rope) {
                let c = aux[2u * half * nq + t * qr + f];
                let s = aux[(2u * half + 1u) * nq + t * qr + f];
                x[base + d0] = x0 * c - x1 * s;
                x[base + d0 + qr] = x1 * c + x0 * s;
            } else {
                x[base + d0] = x0;
                x[base + d0 + qr] = x1;
            }
        }
    }
}
