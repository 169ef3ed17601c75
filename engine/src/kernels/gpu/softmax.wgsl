// In-place softmax of `rows` rows of `n`: subtract the max, exponentiate, normalise.
// Rows whose entries are all -inf become zeros (as the CPU). One workgroup per row.

struct Params {
    n: u32,
    rows: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

var<workgroup> red: array<f32, 256>;

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
fn softmax(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.rows) {
        return;
    }
    let base = r * p.n;
    var m = -3.4028235e38;
    var masked = true;
    for (var i = lid; i < p.n; i += 256u) {
        let v = x[base + i];
        if (v >= -3.4028235e38) {
            masked = false;
            m = max(m, v);
        }
    }
    m = reduce(lid, m, true);
    let live = reduce(lid, select(1.0, 0.0, masked), true);
    var sum = 0.0;
    for (var i = lid; i < p.n; i += 256u) {
        let v = x[base + i];
        var e = 0.0;
        if (v >= -3.4028235e38) {
            e = exp(v - m);
        }
        x[base + i] = e;
        sum += e;
    }
    sum = reduce(lid, sum, false);
    let inv = select(0.0, 1.0 / sum, live > 0.0);
    for (var i = lid; i < p.n; i += 256u) {
        x[base + i] *= inv;
    }
}
