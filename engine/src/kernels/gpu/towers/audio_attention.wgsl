// The audio conformer's chunked local self-attention (`Gemma4AudioAttention`), computed per
// query: query t of a head sees keys s with 0 <= t - s < past, scores
//   l = (q * qf) . (k * k_scale) + (q * qf) . rel_k[past - (t - s)]   (row < positions only)
// soft-capped as cap * tanh(l / cap); invalid key frames (flags[s * flag_stride] == 0) score
// `invalid`. When every key is invalid, the reference's softmax is uniform over its whole
// block window of `ctx` keys (zeros beyond the clip), which is reproduced as is.
// One 64-thread workgroup per (query, head): 4 threads per key for the scores, a thread per
// head dimension for the weighted sum of values.

struct Params {
    t: u32,
    hid: u32,
    heads: u32,
    hd: u32,
    past: u32,
    positions: u32,
    chunk: u32,
    ctx: u32,
    cap: f32,
    invalid: f32,
    k_scale: f32,
    flag_stride: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> k: array<f32>;
@group(0) @binding(4) var<storage, read> v: array<f32>;
@group(0) @binding(5) var<storage, read> rel_k: array<f32>;
@group(0) @binding(6) var<storage, read> qf: array<f32>;
@group(0) @binding(7) var<storage, read> flags: array<f32>;

// The host checks hd <= MAX_HD and past <= MAX_PAST.
const MAX_HD: u32 = 512u;
const MAX_PAST: u32 = 256u;

var<workgroup> qs: array<f32, MAX_HD>;
var<workgroup> logits: array<f32, MAX_PAST>;
var<workgroup> part_k: array<f32, 64>;
var<workgroup> part_rel: array<f32, 64>;

fn valid(s: u32) -> bool {
    return flags[s * p.flag_stride] != 0.0;
}

@compute @workgroup_size(64)
fn local_attention(@builtin(local_invocation_index) lid: u32,
                   @builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= p.t * p.heads) {
        return;
    }
    let ti = g / p.heads;
    let col = (g % p.heads) * p.hd;
    for (var d = lid; d < p.hd; d += 64u) {
        qs[d] = q[ti * p.hid + col + d] * qf[d];
    }
    workgroupBarrier();
    var s0 = 0u;
    if (ti + 1u > p.past) {
        s0 = ti + 1u - p.past;
    }
    let nk = ti + 1u - s0;
    // scores, 16 keys at a time: 4 threads per key sum every 4th dimension (neighbouring
    // threads read neighbouring values), then the key's first thread adds the 4 partial sums
    let part = lid % 4u;
    for (var j0 = 0u; j0 < nk; j0 += 16u) {
        let j = j0 + lid / 4u;
        var l = 0.0;
        var rl = 0.0;
        if (j < nk) {
            let s = s0 + j;
            let kb = s * p.hid + col;
            for (var d = part; d < p.hd; d += 4u) {
                l += qs[d] * (k[kb + d] * p.k_scale);
            }
            let r = p.past - (ti - s);
            if (r < p.positions) {
                for (var d = part; d < p.hd; d += 4u) {
                    rl += qs[d] * rel_k[r * p.hid + col + d];
                }
            }
        }
        part_k[lid] = l;
        part_rel[lid] = rl;
        workgroupBarrier();
        if (part == 0u && j < nk) {
            let c = part_k[lid] + part_k[lid + 1u] + part_k[lid + 2u] + part_k[lid + 3u];
            let r = part_rel[lid] + part_rel[lid + 1u] + part_rel[lid + 2u] + part_rel[lid + 3u];
            // tanh's argument clamped: some drivers build tanh from exp (NaN for large inputs)
            let capped = tanh(clamp((c + r) / p.cap, -15.0, 15.0)) * p.cap;
            logits[j] = select(p.invalid, capped, valid(s0 + j));
        }
        workgroupBarrier();
    }
    var any_valid = false;
    var m = -3.4028235e38;
    for (var j = 0u; j < nk; j++) {
        any_valid = any_valid || valid(s0 + j);
        m = max(m, logits[j]);
    }
    var sum = 0.0;
    for (var j = 0u; j < nk; j++) {
        sum += exp(logits[j] - m);
    }
    let inv = 1.0 / sum;
    // the all-masked window: block start b0, keys b0 - past .. b0 + ctx - past (clipped)
    let b0 = ti / p.chunk * p.chunk;
    let lo = select(0u, b0 - p.past, b0 > p.past);
    let hi = min(select(0u, b0 + p.ctx - p.past, b0 + p.ctx > p.past), p.t);
    let uniform_p = 1.0 / f32(p.ctx);
    for (var d = lid; d < p.hd; d += 64u) {
        var acc = 0.0;
        if (any_valid) {
            for (var j = 0u; j < nk; j++) {
                acc += exp(logits[j] - m) * inv * v[(s0 + j) * p.hid + col + d];
            }
        } else {
            for (var s = lo; s < hi; s++) {
                acc += uniform_p * v[s * p.hid + col + d];
            }
        }
        out[ti * p.hid + col + d] = acc;
    }
}
