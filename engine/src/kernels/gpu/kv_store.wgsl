// Writes t rows of kv_dim f32 (token i is position pos0 + i) into ring-cache slots
// (pos0 + i) % slots, as f16 pairs or f32 bits. One thread per u32 word written.

struct Params {
    kv_dim: u32,
    pos0: u32,
    t: u32,
    slots: u32,
    kv_f16: u32,
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
