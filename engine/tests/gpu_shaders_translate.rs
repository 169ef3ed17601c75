//! Every WGSL source the engine assembles (each prelude, reduction and `override` variant) goes
//! through naga, the translator wgpu uses, into Metal Shading Language and HLSL: a shader that
//! Metal or DX12 would reject fails here, on any machine, without either API.

use cellm_engine::kernels::gpu::assembled_shaders;
use naga::back::{hlsl, msl, pipeline_constants::process_overrides};
use naga::valid::{Capabilities, ValidationFlags, Validator};

#[test]
fn every_assembled_shader_translates_to_msl_and_hlsl() {
    let shaders = assembled_shaders();
    assert!(shaders.len() >= 20, "only {} shaders listed", shaders.len());
    let mut failures = Vec::new();
    let mut modules = 0;
    for sh in &shaders {
        let module = match naga::front::wgsl::parse_str(&sh.source) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{}: {}", sh.label, e.emit_to_string(&sh.source)));
                continue;
            }
        };
        // the features the engine asks for where offered: subgroups, shader-f16
        let mut validator = Validator::new(ValidationFlags::all(), Capabilities::all());
        let info = match validator.validate(&module) {
            Ok(i) => i,
            Err(e) => {
                failures.push(format!("{}: validation: {e:?}", sh.label));
                continue;
            }
        };
        for set in &sh.overrides {
            let constants: naga::back::PipelineConstants =
                set.iter().map(|(k, v)| (k.to_string(), *v)).collect();
            let what = format!("{} {set:?}", sh.label);
            let (m, i) = match process_overrides(&module, &info, None, &constants) {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("{what}: overrides: {e:?}"));
                    continue;
                }
            };
            modules += 1;
            // MSL 2.4 (macOS 12 / iOS 15): subgroup (simdgroup) shuffles and half floats
            let msl_options = msl::Options {
                lang_version: (2, 4),
                ..Default::default()
            };
            if let Err(e) = msl::write_string(&m, &i, &msl_options, &Default::default()) {
                failures.push(format!("{what}: MSL: {e:?}"));
            }
            // SM 6.2: wave intrinsics and 16-bit types, as wgpu's DX12 backend asks for them
            let hlsl_options = hlsl::Options {
                shader_model: hlsl::ShaderModel::V6_2,
                ..Default::default()
            };
            let (mut out, pipeline) = (String::new(), hlsl::PipelineOptions::default());
            let mut w = hlsl::Writer::new(&mut out, &hlsl_options, &pipeline);
            if let Err(e) = w.write(&m, &i, None) {
                failures.push(format!("{what}: HLSL: {e:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {modules} shader variants do not translate:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{} sources, {modules} variants translated", shaders.len());
}
