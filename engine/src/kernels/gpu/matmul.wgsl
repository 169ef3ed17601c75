// y[t, out_row0 + n] = sum_k x[t, k] * W[n, k] for one buffer (row range) of a weight.
//
// The lane reductions (`reduce_store`, `reduce_pair`) come from matmul_reduce_smem.wgsl
// (workgroup memory, runs everywhere) or matmul_reduce_subgroup.wgsl (subgroup shuffles, where
// the adapter's subgroups are at least LANES wide), appended by the host.
//
// Work split: a workgroup of WG threads is WG / LANES row groups of LANES lanes; a row group
// owns NR consecutive rows and its lanes stride over the rows' 16-byte "units" (one q4 block
// of 32 values, 16 q8 values, 8 f16 or 4 f32 values), so a row group reads NR rows with
// coalesced 16-byte loads and each activation load serves NR rows. Tokens go TT at a time
// (decode: TT = 1), so each weight unit is loaded once per token tile. Partial sums meet in
// workgroup memory (no subgroup ops, so it also runs on lavapipe). Out-of-range rows/tokens
// are clamped to valid ones and their results dropped at the store, keeping loads branch-free.

struct Params {
    k: u32,          // columns
    n: u32,          // rows in this buffer
    t: u32,          // tokens
    out_stride: u32, // total rows of the weight (row stride of y)
    out_row0: u32,   // first row of this buffer
    units: u32,      // 16-byte units per row
    gs: u32,         // quantization group size
    scale_word: u32, // u32 index of the first f16 scale
    aux_off: u32,    // matvec_q4_gelu_mul: first index of the multiplier row in `aux`
    // matvec3 only: rows and first scale word of the second and third weight, the first
    // workgroup of each, and whether the weights are q8 (else q4)
    n2: u32,
    n3: u32,
    sw2: u32,
    sw3: u32,
    g2: u32,
    g3: u32,
    q8: u32,
    // matmul_x_pro.wgsl's prologue: 1 residual add, 2 add and pre-norm; the row width, eps,
    // scale of the sum, and whether norm weights are 1 + w
    pro: u32,
    pro_dim: u32,
    pro_eps: f32,
    pro_scale: f32,
    pro_plus1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;
// binding 2, the activations `x`, `xload(i)` (vec4 i of the activations as f32) and the decode
// kernels' `prologue` come from the prelude the host puts first: matmul_x_f32.wgsl,
// matmul_x_f16.wgsl for f16 activations (shader-f16), or matmul_x_pro.wgsl (decode activations
// made from the previous block's output in the prologue).
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
// the same buffer as `w`, seen as words for the f16 scales (q4/q8 only)
@group(0) @binding(4) var<storage, read> ws: array<u32>;

override WG: u32 = 256u;
override LANES: u32 = 32u;
override NR: u32 = 2u; // rows per row group, <= 4
override TT: u32 = 1u; // tokens per tile, <= 4

fn scale_at(s: u32) -> f32 {
    return unpack2x16float(ws[p.scale_word + s / 2u])[s % 2u];
}

fn first_row(lid: u32, wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return ((wid.x + wid.y * nwg.x) * (WG / LANES) + lid / LANES) * NR;
}

// Integers to floats without conversion instructions (quarter rate on many GPUs): a value
// 0 <= v < 2^23 OR-ed into the mantissa of 2^23 is the float 2^23 + v, exactly.
const MAGIC: u32 = 0x4B000000u;

// The four low nibbles of the bytes of v, as q - 8.
fn nib(v: u32) -> vec4<f32> {
    let u = (vec4<u32>(v, v >> 8u, v >> 16u, v >> 24u) & vec4<u32>(15u)) | vec4<u32>(MAGIC);
    return bitcast<vec4<f32>>(u) - vec4<f32>(8388616.0);
}

// The four bytes of v as signed values (flipping the sign bit makes them unsigned + 128).
fn sbytes(v: u32) -> vec4<f32> {
    let f = v ^ 0x80808080u;
    let u = (vec4<u32>(f, f >> 8u, f >> 16u, f >> 24u) & vec4<u32>(255u)) | vec4<u32>(MAGIC);
    return bitcast<vec4<f32>>(u) - vec4<f32>(8388736.0);
}

@compute @workgroup_size(WG)
fn matmul_q4(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let row0 = first_row(lid, wid, nwg);
    let kv = p.k / 4u;
    let gpr = p.k / p.gs;
    for (var t0 = 0u; t0 < p.t; t0 += TT) {
        var acc: array<f32, 16>;
        for (var u = lid % LANES; u < p.units; u += LANES) {
            var q: array<vec4<u32>, 4>;
            var s: array<f32, 4>;
            for (var r = 0u; r < NR; r++) {
                let row = min(row0 + r, p.n - 1u);
                q[r] = w[row * p.units + u];
                s[r] = scale_at(row * gpr + (u * 32u) / p.gs);
            }
            for (var i = 0u; i < TT; i++) {
                let xb = min(t0 + i, p.t - 1u) * kv + u * 8u;
                let x0 = xload(xb);
                let x1 = xload(xb + 1u);
                let x2 = xload(xb + 2u);
                let x3 = xload(xb + 3u);
                let x4 = xload(xb + 4u);
                let x5 = xload(xb + 5u);
                let x6 = xload(xb + 6u);
                let x7 = xload(xb + 7u);
                for (var r = 0u; r < NR; r++) {
                    let b = q[r];
                    var d = dot(nib(b.x), x0) + dot(nib(b.x >> 4u), x4);
                    d += dot(nib(b.y), x1) + dot(nib(b.y >> 4u), x5);
                    d += dot(nib(b.z), x2) + dot(nib(b.z >> 4u), x6);
                    d += dot(nib(b.w), x3) + dot(nib(b.w >> 4u), x7);
                    acc[i * NR + r] += d * s[r];
                }
            }
        }
        reduce_store(acc, lid, row0, t0);
    }
}

@compute @workgroup_size(WG)
fn matmul_q8(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let row0 = first_row(lid, wid, nwg);
    let kv = p.k / 4u;
    let gpr = p.k / p.gs;
    for (var t0 = 0u; t0 < p.t; t0 += TT) {
        var acc: array<f32, 16>;
        for (var u = lid % LANES; u < p.units; u += LANES) {
            var q: array<vec4<u32>, 4>;
            var s: array<f32, 4>;
            for (var r = 0u; r < NR; r++) {
                let row = min(row0 + r, p.n - 1u);
                q[r] = w[row * p.units + u];
                s[r] = scale_at(row * gpr + (u * 16u) / p.gs);
            }
            for (var i = 0u; i < TT; i++) {
                let xb = min(t0 + i, p.t - 1u) * kv + u * 4u;
                let x0 = xload(xb);
                let x1 = xload(xb + 1u);
                let x2 = xload(xb + 2u);
                let x3 = xload(xb + 3u);
                for (var r = 0u; r < NR; r++) {
                    let b = q[r];
                    let d = dot(sbytes(b.x), x0) + dot(sbytes(b.y), x1) + dot(sbytes(b.z), x2)
                        + dot(sbytes(b.w), x3);
                    acc[i * NR + r] += d * s[r];
                }
            }
        }
        reduce_store(acc, lid, row0, t0);
    }
}

@compute @workgroup_size(WG)
fn matmul_f16(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let row0 = first_row(lid, wid, nwg);
    let kv = p.k / 4u;
    for (var t0 = 0u; t0 < p.t; t0 += TT) {
        var acc: array<f32, 16>;
        for (var u = lid % LANES; u < p.units; u += LANES) {
            var q: array<vec4<u32>, 4>;
            for (var r = 0u; r < NR; r++) {
                q[r] = w[min(row0 + r, p.n - 1u) * p.units + u];
            }
            for (var i = 0u; i < TT; i++) {
                let xb = min(t0 + i, p.t - 1u) * kv + u * 2u;
                let x0 = xload(xb);
                let x1 = xload(xb + 1u);
                for (var r = 0u; r < NR; r++) {
                    let b = q[r];
                    let a0 = vec4<f32>(unpack2x16float(b.x), unpack2x16float(b.y));
                    let a1 = vec4<f32>(unpack2x16float(b.z), unpack2x16float(b.w));
                    acc[i * NR + r] += dot(a0, x0) + dot(a1, x1);
                }
            }
        }
        reduce_store(acc, lid, row0, t0);
    }
}

@compute @workgroup_size(WG)
fn matmul_f32(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let row0 = first_row(lid, wid, nwg);
    let kv = p.k / 4u;
    for (var t0 = 0u; t0 < p.t; t0 += TT) {
        var acc: array<f32, 16>;
        for (var u = lid % LANES; u < p.units; u += LANES) {
            var q: array<vec4<f32>, 4>;
            for (var r = 0u; r < NR; r++) {
                q[r] = bitcast<vec4<f32>>(w[min(row0 + r, p.n - 1u) * p.units + u]);
            }
            for (var i = 0u; i < TT; i++) {
                let xv = xload(min(t0 + i, p.t - 1u) * kv + u);
                for (var r = 0u; r < NR; r++) {
                    acc[i * NR + r] += dot(q[r], xv);
                }
            }
        }
        reduce_store(acc, lid, row0, t0);
    }
}

// ---- decode (t = 1): scalar accumulators and explicit rows (NR = 1 or 2), so nothing is
// indexed dynamically and every value stays in registers.

fn q4_dot(b: vec4<u32>, xb: u32) -> f32 {
    var d = dot(nib(b.x), xload(xb)) + dot(nib(b.x >> 4u), xload(xb + 4u));
    d += dot(nib(b.y), xload(xb + 1u)) + dot(nib(b.y >> 4u), xload(xb + 5u));
    d += dot(nib(b.z), xload(xb + 2u)) + dot(nib(b.z >> 4u), xload(xb + 6u));
    d += dot(nib(b.w), xload(xb + 3u)) + dot(nib(b.w >> 4u), xload(xb + 7u));
    return d;
}

fn q8_dot(b: vec4<u32>, xb: u32) -> f32 {
    return dot(sbytes(b.x), xload(xb)) + dot(sbytes(b.y), xload(xb + 1u)) + dot(sbytes(b.z), xload(xb + 2u))
        + dot(sbytes(b.w), xload(xb + 3u));
}

fn f16_dot(b: vec4<u32>, xb: u32) -> f32 {
    return dot(vec4<f32>(unpack2x16float(b.x), unpack2x16float(b.y)), xload(xb))
        + dot(vec4<f32>(unpack2x16float(b.z), unpack2x16float(b.w)), xload(xb + 1u));
}

fn store2(a: f32, b: f32, lid: u32, row0: u32) {
    var acc: array<f32, 16>;
    acc[0] = a;
    acc[1] = b;
    reduce_store(acc, lid, row0, 0u);
}

// One q4 unit (32 weights of row `row`, 16 bytes) times x, scaled.
fn q4_unit(row: u32, u: u32, gpr: u32) -> f32 {
    return q4_dot(w[row * p.units + u], u * 8u) * scale_at(row * gpr + (u * 32u) / p.gs);
}

@compute @workgroup_size(WG)
fn matvec_q4(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    prologue(lid, wid.x + wid.y == 0u);
    let row0 = first_row(lid, wid, nwg);
    let ra = min(row0, p.n - 1u);
    let rb = min(row0 + 1u, p.n - 1u);
    let gpr = p.k / p.gs;
    var a = 0.0;
    var b = 0.0;
    // two units per step, so each lane has twice the loads in flight
    var u = lid % LANES;
    for (; u + LANES < p.units; u += 2u * LANES) {
        let v = u + LANES;
        if (NR == 2u) {
            b += q4_unit(rb, u, gpr) + q4_unit(rb, v, gpr);
        }
        a += q4_unit(ra, u, gpr) + q4_unit(ra, v, gpr);
    }
    if (u < p.units) {
        if (NR == 2u) {
            b += q4_unit(rb, u, gpr);
        }
        a += q4_unit(ra, u, gpr);
    }
    store2(a, b, lid, row0);
}

@compute @workgroup_size(WG)
fn matvec_q8(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    prologue(lid, wid.x + wid.y == 0u);
    let row0 = first_row(lid, wid, nwg);
    let ra = min(row0, p.n - 1u);
    let rb = min(row0 + 1u, p.n - 1u);
    let gpr = p.k / p.gs;
    var a = 0.0;
    var b = 0.0;
    for (var u = lid % LANES; u < p.units; u += LANES) {
        let g = (u * 16u) / p.gs;
        let qa = w[ra * p.units + u];
        let sa = scale_at(ra * gpr + g);
        if (NR == 2u) {
            let qb = w[rb * p.units + u];
            let sb = scale_at(rb * gpr + g);
            b += q8_dot(qb, u * 4u) * sb;
        }
        a += q8_dot(qa, u * 4u) * sa;
    }
    store2(a, b, lid, row0);
}

@compute @workgroup_size(WG)
fn matvec_f16(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    prologue(lid, wid.x + wid.y == 0u);
    let row0 = first_row(lid, wid, nwg);
    let ra = min(row0, p.n - 1u);
    let rb = min(row0 + 1u, p.n - 1u);
    var a = 0.0;
    var b = 0.0;
    for (var u = lid % LANES; u < p.units; u += LANES) {
        let qa = w[ra * p.units + u];
        if (NR == 2u) {
            b += f16_dot(w[rb * p.units + u], u * 2u);
        }
        a += f16_dot(qa, u * 2u);
    }
    store2(a, b, lid, row0);
}

@compute @workgroup_size(WG)
fn matvec_f32(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    prologue(lid, wid.x + wid.y == 0u);
    let row0 = first_row(lid, wid, nwg);
    let ra = min(row0, p.n - 1u);
    let rb = min(row0 + 1u, p.n - 1u);
    var a = 0.0;
    var b = 0.0;
    for (var u = lid % LANES; u < p.units; u += LANES) {
        let xv = xload(u);
        let qa = bitcast<vec4<f32>>(w[ra * p.units + u]);
        if (NR == 2u) {
            b += dot(bitcast<vec4<f32>>(w[rb * p.units + u]), xv);
        }
        a += dot(qa, xv);
    }
    store2(a, b, lid, row0);
}

// ---- decode MLP (t = 1): gate and up rows in one pass, y[r] = gelu_tanh(gate_r . x) * (up_r . x)
// (both q4 with the same shape and groups).

@group(0) @binding(5) var<storage, read> w2: array<vec4<u32>>;
@group(0) @binding(6) var<storage, read> ws2: array<u32>;

fn scale2_at(s: u32) -> f32 {
    return unpack2x16float(ws2[p.scale_word + s / 2u])[s % 2u];
}

fn gelu_tanh(v: f32) -> f32 {
    return 0.5 * v * (1.0 + tanh(clamp(0.7978846 * (v + 0.044715 * v * v * v), -15.0, 15.0)));
}

// q4 unit `b` times the 8 vec4s of x it covers.
fn q4_dot_x(b: vec4<u32>, xs: array<vec4<f32>, 8>) -> f32 {
    var d = dot(nib(b.x), xs[0]) + dot(nib(b.x >> 4u), xs[4]);
    d += dot(nib(b.y), xs[1]) + dot(nib(b.y >> 4u), xs[5]);
    d += dot(nib(b.z), xs[2]) + dot(nib(b.z >> 4u), xs[6]);
    d += dot(nib(b.w), xs[3]) + dot(nib(b.w >> 4u), xs[7]);
    return d;
}

// NR (1 or 2) rows per row group; each x unit is loaded once for the 2 * NR weight units.
@compute @workgroup_size(WG)
fn matvec_q4_glu(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    prologue(lid, wid.x + wid.y == 0u);
    let row0 = first_row(lid, wid, nwg);
    let ra = min(row0, p.n - 1u);
    let rb = min(row0 + 1u, p.n - 1u);
    let gpr = p.k / p.gs;
    var ga = 0.0;
    var ua = 0.0;
    var gb = 0.0;
    var ub = 0.0;
    for (var u = lid % LANES; u < p.units; u += LANES) {
        let xb = u * 8u;
        let xs = array<vec4<f32>, 8>(xload(xb), xload(xb + 1u), xload(xb + 2u), xload(xb + 3u), xload(xb + 4u),
                                     xload(xb + 5u), xload(xb + 6u), xload(xb + 7u));
        let g = (u * 32u) / p.gs;
        let qa = w[ra * p.units + u];
        let va = w2[ra * p.units + u];
        if (NR == 2u) {
            let qb = w[rb * p.units + u];
            let vb = w2[rb * p.units + u];
            gb += q4_dot_x(qb, xs) * scale_at(rb * gpr + g);
            ub += q4_dot_x(vb, xs) * scale2_at(rb * gpr + g);
        }
        ga += q4_dot_x(qa, xs) * scale_at(ra * gpr + g);
        ua += q4_dot_x(va, xs) * scale2_at(ra * gpr + g);
    }
    let a = reduce_pair(ga, ua, lid);
    var b = vec2<f32>(0.0);
    if (NR == 2u) {
        b = reduce_pair(gb, ub, lid);
    }
    if (lid % LANES == 0u) {
        if (row0 < p.n) {
            y[p.out_row0 + row0] = gelu_tanh(a.x) * a.y;
        }
        if (NR == 2u && row0 + 1u < p.n) {
            y[p.out_row0 + row0 + 1u] = gelu_tanh(b.x) * b.y;
        }
    }
}

// ---- decode (t = 1) with an epilogue: y[r] = gelu_tanh(W_r . x) * aux[aux_off + r]
// (Gemma 4's per-layer-input gate: the gated activations without a separate pass).

// (binding 5 is also matvec_q4_glu's `w2`: no entry point uses both)
@group(0) @binding(5) var<storage, read> aux: array<f32>;

@compute @workgroup_size(WG)
fn matvec_q4_gelu_mul(@builtin(local_invocation_index) lid: u32,
                      @builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>) {
    prologue(lid, wid.x + wid.y == 0u);
    let row = (wid.x + wid.y * nwg.x) * (WG / LANES) + lid / LANES;
    let r = min(row, p.n - 1u);
    let gpr = p.k / p.gs;
    var a = 0.0;
    for (var u = lid % LANES; u < p.units; u += LANES) {
        a += q4_unit(r, u, gpr);
    }
    let s = reduce_pair(a, 0.0, lid);
    if (lid % LANES == 0u && row < p.n) {
        y[row] = gelu_tanh(s.x) * aux[p.aux_off + row];
    }
}

// ---- decode (t = 1): three weights of one shape family (q, k and v) in one dispatch.
// Workgroups [0, g2) take rows of `w` into `y`, [g2, g3) rows of `w2` into `y2`, [g3, ..) rows
// of `w3` into `y3`; every weight is q4 (or q8 with p.q8) with the same columns and group size,
// and its f16 scales are read from its own vec4 view (no separate scale bindings, so the entry
// needs 7 storage buffers).

@group(0) @binding(7) var<storage, read> w3: array<vec4<u32>>;
@group(0) @binding(8) var<storage, read_write> y2: array<f32>;
@group(0) @binding(9) var<storage, read_write> y3: array<f32>;

// The f16 scale `s` of a weight from its 16-byte unit `v`, which holds scale word `word`.
fn scale_of(v: vec4<u32>, word: u32, s: u32) -> f32 {
    return unpack2x16float(v[word % 4u])[s % 2u];
}

// Scale index of unit `u` of row `row`, for the weight's dtype.
fn scale_index(row: u32, u: u32, gpr: u32) -> u32 {
    let per_unit = select(32u, 16u, p.q8 == 1u);
    return row * gpr + (u * per_unit) / p.gs;
}

// A unit of weight data times x (unscaled), for the weight's dtype.
fn unit_dot(b: vec4<u32>, u: u32) -> f32 {
    if (p.q8 == 1u) {
        return q8_dot(b, u * 4u);
    }
    return q4_dot(b, u * 8u);
}

// Partial sums of rows ra and rb (lanes stride the units) of w, w2 or w3.
fn rows_w1(ra: u32, rb: u32, lane: u32, sw: u32, gpr: u32) -> vec2<f32> {
    var acc = vec2<f32>(0.0);
    for (var u = lane; u < p.units; u += LANES) {
        let sa = scale_index(ra, u, gpr);
        let sb = scale_index(rb, u, gpr);
        let wa = sw + sa / 2u;
        let wb = sw + sb / 2u;
        acc.x += unit_dot(w[ra * p.units + u], u) * scale_of(w[wa / 4u], wa, sa);
        if (NR == 2u) {
            acc.y += unit_dot(w[rb * p.units + u], u) * scale_of(w[wb / 4u], wb, sb);
        }
    }
    return acc;
}

fn rows_w2(ra: u32, rb: u32, lane: u32, sw: u32, gpr: u32) -> vec2<f32> {
    var acc = vec2<f32>(0.0);
    for (var u = lane; u < p.units; u += LANES) {
        let sa = scale_index(ra, u, gpr);
        let sb = scale_index(rb, u, gpr);
        let wa = sw + sa / 2u;
        let wb = sw + sb / 2u;
        acc.x += unit_dot(w2[ra * p.units + u], u) * scale_of(w2[wa / 4u], wa, sa);
        if (NR == 2u) {
            acc.y += unit_dot(w2[rb * p.units + u], u) * scale_of(w2[wb / 4u], wb, sb);
        }
    }
    return acc;
}

fn rows_w3(ra: u32, rb: u32, lane: u32, sw: u32, gpr: u32) -> vec2<f32> {
    var acc = vec2<f32>(0.0);
    for (var u = lane; u < p.units; u += LANES) {
        let sa = scale_index(ra, u, gpr);
        let sb = scale_index(rb, u, gpr);
        let wa = sw + sa / 2u;
        let wb = sw + sb / 2u;
        acc.x += unit_dot(w3[ra * p.units + u], u) * scale_of(w3[wa / 4u], wa, sa);
        if (NR == 2u) {
            acc.y += unit_dot(w3[rb * p.units + u], u) * scale_of(w3[wb / 4u], wb, sb);
        }
    }
    return acc;
}

@compute @workgroup_size(WG)
fn matvec3(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    prologue(lid, wid.x + wid.y == 0u);
    let g = wid.x + wid.y * nwg.x;
    // which weight this workgroup serves (uniform across the workgroup)
    var j = 0u;
    var g0 = 0u;
    var n = p.n;
    var sw = p.scale_word;
    if (g >= p.g3) {
        j = 2u;
        g0 = p.g3;
        n = p.n3;
        sw = p.sw3;
    } else if (g >= p.g2) {
        j = 1u;
        g0 = p.g2;
        n = p.n2;
        sw = p.sw2;
    }
    let row0 = ((g - g0) * (WG / LANES) + lid / LANES) * NR;
    let ra = min(row0, n - 1u);
    let rb = min(row0 + 1u, n - 1u);
    let gpr = p.k / p.gs;
    let lane = lid % LANES;
    var acc: vec2<f32>;
    if (j == 0u) {
        acc = rows_w1(ra, rb, lane, sw, gpr);
    } else if (j == 1u) {
        acc = rows_w2(ra, rb, lane, sw, gpr);
    } else {
        acc = rows_w3(ra, rb, lane, sw, gpr);
    }
    let s = reduce_pair(acc.x, acc.y, lid);
    if (lane == 0u) {
        for (var r = 0u; r < NR; r++) {
            if (row0 + r < n) {
                let v = s[r];
                if (j == 0u) {
                    y[row0 + r] = v;
                } else if (j == 1u) {
                    y2[row0 + r] = v;
                } else {
                    y3[row0 + r] = v;
                }
            }
        }
    }
}
