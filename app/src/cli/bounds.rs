//! Parsers for the numeric flags: a value outside what the engine can use is refused by clap
//! with one error line, never clamped silently or allowed to size an allocation.

/// Most tokens a count flag may ask for (the engine's largest context, FORMAT.md "Config
/// bounds").
pub const MAX_TOKENS: usize = 1 << 24;

fn integer(s: &str, lo: usize, hi: usize) -> Result<usize, String> {
    let v: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    if v < lo || v > hi {
        return Err(format!("{v} is outside {lo}..={hi}"));
    }
    Ok(v)
}

fn float(s: &str) -> Result<f32, String> {
    let v: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    if !v.is_finite() {
        return Err(format!("{s} is not a finite number"));
    }
    Ok(v)
}

/// A token count of at least 1 (`-n`, `--prompt-tokens`, `--gen-tokens`, `--free-run`).
pub fn tokens(s: &str) -> Result<usize, String> {
    integer(s, 1, MAX_TOKENS)
}

/// Worker threads: 1 up to four per available core (at most 1024); more only adds overhead.
pub fn threads(s: &str) -> Result<usize, String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    integer(s, 1, (4 * cores).min(1024))
}

/// `--repeat`: 1..=1000.
pub fn repeat(s: &str) -> Result<usize, String> {
    integer(s, 1, 1000)
}

/// `--top-k`: 0 (off) up to the largest vocabulary.
pub fn top_k(s: &str) -> Result<usize, String> {
    integer(s, 0, 1 << 22)
}

/// `--temp`: finite, 0 (greedy) up to 100.
pub fn temperature(s: &str) -> Result<f32, String> {
    let v = float(s)?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{v} is outside 0..=100 (0 is greedy)"));
    }
    Ok(v)
}

/// `--top-p`: in (0, 1].
pub fn top_p(s: &str) -> Result<f32, String> {
    let v = float(s)?;
    if !(v > 0.0 && v <= 1.0) {
        return Err(format!("{v} is outside (0, 1] (1 keeps every token)"));
    }
    Ok(v)
}

/// Quantization group sizes (`--group-size`, `--lut-group`): 0..=65536; the converter checks
/// what each profile accepts.
pub fn group_size(s: &str) -> Result<usize, String> {
    integer(s, 0, 1 << 16)
}

/// A decoder layer index (`--exclude-layers`).
pub fn layer(s: &str) -> Result<usize, String> {
    integer(s, 0, 1023)
}

/// `--target-kl`: a finite number >= 0 (parsed as f64: the value is stored as given).
pub fn target_kl(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "--target-kl must be a number >= 0, e.g. 0.01 (got {s})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert!(tokens("0").is_err() && tokens("1000000000000").is_err());
        assert_eq!(tokens("256"), Ok(256));
        assert!(threads("10000").is_err() && threads("0").is_err());
        assert!(temperature("-1").is_err() && temperature("NaN").is_err());
        assert!(temperature("inf").is_err() && temperature("0.7").is_ok());
        assert!(top_p("2").is_err() && top_p("0").is_err() && top_p("1").is_ok());
        assert!(group_size("100000").is_err() && group_size("32").is_ok());
        assert!(target_kl("-1").is_err() && target_kl("NaN").is_err());
    }
}
