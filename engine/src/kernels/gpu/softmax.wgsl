// In-place softmax of `rows` rows of `n`: subtract the max, exponentiate, normalise.
// Rows whose entries are all -inf become zeros (as the CPU). One workgroup per row.

struct Params {
    n: u32,
    rows: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

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
    m = block_max(lid, m);
    let live = block_max(lid, select(1.0, 0.0, masked));
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
    sum = block_sum(lid, sum);
    let inv = select(0.0, 1.0 / sum, live > 0.0);
    for (var i = lid; i < p.n; i += 256u) {
        x[base + i] *= inv;
    }
}
