// Decode activations made in the kernel's prologue (matmul.wgsl, t = 1): the previous block's
// residual add with its post-norm and, optionally, the next block's pre-norm, folded into the
// matvec that consumes them (one dispatch instead of two). Every workgroup computes
//   r = (x + (a * post) * rms(a)^-1) * pro_scale        (post: w, or 1 + w for Gemma 3)
//   xs = r, or r * rms(r)^-1 * pre                        (p.pro == 2: the pre-norm)
// into workgroup memory, and the first workgroup also stores r as the new residual stream
// (`pro_x`, a different buffer from `x`: other workgroups still read `x`).

@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read> pro_a: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read_write> pro_x: array<vec4<f32>>;
@group(0) @binding(12) var<storage, read> pro_post: array<vec4<f32>>;
@group(0) @binding(13) var<storage, read> pro_pre: array<vec4<f32>>;

// rows up to 2560 wide (every Gemma 3/4 width up to 4B; the host checks)
var<workgroup> xs: array<vec4<f32>, 640>;
var<workgroup> pro_red: array<f32, 256>;

fn xload(i: u32) -> vec4<f32> {
    return xs[i];
}

fn pro_sum(lid: u32, v: f32) -> f32 {
    pro_red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            pro_red[lid] += pro_red[lid + s];
        }
        workgroupBarrier();
    }
    let r = pro_red[0];
    workgroupBarrier();
    return r;
}

// A norm weight (Gemma 3 norms scale by 1 + w).
fn pro_w(v: vec4<f32>) -> vec4<f32> {
    if (p.pro_plus1 == 1u) {
        return v + vec4<f32>(1.0);
    }
    return v;
}

fn prologue(lid: u32, first: bool) {
    let n4 = p.pro_dim / 4u;
    var ss = 0.0;
    for (var i = lid; i < n4; i += WG) {
        let v = pro_a[i];
        ss += dot(v, v);
    }
    let inv = 1.0 / sqrt(pro_sum(lid, ss) / f32(p.pro_dim) + p.pro_eps);
    var ss2 = 0.0;
    for (var i = lid; i < n4; i += WG) {
        let r = (x[i] + pro_a[i] * pro_w(pro_post[i]) * inv) * p.pro_scale;
        xs[i] = r;
        ss2 += dot(r, r);
        if (first) {
            pro_x[i] = r;
        }
    }
    if (p.pro == 2u) {
        let inv2 = 1.0 / sqrt(pro_sum(lid, ss2) / f32(p.pro_dim) + p.pro_eps);
        for (var i = lid; i < n4; i += WG) {
            xs[i] = xs[i] * inv2 * pro_w(pro_pre[i]);
        }
    }
    workgroupBarrier();
}
