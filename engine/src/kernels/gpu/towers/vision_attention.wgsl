// Bidirectional (unmasked) multi-head attention of `n` tokens, flash style: TQ queries of one
// head per workgroup, each query shared by LANES threads that each hold 1/LANES of its head
// dims (so a thread needs few registers and twice the threads run at once); keys and values
// stream through workgroup memory in tiles of TK with an online softmax. Per tile: each lane
// scores the tile's keys over its dims (4 keys at a time, independent chains), the lanes' partial
// scores meet in workgroup memory, then every lane applies the same softmax update to its dims.
// The Rust side prepends `const D4` (head_dim / 4), `TK`, `TQ` and `LANES` (1, or 2 when D4 is
// even). q [n, nh, hd], k/v [n, nkv, hd], out [n, nh, hd]; query head h reads kv head
// h / (nh / nkv).

struct Params {
    n: u32,
    nh: u32,
    nkv: u32,
    nqb: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> o: array<vec4<f32>>;

const DH: u32 = D4 / LANES; // vec4s of the head a lane owns
const TK4: u32 = TK / 4u;

var<workgroup> ks: array<vec4<f32>, TK * D4>;
var<workgroup> vs: array<vec4<f32>, TK * D4>;
// partial scores [lane][query][key / 4]
var<workgroup> ps: array<vec4<f32>, LANES * TQ * TK4>;

@compute @workgroup_size(TQ * LANES)
fn attend(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = wid.x + wid.y * nwg.x;
    let head = g / p.nqb;
    // uniform per workgroup, so the barriers below stay in uniform control flow
    if (head >= p.nh) {
        return;
    }
    let kvh = head / (p.nh / p.nkv);
    let lane = lid / TQ;
    let qi = lid % TQ;
    let t = (g % p.nqb) * TQ + qi;
    let live = t < p.n;
    let dim0 = lane * DH;
    // threads past the last query work on the last one and write nothing
    let qbase = (min(t, p.n - 1u) * p.nh + head) * D4 + dim0;
    var qr: array<vec4<f32>, DH>;
    var acc: array<vec4<f32>, DH>;
    for (var d = 0u; d < DH; d++) {
        qr[d] = q[qbase + d] * p.scale;
        acc[d] = vec4<f32>(0.0);
    }
    var m = -3.4028235e38;
    var l = 0.0;
    var sc: array<vec4<f32>, TK4>;
    for (var k0 = 0u; k0 < p.n; k0 += TK) {
        for (var i = lid; i < TK * D4; i += TQ * LANES) {
            let j = k0 + i / D4;
            var kv = vec4<f32>(0.0);
            var vv = vec4<f32>(0.0);
            if (j < p.n) {
                let src = (j * p.nkv + kvh) * D4 + i % D4;
                kv = k[src];
                vv = v[src];
            }
            ks[i] = kv;
            vs[i] = vv;
        }
        workgroupBarrier();
        for (var j = 0u; j < TK4; j++) {
            var s = vec4<f32>(0.0);
            let kb = 4u * j * D4 + dim0;
            for (var d = 0u; d < DH; d++) {
                let qd = qr[d];
                s += vec4<f32>(dot(qd, ks[kb + d]), dot(qd, ks[kb + D4 + d]),
                               dot(qd, ks[kb + 2u * D4 + d]), dot(qd, ks[kb + 3u * D4 + d]));
            }
            ps[(lane * TQ + qi) * TK4 + j] = s;
        }
        workgroupBarrier();
        let cnt = min(TK, p.n - k0);
        var tmax = m;
        for (var j = 0u; j < TK4; j++) {
            // the lanes add the partial scores in the same order, so they agree on m and l
            var s = ps[qi * TK4 + j];
            for (var ln = 1u; ln < LANES; ln++) {
                s += ps[(ln * TQ + qi) * TK4 + j];
            }
            // keys past the last one (zero-filled) get no weight
            let idx = vec4<u32>(4u * j) + vec4<u32>(0u, 1u, 2u, 3u);
            s = select(vec4<f32>(-3.4028235e38), s, idx < vec4<u32>(cnt));
            sc[j] = s;
            tmax = max(tmax, max(max(s.x, s.y), max(s.z, s.w)));
        }
        let c = exp(m - tmax);
        l *= c;
        for (var d = 0u; d < DH; d++) {
            acc[d] *= c;
        }
        m = tmax;
        for (var j = 0u; j < TK4; j++) {
            let e = exp(sc[j] - vec4<f32>(m));
            l += (e.x + e.y) + (e.z + e.w);
            let vb = 4u * j * D4 + dim0;
            for (var d = 0u; d < DH; d++) {
                acc[d] += e.x * vs[vb + d] + e.y * vs[vb + D4 + d] + e.z * vs[vb + 2u * D4 + d]
                    + e.w * vs[vb + 3u * D4 + d];
            }
        }
        workgroupBarrier();
    }
    if (live) {
        let inv = 1.0 / l;
        let obase = (t * p.nh + head) * D4 + dim0;
        for (var d = 0u; d < DH; d++) {
            o[obase + d] = acc[d] * inv;
        }
    }
}
