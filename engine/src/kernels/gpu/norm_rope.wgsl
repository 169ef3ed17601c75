// Gemma's q/k norm followed by rotate-half RoPE on one head row held by a workgroup; the host
// appends this file (after block_reduce.wgsl's users) to rope.wgsl, kv_store.wgsl and
// attention.wgsl. Angles are pos * inv_freq (f32, as the CPU), reduced to [-pi, pi] with fma
// before cos/sin because GPU cos/sin are only accurate near zero.

const TWO_PI_HI: f32 = 6.28125;
const TWO_PI_LO: f32 = 0.0019353071795864769;
const INV_TWO_PI: f32 = 0.15915494309189535;

fn cos_sin(a: f32) -> vec2<f32> {
    let k = round(a * INV_TWO_PI);
    let r = fma(-k, TWO_PI_LO, fma(-k, TWO_PI_HI, a));
    return vec2<f32>(cos(r), sin(r));
}

// The weight of norm mode `mode` (0 none, 1 w, 2 1 + w) given the stored value `v`.
fn mode_weight(mode: u32, v: f32) -> f32 {
    if (mode == 1u) {
        return v;
    } else if (mode == 2u) {
        return 1.0 + v;
    }
    return 1.0;
}

// RMSNorm over a row of `dim` values, then the rotation at position `pos`, of the pair
// (x0, x1) = (row[j], row[j + dim / 2]) that thread j holds (threads past the half pass zeros
// and get garbage back). `w` are the pair's norm weights, `f` its inverse frequency (0: no
// rotation). Every thread of the workgroup must call it (a block reduction).
fn norm_rope(lid: u32, x0: f32, x1: f32, w: vec2<f32>, f: f32, pos: u32, dim: u32,
             eps: f32) -> vec2<f32> {
    let inv = 1.0 / sqrt(block_sum(lid, x0 * x0 + x1 * x1) / f32(dim) + eps);
    var a = x0 * (inv * w.x);
    var b = x1 * (inv * w.y);
    if (f != 0.0) {
        let cs = cos_sin(f32(pos) * f);
        let r0 = a * cs.x - b * cs.y;
        b = b * cs.x + a * cs.y;
        a = r0;
    }
    return vec2<f32>(a, b);
}
