// The audio tower's sub-sampling stage, channel-last ([time, freq, channel]):
// conv2d_s2: 3x3 convolution, stride 2, padding 1, no bias, one thread per output value, with
//   the weights tap-major ([in_ch, 3, 3][out_ch], so neighbouring threads read neighbouring
//   weights); input
//   frame ti reads as zeros where flags[ti * flag_stride] is 0 (the reference zeroes invalid
//   frames before each convolution; stride 2 reads the once-subsampled mask from the original).
// layer_norm_relu: LayerNorm over each pixel's channels (mean removed, biased variance, weight,
//   no bias), then ReLU, in place; one thread per pixel.
// Bindings are laid out so each entry point uses 1..n: y (output), w (weights), x, flags.

struct Params {
    t_in: u32,
    f_in: u32,
    in_ch: u32,
    out_ch: u32,
    t_out: u32,
    f_out: u32,
    flag_stride: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read> flags: array<f32>;

fn index(lid: u32, wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return (wid.x + wid.y * nwg.x) * 256u + lid;
}

@compute @workgroup_size(256)
fn conv2d_s2(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(lid, wid, nwg);
    if (i >= p.t_out * p.f_out * p.out_ch) {
        return;
    }
    let oc = i % p.out_ch;
    let px = i / p.out_ch;
    let f = px % p.f_out;
    let t = px / p.f_out;
    var acc = 0.0;
    // input row/column (2t + ky - 1, 2f + kx - 1); row/column 0 of the shifted index is padding
    for (var ky = 0u; ky < 3u; ky++) {
        let ti = 2u * t + ky;
        if (ti == 0u || ti > p.t_in) {
            continue;
        }
        if (flags[(ti - 1u) * p.flag_stride] == 0.0) {
            continue;
        }
        for (var kx = 0u; kx < 3u; kx++) {
            let fi = 2u * f + kx;
            if (fi == 0u || fi > p.f_in) {
                continue;
            }
            let xb = ((ti - 1u) * p.f_in + fi - 1u) * p.in_ch;
            let wb = (ky * 3u + kx) * p.out_ch + oc;
            for (var c = 0u; c < p.in_ch; c++) {
                acc += x[xb + c] * w[wb + c * 9u * p.out_ch];
            }
        }
    }
    y[i] = acc;
}

@compute @workgroup_size(256)
fn layer_norm_relu(@builtin(local_invocation_index) lid: u32,
                   @builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let px = index(lid, wid, nwg);
    if (px >= p.t_out) {
        return;
    }
    let n = p.out_ch;
    let base = px * n;
    var sum = 0.0;
    for (var c = 0u; c < n; c++) {
        sum += y[base + c];
    }
    let mean = sum / f32(n);
    var var_sum = 0.0;
    for (var c = 0u; c < n; c++) {
        let d = y[base + c] - mean;
        var_sum += d * d;
    }
    let r = 1.0 / sqrt(var_sum / f32(n) + p.eps);
    for (var c = 0u; c < n; c++) {
        y[base + c] = max((y[base + c] - mean) * r * w[c], 0.0);
    }
}
