// Attention of t query rows (positions pos0..pos0+t) over a ring KV cache: position s lives in
// slot s % slots, rows are [slot][n_kv_heads * head_dim], f16 (pairs in u32) or f32 (bits in
// u32), read 16 bytes at a time. One workgroup per (row, query head):
// 1. scores: one thread per key, a whole head_dim dot product from the query in workgroup memory;
// 2. soft-cap and softmax over the row's scratch;
// 3. values: the workgroup splits into key groups, each thread owning 16 bytes of a V row, so a
//    group reads whole rows with coalesced loads; the groups' partial sums meet in workgroup memory.

struct Params {
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32, // multiple of 8
    slots: u32,
    pos0: u32,    // position of row 0
    t: u32,       // query rows
    span: u32,    // scratch floats per (row, head)
    kv_f16: u32,
    scale: f32,
    softcap: f32, // 0: none
    window: u32,  // 0: none
    part: u32,    // attend_part: keys per part (<= 1024)
    parts: u32,   // attend_part: parts per head
    q_fused: u32, // 1: q rows are normed (weight mode q_wmode) and rotated on load
    q_wmode: u32,
    q_eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kc: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> vc: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> scores: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

@group(0) @binding(6) var<storage, read> qnw: array<f32>;
@group(0) @binding(7) var<storage, read> qfreq: array<f32>;

var<workgroup> qs: array<vec4<f32>, 128>;   // head_dim <= 512
var<workgroup> part: array<vec4<f32>, 512>; // key groups x head_dim / 4

fn lo16(w: u32) -> vec2<f32> {
    return unpack2x16float(w);
}

fn kdot_f16(w: vec4<u32>, i: u32) -> f32 {
    return dot(vec4<f32>(lo16(w.x), lo16(w.y)), qs[2u * i])
        + dot(vec4<f32>(lo16(w.z), lo16(w.w)), qs[2u * i + 1u]);
}

// q . K row starting at vec4 index `vb` (nv vec4s). Four loads are issued before their sums,
// so a thread waits for memory once per four loads rather than once per load.
fn kdot(vb: u32, nv: u32) -> f32 {
    var s = 0.0;
    let n4 = nv & ~3u;
    if (p.kv_f16 == 1u) {
        for (var i = 0u; i < n4; i += 4u) {
            let w0 = kc[vb + i];
            let w1 = kc[vb + i + 1u];
            let w2 = kc[vb + i + 2u];
            let w3 = kc[vb + i + 3u];
            s += kdot_f16(w0, i) + kdot_f16(w1, i + 1u) + kdot_f16(w2, i + 2u)
                + kdot_f16(w3, i + 3u);
        }
        for (var i = n4; i < nv; i++) {
            s += kdot_f16(kc[vb + i], i);
        }
    } else {
        for (var i = 0u; i < n4; i += 4u) {
            let w0 = kc[vb + i];
            let w1 = kc[vb + i + 1u];
            let w2 = kc[vb + i + 2u];
            let w3 = kc[vb + i + 3u];
            s += dot(bitcast<vec4<f32>>(w0), qs[i]) + dot(bitcast<vec4<f32>>(w1), qs[i + 1u])
                + dot(bitcast<vec4<f32>>(w2), qs[i + 2u]) + dot(bitcast<vec4<f32>>(w3), qs[i + 3u]);
        }
        for (var i = n4; i < nv; i++) {
            s += dot(bitcast<vec4<f32>>(kc[vb + i]), qs[i]);
        }
    }
    return s;
}

// The query row at `b` into `qs`: as stored, or normed and rotated at position `pos` (the q norm
// and RoPE fused into the load). Ends with a barrier.
fn load_q(lid: u32, b: u32, pos: u32) {
    let d = p.head_dim;
    if (p.q_fused == 1u) {
        let half = d / 2u;
        let l = min(lid, half - 1u);
        var a0 = q[b + l];
        var a1 = q[b + l + half];
        let w = vec2<f32>(mode_weight(p.q_wmode, qnw[l]), mode_weight(p.q_wmode, qnw[l + half]));
        let f = qfreq[l];
        if (lid >= half) {
            a0 = 0.0;
            a1 = 0.0;
        }
        let r = norm_rope(lid, a0, a1, w, f, pos, d, p.q_eps);
        if (lid < half) {
            qs[l / 4u][l % 4u] = r.x;
            qs[(l + half) / 4u][(l + half) % 4u] = r.y;
        }
    } else {
        for (var x = lid; x < d / 4u; x += 256u) {
            let c = b + 4u * x;
            qs[x] = vec4<f32>(q[c], q[c + 1u], q[c + 2u], q[c + 3u]);
        }
    }
    workgroupBarrier();
}

// The keys one workgroup attends over: positions lo + j for j in j0..j1 of head kvh (nv vec4s
// per head row, slot_v per cache slot); their scores and weights live in the scratch from
// `base` (scores[base + j]) or, when `local`, in workgroup memory (pscore[j - base]).
struct Keys {
    lo: u32,
    j0: u32,
    j1: u32,
    kvh: u32,
    nv: u32,
    slot_v: u32,
    local: bool,
    base: u32,
}

var<workgroup> pscore: array<f32, 1024>;

fn weight_of(k: Keys, j: u32) -> f32 {
    if (k.local) {
        return pscore[j - k.base];
    }
    return scores[k.base + j];
}

fn set_weight(k: Keys, j: u32, v: f32) {
    if (k.local) {
        pscore[j - k.base] = v;
    } else {
        scores[k.base + j] = v;
    }
}

// Scores the keys (q . k * scale, soft-capped) into their weights; the workgroup's max.
fn score_keys(lid: u32, k: Keys) -> f32 {
    var m = -3.4028235e38;
    for (var j = k.j0 + lid; j < k.j1; j += 256u) {
        var s = kdot(((k.lo + j) % p.slots) * k.slot_v + k.kvh * k.nv, k.nv) * p.scale;
        if (p.softcap > 0.0) {
            s = p.softcap * tanh(clamp(s / p.softcap, -15.0, 15.0));
        }
        set_weight(k, j, s);
        m = max(m, s);
    }
    return block_max(lid, m);
}

// Turns the scores into e^(s - m); their sum.
fn exp_keys(lid: u32, k: Keys, m: f32) -> f32 {
    var sum = 0.0;
    for (var j = k.j0 + lid; j < k.j1; j += 256u) {
        let e = exp(weight_of(k, j) - m);
        set_weight(k, j, e);
        sum += e;
    }
    return block_sum(lid, sum);
}

// The weighted sum of the keys' V rows, left in `part` per key group (groups of nv threads,
// group g takes keys j0 + g, j0 + g + groups, ..., each thread 16 bytes of a row, two keys per
// step so both rows' loads are in flight together); returns the number of groups. Ends with a
// barrier.
fn sum_values(lid: u32, k: Keys, d4: u32) -> u32 {
    let groups = 256u / k.nv;
    let c = lid % k.nv;
    let g = lid / k.nv;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    if (g < groups) {
        let row = k.kvh * k.nv + c;
        var j = k.j0 + g;
        for (; j + groups < k.j1; j += 2u * groups) {
            let wa = weight_of(k, j);
            let wb = weight_of(k, j + groups);
            let va = vc[((k.lo + j) % p.slots) * k.slot_v + row];
            let vb = vc[((k.lo + j + groups) % p.slots) * k.slot_v + row];
            if (p.kv_f16 == 1u) {
                a0 += wa * vec4<f32>(lo16(va.x), lo16(va.y)) + wb * vec4<f32>(lo16(vb.x), lo16(vb.y));
                a1 += wa * vec4<f32>(lo16(va.z), lo16(va.w)) + wb * vec4<f32>(lo16(vb.z), lo16(vb.w));
            } else {
                a0 += wa * bitcast<vec4<f32>>(va) + wb * bitcast<vec4<f32>>(vb);
            }
        }
        if (j < k.j1) {
            let wgt = weight_of(k, j);
            let w = vc[((k.lo + j) % p.slots) * k.slot_v + row];
            if (p.kv_f16 == 1u) {
                a0 += wgt * vec4<f32>(lo16(w.x), lo16(w.y));
                a1 += wgt * vec4<f32>(lo16(w.z), lo16(w.w));
            } else {
                a0 += wgt * bitcast<vec4<f32>>(w);
            }
        }
        if (p.kv_f16 == 1u) {
            part[g * d4 + 2u * c] = a0;
            part[g * d4 + 2u * c + 1u] = a1;
        } else {
            part[g * d4 + c] = a0;
        }
    }
    workgroupBarrier();
    return groups;
}

// vec4 x of the value sum: the key groups' parts added.
fn value_sum(x: u32, groups: u32, d4: u32) -> vec4<f32> {
    var acc = vec4<f32>(0.0);
    for (var k = 0u; k < groups; k++) {
        acc += part[k * d4 + x];
    }
    return acc;
}

@compute @workgroup_size(256)
fn attend(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let rh = wid.x + wid.y * nwg.x;
    if (rh >= p.n_heads * p.t) {
        return;
    }
    let row = rh / p.n_heads;
    let h = rh % p.n_heads;
    let pos = p.pos0 + row;
    var lo = 0u;
    if (p.window > 0u && pos + 1u > p.window) {
        lo = pos + 1u - p.window;
    }
    let n = pos + 1u - lo;
    let d = p.head_dim;
    let d4 = d / 4u;
    let kvh = h / (p.n_heads / p.n_kv_heads);
    // vec4s per head row and per cache slot
    var nv = d / 4u;
    if (p.kv_f16 == 1u) {
        nv = d / 8u;
    }
    let slot_v = p.n_kv_heads * nv;
    load_q(lid, rh * d, pos);

    // the row's keys lo.., their weights in the scratch at srow
    let keys = Keys(lo, 0u, n, kvh, nv, slot_v, false, rh * p.span);
    let m = score_keys(lid, keys);
    let inv = 1.0 / exp_keys(lid, keys, m);
    storageBarrier();
    let groups = sum_values(lid, keys, d4);
    for (var x = lid; x < d4; x += 256u) {
        let acc = value_sum(x, groups, d4) * inv;
        let b = rh * d + 4u * x;
        out[b] = acc.x;
        out[b + 1u] = acc.y;
        out[b + 2u] = acc.z;
        out[b + 3u] = acc.w;
    }
}

// ---- Decode (t = 1) split over the keys ("flash decoding"): one workgroup per (head, part of
// `part` keys) writes the part's score max m, exp-sum l and unnormalised value sum to the
// scratch as [m, l, acc[head_dim]]; attention_merge.wgsl combines a head's parts. A long context
// then keeps many workgroups busy instead of one per head.

@compute @workgroup_size(256)
fn attend_part(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = wid.x + wid.y * nwg.x;
    let h = min(g / p.parts, p.n_heads - 1u);
    let s = g % p.parts;
    let pos = p.pos0;
    var lo = 0u;
    if (p.window > 0u && pos + 1u > p.window) {
        lo = pos + 1u - p.window;
    }
    let n = pos + 1u - lo;
    let k0 = min(s * p.part, n);
    let k1 = min(k0 + p.part, n);
    let d = p.head_dim;
    let d4 = d / 4u;
    let kvh = h / (p.n_heads / p.n_kv_heads);
    var nv = d / 4u;
    if (p.kv_f16 == 1u) {
        nv = d / 8u;
    }
    let slot_v = p.n_kv_heads * nv;
    load_q(lid, h * d, pos);

    // the part's keys k0..k1, their weights in workgroup memory
    let keys = Keys(lo, k0, k1, kvh, nv, slot_v, true, k0);
    let m = score_keys(lid, keys);
    let sum = exp_keys(lid, keys, m);
    let groups = sum_values(lid, keys, d4);
    let base = (h * p.parts + s) * (d + 2u);
    if (lid == 0u && g < p.n_heads * p.parts) {
        scores[base] = m;
        scores[base + 1u] = sum;
    }
    for (var x = lid; x < d4; x += 256u) {
        let acc = value_sum(x, groups, d4);
        if (g < p.n_heads * p.parts) {
            let b = base + 2u + 4u * x;
            scores[b] = acc.x;
            scores[b + 1u] = acc.y;
            scores[b + 2u] = acc.z;
            scores[b + 3u] = acc.w;
        }
    }
}
