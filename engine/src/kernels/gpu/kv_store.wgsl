// Writes t rows of kv_dim f32 (token i is position pos0 + i) into ring-cache slots
// (pos0 + i) % slots, as f16 pairs or f32 bits. One thread per u32 word written.

struct Params {
    kv_dim: u32,
    pos0: u32,
    t: u32,
    slots: u32,
    kv_f16: u32,
    head_dim: u32, // store_kv_pair
    eps: f32,      // store_kv_pair: RMS-normalize V rows (no weight) when > 0
    k_fused: u32,  // store_kv_pair: 1 = norm (weight mode k_wmode) + RoPE the K rows first
    k_wmode: u32,
    k_eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(256)
fn store_kv(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = (wid.x + wid.y * nwg.x) * 256u + lid;
    let per_row = select(p.kv_dim, p.kv_dim / 2u, p.kv_f16 == 1u);
    if (idx >= p.t * per_row) {
        return;
    }
    let i = idx / per_row;
    let c = idx % per_row;
    let slot = (p.pos0 + i) % p.slots;
    if (p.kv_f16 == 1u) {
        let s = i * p.kv_dim + 2u * c;
        dst[slot * per_row + c] = pack2x16float(vec2<f32>(src[s], src[s + 1u]));
    } else {
        dst[slot * per_row + c] = bitcast<u32>(src[i * p.kv_dim + c]);
    }
}

// store_kv_pair: the K and V rows of a chunk in one dispatch, V optionally RMS-normalized per
// head first (Gemma 4's weightless v norm). One workgroup per (token, kv head), one thread per
// pair of values (head_dim <= 512).
@group(0) @binding(3) var<storage, read> vsrc: array<f32>;
@group(0) @binding(4) var<storage, read_write> vdst: array<u32>;
@group(0) @binding(5) var<storage, read> knw: array<f32>;
@group(0) @binding(6) var<storage, read> kfreq: array<f32>;

var<workgroup> kst: array<f32, 512>;

fn put(to_v: bool, at: u32, a: f32, b: f32) {
    if (p.kv_f16 == 1u) {
        let w = pack2x16float(vec2<f32>(a, b));
        if (to_v) {
            vdst[at / 2u] = w;
        } else {
            dst[at / 2u] = w;
        }
    } else if (to_v) {
        vdst[at] = bitcast<u32>(a);
        vdst[at + 1u] = bitcast<u32>(b);
    } else {
        dst[at] = bitcast<u32>(a);
        dst[at + 1u] = bitcast<u32>(b);
    }
}

@compute @workgroup_size(256)
fn store_kv_pair(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let heads = p.kv_dim / p.head_dim;
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.t * heads) {
        return;
    }
    let i = row / heads;
    let h = row % heads;
    let half = p.head_dim / 2u;
    let s = i * p.kv_dim + h * p.head_dim + 2u * lid;
    var v0 = 0.0;
    var v1 = 0.0;
    if (lid < half) {
        v0 = vsrc[s];
        v1 = vsrc[s + 1u];
    }
    if (p.eps > 0.0) {
        let inv = 1.0 / sqrt(block_sum(lid, v0 * v0 + v1 * v1) / f32(p.head_dim) + p.eps);
        v0 *= inv;
        v1 *= inv;
    }
    // K: as given, or normed and rotated in the pairs (j, j + half) and regrouped through
    // workgroup memory into the adjacent pairs this thread writes
    var k0 = 0.0;
    var k1 = 0.0;
    if (p.k_fused == 1u) {
        let l = min(lid, half - 1u);
        let kb = i * p.kv_dim + h * p.head_dim;
        var a0 = src[kb + l];
        var a1 = src[kb + l + half];
        let w = vec2<f32>(mode_weight(p.k_wmode, knw[l]), mode_weight(p.k_wmode, knw[l + half]));
        let f = kfreq[l];
        if (lid >= half) {
            a0 = 0.0;
            a1 = 0.0;
        }
        let r = norm_rope(lid, a0, a1, w, f, p.pos0 + i, p.head_dim, p.k_eps);
        if (lid < half) {
            kst[l] = r.x;
            kst[l + half] = r.y;
        }
        workgroupBarrier();
        if (lid < half) {
            k0 = kst[2u * lid];
            k1 = kst[2u * lid + 1u];
        }
    } else if (lid < half) {
        k0 = src[s];
        k1 = src[s + 1u];
    }
    if (lid < half) {
        let at = ((p.pos0 + i) % p.slots) * p.kv_dim + h * p.head_dim + 2u * lid;
        put(false, at, k0, k1);
        put(true, at, v0, v1);
    }
}
