// Attention of one query (position `pos`) over a ring KV cache: position s lives in slot
// s % slots, rows are [slot][n_kv_heads * head_dim], f16 (pairs in u32) or f32 (bits in u32).
// One workgroup per query head: scores into the scratch row of the head, soft-cap, softmax,
// then the weighted sum of values with threads over head_dim (coalesced reads of V rows).

struct Params {
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    slots: u32,
    lo: u32,      // first visible key position
    n: u32,       // visible keys: lo ..= pos
    span: u32,    // scratch floats per head
    kv_f16: u32,
    scale: f32,
    softcap: f32, // 0: none
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kc: array<u32>;
@group(0) @binding(3) var<storage, read> vc: array<u32>;
@group(0) @binding(4) var<storage, read_write> scores: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

var<workgroup> red: array<f32, 256>;
var<workgroup> qs: array<f32, 512>;

fn kval(i: u32) -> f32 {
    if (p.kv_f16 == 1u) {
        return unpack2x16float(kc[i / 2u])[i % 2u];
    }
    return bitcast<f32>(kc[i]);
}

fn vval(i: u32) -> f32 {
    if (p.kv_f16 == 1u) {
        return unpack2x16float(vc[i / 2u])[i % 2u];
    }
    return bitcast<f32>(vc[i]);
}

fn reduce(lid: u32, v: f32, is_max: bool) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            if (is_max) {
                red[lid] = max(red[lid], red[lid + s]);
            } else {
                red[lid] += red[lid + s];
            }
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256)
fn attend(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let h = wid.x + wid.y * nwg.x;
    if (h >= p.n_heads) {
        return;
    }
    let d = p.head_dim;
    let kvh = h / (p.n_heads / p.n_kv_heads);
    let kv_dim = p.n_kv_heads * d;
    for (var x = lid; x < d; x += 256u) {
        qs[x] = q[h * d + x];
    }
    workgroupBarrier();
    let srow = h * p.span;
    var m = -3.4028235e38;
    for (var j = lid; j < p.n; j += 256u) {
        let base = ((p.lo + j) % p.slots) * kv_dim + kvh * d;
        var s = 0.0;
        for (var x = 0u; x < d; x++) {
            s += qs[x] * kval(base + x);
        }
        s *= p.scale;
        if (p.softcap > 0.0) {
            s = p.softcap * tanh(clamp(s / p.softcap, -15.0, 15.0));
        }
        scores[srow + j] = s;
        m = max(m, s);
    }
    m = reduce(lid, m, true);
    var sum = 0.0;
    for (var j = lid; j < p.n; j += 256u) {
        let e = exp(scores[srow + j] - m);
        scores[srow + j] = e;
        sum += e;
    }
    sum = reduce(lid, sum, false);
    storageBarrier();
    let inv = 1.0 / sum;
    for (var x = lid; x < d; x += 256u) {
        var acc = 0.0;
        for (var j = 0u; j < p.n; j++) {
            let base = ((p.lo + j) % p.slots) * kv_dim + kvh * d;
            acc += scores[srow + j] * vval(base + x);
        }
        out[h * d + x] = acc * inv;
    }
}
