// Lane reductions of matmul.wgsl with subgroup shuffles: a row group's LANES lanes are
// consecutive invocations inside one subgroup (LANES <= the subgroup size), so a butterfly of
// shuffles sums them without workgroup memory or barriers.
// (Naga takes the subgroup builtins when the device has the feature; no `enable` directive.)

fn lane_sum(v: f32) -> f32 {
    var s = v;
    for (var m = LANES / 2u; m > 0u; m >>= 1u) {
        s += subgroupShuffleXor(s, m);
    }
    return s;
}

// Sums the LANES partial sums of every (token, row) and stores them.
fn reduce_store(acc: array<f32, 16>, lid: u32, row0: u32, t0: u32) {
    let lane = lid % LANES;
    for (var i = 0u; i < TT; i++) {
        for (var r = 0u; r < NR; r++) {
            let v = lane_sum(acc[i * NR + r]);
            if (lane == 0u && t0 + i < p.t && row0 + r < p.n) {
                y[(t0 + i) * p.out_stride + p.out_row0 + row0 + r] = v;
            }
        }
    }
}

// Sums (a, b) over the LANES lanes of a row group; valid in lane 0.
fn reduce_pair(a: f32, b: f32, lid: u32) -> vec2<f32> {
    return vec2<f32>(lane_sum(a), lane_sum(b));
}
