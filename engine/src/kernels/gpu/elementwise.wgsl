// Element-wise ops: gate = gelu_tanh(gate) * up, x = cap * tanh(x / cap), dst += src, x *= s
// (`cap` holds s), x = clamp(x, lo, hi) (`cap` holds lo).
// tanh's argument is clamped to +-15 (tanh = +-1 in f32 there) because some drivers build tanh
// from exp and return NaN for large inputs.

struct Params {
    n: u32,
    cap: f32,
    // gelu_mul reads up[i] at b_off + (i / cols) * b_stride + i % cols (a strided slice)
    cols: u32,
    b_off: u32,
    b_stride: u32,
    hi: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;

fn safe_tanh(v: f32) -> f32 {
    return tanh(clamp(v, -15.0, 15.0));
}

fn index(lid: u32, wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return (wid.x + wid.y * nwg.x) * 256u + lid;
}

@compute @workgroup_size(256)
fn gelu_mul(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(lid, wid, nwg);
    if (i < p.n) {
        let x = a[i];
        let g = 0.5 * x * (1.0 + safe_tanh(0.7978846 * (x + 0.044715 * x * x * x)));
        a[i] = g * b[p.b_off + (i / p.cols) * p.b_stride + i % p.cols];
    }
}

@compute @workgroup_size(256)
fn add(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
       @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(lid, wid, nwg);
    if (i < p.n) {
        a[i] += b[i];
    }
}

@compute @workgroup_size(256)
fn softcap(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(lid, wid, nwg);
    if (i < p.n) {
        a[i] = p.cap * safe_tanh(a[i] / p.cap);
    }
}

@compute @workgroup_size(256)
fn scale(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(lid, wid, nwg);
    if (i < p.n) {
        a[i] = a[i] * p.cap;
    }
}

@compute @workgroup_size(256)
fn clamp_range(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(lid, wid, nwg);
    if (i < p.n) {
        a[i] = clamp(a[i], p.cap, p.hi);
    }
}

// to_f16: dst[i] = the f16 pair (a[2i], a[2i + 1]) for i < n (n pairs; f16 activations).
@group(0) @binding(2) var<storage, read_write> packed: array<u32>;

@compute @workgroup_size(256)
fn to_f16(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(lid, wid, nwg);
    if (i < p.n) {
        packed[i] = pack2x16float(vec2<f32>(a[2u * i], a[2u * i + 1u]));
    }
}
