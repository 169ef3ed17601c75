// Reductions over a 256-thread workgroup; the host appends this file to the shaders that use
// them (WGSL has no includes). Every thread gets the result.

var<workgroup> red: array<f32, 256>;

fn block_reduce(lid: u32, v: f32, is_max: bool) -> f32 {
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

fn block_sum(lid: u32, v: f32) -> f32 {
    return block_reduce(lid, v, false);
}

fn block_max(lid: u32, v: f32) -> f32 {
    return block_reduce(lid, v, true);
}
