// y[t, out_row0 + n] = sum_k x[t, k] * palette(row)[idx[n, k]] for one buffer (row range) of a
// lut4 / lut6 weight (layout: engine/src/tensor/lut.rs): packed index rows, then the palettes
// (16 / 64 f16) of the row groups this buffer touches.
//
// Work split: a workgroup is WG / LANES rows; the LANES lanes of a row stride over its 32-value
// blocks. Each row's palette is first copied into workgroup memory as f32 (lookups are then
// shared-memory reads). Tokens go TT at a time (decode: TT = 1) so a block's indices are
// decoded once per token tile. Partial sums meet in workgroup memory (no subgroup ops, so it
// runs on lavapipe too). Rows past the end are clamped for loads and dropped at the store.

struct Params {
    k: u32,          // columns
    n: u32,          // rows in this buffer
    t: u32,          // tokens
    out_stride: u32, // total rows of the weight (row stride of y)
    out_row0: u32,   // first row of this buffer (global row index)
    wpr: u32,        // u32 words per index row (lut4 k/8, lut6 3k/16)
    gs: u32,         // rows per palette
    pal_word: u32,   // u32 index of the first palette word in this buffer
    g_first: u32,    // palette group of the buffer's first palette
    lut6: u32,       // 1 for lut6 (64 entries), 0 for lut4 (16)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

override WG: u32 = 256u;
override LANES: u32 = 32u;
override TT: u32 = 1u; // tokens per tile, <= 4

// WG / LANES <= 16 rows per workgroup (checked by the host): 4 KiB of palettes
var<workgroup> pal: array<f32, 1024>;
var<workgroup> red: array<f32, 1024>; // TT * WG

// 4 palette entries of packed byte indices `v` (one index per byte) of the row slot `slot`.
fn look4(slot: u32, v: vec4<u32>) -> vec4<f32> {
    let b = slot * 64u;
    return vec4<f32>(pal[b + v.x], pal[b + v.y], pal[b + v.z], pal[b + v.w]);
}

// The 4 low nibbles (shift 0) or high nibbles (shift 4) of the bytes of word `v`.
fn nibbles(v: u32, shift: u32) -> vec4<u32> {
    return (vec4<u32>(v, v >> 8u, v >> 16u, v >> 24u) >> vec4<u32>(shift)) & vec4<u32>(15u);
}

// lut6 high bits (<< 4) of values j..j+4 (j % 4 == 0) of a block with high-bit words h.
fn high4(h: vec2<u32>, j: u32) -> vec4<u32> {
    var out: vec4<u32>;
    for (var c = 0u; c < 4u; c++) {
        let v = j + c;
        let m = v & 7u;
        let word = select(h.x, h.y, m >= 4u);
        out[c] = ((word >> ((m & 3u) * 8u + (v >> 3u) * 2u)) & 3u) << 4u;
    }
    return out;
}

@compute @workgroup_size(WG)
fn matmul_lut(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let rows_per_wg = WG / LANES;
    let slot = lid / LANES;
    let lane = lid % LANES;
    let row_raw = (wid.x + wid.y * nwg.x) * rows_per_wg + slot;
    let row = min(row_raw, p.n - 1u);
    let entries = select(16u, 64u, p.lut6 == 1u);
    // this row's palette -> workgroup memory (f32)
    let g = (p.out_row0 + row) / p.gs - p.g_first;
    for (var e = lane; e < entries; e += LANES) {
        let word = w[p.pal_word + (g * entries + e) / 2u];
        pal[slot * 64u + e] = unpack2x16float(word)[e % 2u];
    }
    workgroupBarrier();

    let blocks = p.k / 32u;
    let bw = select(4u, 6u, p.lut6 == 1u); // words per block
    let kv = p.k / 4u;
    for (var t0 = 0u; t0 < p.t; t0 += TT) {
        var acc: array<f32, 4>;
        for (var b = lane; b < blocks; b += LANES) {
            let base = row * p.wpr + b * bw;
            var h = vec2<u32>(0u, 0u);
            if (p.lut6 == 1u) {
                h = vec2<u32>(w[base + 4u], w[base + 5u]);
            }
            for (var i = 0u; i < 4u; i++) {
                let v = w[base + i];
                var lo = nibbles(v, 0u);
                var hi = nibbles(v, 4u);
                if (p.lut6 == 1u) {
                    lo |= high4(h, 4u * i);
                    hi |= high4(h, 16u + 4u * i);
                }
                let wl = look4(slot, lo);
                let wh = look4(slot, hi);
                for (var tt = 0u; tt < TT; tt++) {
                    let xb = min(t0 + tt, p.t - 1u) * kv + b * 8u;
                    acc[tt] += dot(wl, x[xb + i]) + dot(wh, x[xb + 4u + i]);
                }
            }
        }
        // reduce the LANES partial sums of every token of the tile
        for (var tt = 0u; tt < TT; tt++) {
            red[tt * WG + lid] = acc[tt];
        }
        workgroupBarrier();
        for (var s = LANES / 2u; s > 0u; s >>= 1u) {
            if (lane < s) {
                for (var tt = 0u; tt < TT; tt++) {
                    red[tt * WG + lid] += red[tt * WG + lid + s];
                }
            }
            workgroupBarrier();
        }
        if (lane == 0u && row_raw < p.n) {
            for (var tt = 0u; tt < TT; tt++) {
                if (t0 + tt < p.t) {
                    y[(t0 + tt) * p.out_stride + p.out_row0 + row] = red[tt * WG + lid];
                }
            }
        }
        workgroupBarrier();
    }
}
