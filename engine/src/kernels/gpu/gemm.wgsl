// y[t, out_row0 + n] = sum_k x[t, k] * W[n, k] for many tokens (the towers run hundreds of
// frames through every linear): a register-tiled GEMM. A workgroup of 256 threads computes a
// 64-token x 64-row tile of y; each thread 4 tokens x 4 rows. Per step of 32 columns the
// workgroup stages x[64 tokens, 32] and the dequantized W[64 rows, 32] in workgroup memory
// (column-major, so the inner loop reads one vec4 of each and does 16 FMAs), each thread
// loading 8 weights of one row: q4 one word of the row's 32-value block (values 4j..4j+3 in
// the low nibbles, 16+4j.. in the high ones, as (q - 8) * scale), q8 two words, f16 four, f32
// eight. Requires k % 32 == 0 and a group size that is a multiple of 32 (the host checks).
// Out-of-range tokens/rows are clamped at the loads and dropped at the store. Optional value
// clamps on the x loads and the stores serve the towers' clipped linears.

struct Params {
    k: u32,
    n: u32,          // rows in this buffer
    t: u32,
    out_stride: u32, // total rows of the weight (row stride of y)
    out_row0: u32,
    gs: u32,
    scale_word: u32,
    dtype: u32,      // 0 f32, 1 f16, 2 q8, 3 q4
    in_lo: f32,      // clamps of x on load and of y on store (the towers' clipped linears;
    in_hi: f32,      // +-f32::MAX when open)
    out_lo: f32,
    out_hi: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> w: array<u32>;

var<workgroup> xs: array<vec4<f32>, 512>; // [32 columns][16 token quads]
var<workgroup> ws: array<vec4<f32>, 512>; // [32 columns][16 row quads]

const MAGIC: u32 = 0x4B000000u;

fn scale_at(s: u32) -> f32 {
    return unpack2x16float(w[p.scale_word + s / 2u])[s % 2u];
}

fn put_w(kk: u32, r: u32, v: f32) {
    ws[kk * 16u + r / 4u][r % 4u] = v;
}

// Eight weights of row `row` (local row `r`), columns k0 + ... as the header says.
fn stage_w(row: u32, r: u32, k0: u32, part: u32) {
    switch p.dtype {
        case 3u: {
            // q4: the row's block at k0 is 4 words; this thread takes word `part`
            let word = w[(row * p.k + k0) / 8u + part];
            let s = scale_at((row * p.k + k0) / p.gs);
            for (var j = 0u; j < 4u; j++) {
                let byte = word >> (8u * j);
                let lo = f32(byte & 15u) - 8.0;
                let hi = f32((byte >> 4u) & 15u) - 8.0;
                put_w(4u * part + j, r, lo * s);
                put_w(16u + 4u * part + j, r, hi * s);
            }
        }
        case 2u: {
            let s = scale_at((row * p.k + k0) / p.gs);
            for (var i = 0u; i < 2u; i++) {
                let word = w[(row * p.k + k0) / 4u + 2u * part + i];
                for (var j = 0u; j < 4u; j++) {
                    let q = i32((word >> (8u * j)) & 255u);
                    put_w(8u * part + 4u * i + j, r, f32(select(q, q - 256, q > 127)) * s);
                }
            }
        }
        case 1u: {
            for (var i = 0u; i < 4u; i++) {
                let v = unpack2x16float(w[(row * p.k + k0) / 2u + 4u * part + i]);
                put_w(8u * part + 2u * i, r, v.x);
                put_w(8u * part + 2u * i + 1u, r, v.y);
            }
        }
        default: {
            for (var i = 0u; i < 8u; i++) {
                put_w(8u * part + i, r, bitcast<f32>(w[row * p.k + k0 + 8u * part + i]));
            }
        }
    }
}

@compute @workgroup_size(256)
fn gemm(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let tiles_n = (p.n + 63u) / 64u;
    let g = wid.x + wid.y * nwg.x;
    if (g >= tiles_n * ((p.t + 63u) / 64u)) {
        return;
    }
    let n0 = (g % tiles_n) * 64u;
    let t0 = (g / tiles_n) * 64u;
    let tq = lid % 16u; // this thread's tokens t0 + 4 tq ..
    let rq = lid / 16u; // and rows n0 + 4 rq ..
    let kv = p.k / 4u;
    // staging: weights of local row lid / 4 (quarter lid % 4); x vec4s lid and lid + 256
    let wr = lid / 4u;
    let wrow = min(n0 + wr, p.n - 1u);
    // four named accumulators, not an array: a dynamically indexed array would live in
    // (slow) local memory
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < p.k; k0 += 32u) {
        for (var i = 0u; i < 2u; i++) {
            let idx = lid + 256u * i;
            let tok = idx / 8u;
            let c = idx % 8u;
            let v = clamp(x[min(t0 + tok, p.t - 1u) * kv + k0 / 4u + c], vec4<f32>(p.in_lo),
                          vec4<f32>(p.in_hi));
            xs[(4u * c) * 16u + tok / 4u][tok % 4u] = v.x;
            xs[(4u * c + 1u) * 16u + tok / 4u][tok % 4u] = v.y;
            xs[(4u * c + 2u) * 16u + tok / 4u][tok % 4u] = v.z;
            xs[(4u * c + 3u) * 16u + tok / 4u][tok % 4u] = v.w;
        }
        stage_w(wrow, wr, k0, lid % 4u);
        workgroupBarrier();
        for (var kk = 0u; kk < 32u; kk++) {
            let a = xs[kk * 16u + tq];
            let b = ws[kk * 16u + rq];
            acc0 += a.x * b;
            acc1 += a.y * b;
            acc2 += a.z * b;
            acc3 += a.w * b;
        }
        workgroupBarrier();
    }
    let tok = t0 + 4u * tq;
    let row = n0 + 4u * rq;
    store(tok, row, acc0);
    store(tok + 1u, row, acc1);
    store(tok + 2u, row, acc2);
    store(tok + 3u, row, acc3);
}

fn store(tok: u32, row: u32, v: vec4<f32>) {
    if (tok >= p.t) {
        return;
    }
    let base = tok * p.out_stride + p.out_row0 + row;
    for (var j = 0u; j < 4u; j++) {
        if (row + j < p.n) {
            y[base + j] = clamp(v[j], p.out_lo, p.out_hi);
        }
    }
}
