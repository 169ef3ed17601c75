//! The converter proves a file loads before writing it: the engine builds the text stack and the
//! encoders build the towers from the planned tensor table alone ([`CellmFile::planned`]: header
//! plus zero-filled data that lives nowhere), running the same weight lookups and shape checks a
//! `cellm run` of the written file runs. Nothing here restates the models' tensor names or shapes,
//! so the check cannot drift from the loaders.

use crate::error::ConvertError;
use cellm_engine::format::{CellmFile, Header, TensorPlan};
use std::path::Path;

/// Builds every part of the model from `file`: the text stack, then whichever towers it has.
fn build_parts(file: &CellmFile) -> Result<(), ConvertError> {
    cellm_engine::models::load_model(file)?;
    cellm_encoders::MediaEncoders::load(file)?;
    Ok(())
}

/// Checks that a file with `header` and the tensors of `plans` would load: the first missing or
/// misshapen tensor, or a config the engine refuses, is the error. Writes nothing.
pub fn check_plan(header: &Header, plans: &[TensorPlan], out: &Path) -> Result<(), ConvertError> {
    let file = CellmFile::planned(header.clone(), plans.to_vec(), &out.display().to_string())?;
    build_parts(&file)
}

/// Opens the written file as `cellm run` does (header, tensor table, every part built) without
/// running a forward pass.
pub fn check_written(path: &Path) -> Result<(), ConvertError> {
    let file = CellmFile::open(path)?;
    build_parts(&file)
}

/// [`check_plan`] for `source` converted with `profile`, before any conversion is asked for (the
/// app's wizard checks a checkpoint when it is picked: an unsupported variant is refused with
/// the engine's message naming the config key or tensor).
pub fn check_source(
    source: &dyn crate::source::Source,
    profile: crate::Profile,
) -> Result<(), ConvertError> {
    let spec = crate::QuantSpec::new(profile, None, &[])?;
    let plans = crate::plan(source, &spec);
    let header = Header {
        family: source.family().to_owned(),
        config: source.config().clone(),
        tokenizer: source.tokenizer().clone(),
        quantization: Default::default(),
        provenance: Default::default(),
        fidelity: None,
        tensors: Vec::new(),
    };
    check_plan(&header, &plans, Path::new("(planned file)"))
}
