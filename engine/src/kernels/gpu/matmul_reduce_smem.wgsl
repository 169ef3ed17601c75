// Lane reductions of matmul.wgsl through workgroup memory (log2(LANES) barrier rounds).

var<workgroup> red: array<f32, 4096>; // TT * NR * WG <= 16 * 256

// Sums the LANES partial sums of every (token, row) and stores them.
fn reduce_store(acc: array<f32, 16>, lid: u32, row0: u32, t0: u32) {
    let lane = lid % LANES;
    for (var j = 0u; j < TT * NR; j++) {
        red[j * WG + lid] = acc[j];
    }
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            for (var j = 0u; j < TT * NR; j++) {
                red[j * WG + lid] += red[j * WG + lid + s];
            }
        }
        workgroupBarrier();
    }
    if (lane == 0u) {
        for (var i = 0u; i < TT; i++) {
            for (var r = 0u; r < NR; r++) {
                if (t0 + i < p.t && row0 + r < p.n) {
                    y[(t0 + i) * p.out_stride + p.out_row0 + row0 + r] = red[(i * NR + r) * WG + lid];
                }
            }
        }
    }
    workgroupBarrier();
}

// Sums (a, b) over the LANES lanes of a row group; valid in lane 0.
fn reduce_pair(a: f32, b: f32, lid: u32) -> vec2<f32> {
    let lane = lid % LANES;
    red[lid] = a;
    red[WG + lid] = b;
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            red[lid] += red[lid + s];
            red[WG + lid] += red[WG + lid + s];
        }
        workgroupBarrier();
    }
    return vec2<f32>(red[lid], red[WG + lid]);
}
