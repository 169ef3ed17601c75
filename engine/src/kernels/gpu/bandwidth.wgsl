// Device-memory read bandwidth probe: every invocation XORs a strided share of `src` (16-byte
// loads, consecutive invocations on consecutive words, so every load is coalesced).

struct Params {
    n: u32, // vec4s in src
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> sink: array<u32>;

@compute @workgroup_size(256)
fn read_all(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let stride = nwg.x * 256u;
    var acc = vec4<u32>(0u);
    for (var i = gid.x; i < p.n; i += stride) {
        acc ^= src[i];
    }
    // a store the compiler cannot prove dead, so the loads stay; the buffer is zero, so the
    // sum never matches and nothing is written
    if (acc.x + acc.y + acc.z + acc.w == 0x9e3779b9u) {
        sink[gid.x % 64u] = acc.x;
    }
}
