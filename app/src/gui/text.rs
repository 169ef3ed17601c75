//! Text helpers for replies.

/// The reply without Gemma 4's thought prelude (`<|channel>thought\n … <channel|>`); an
/// unfinished prelude hides everything after its start, so nothing of it flashes while streaming.
pub fn strip_thought(text: &str) -> String {
    cellm_engine::chat::strip_thought(text)
}

/// "1.2 GB", "253 MB", "12 KB".
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.0} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.0} KB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

/// "270M", "5.1B".
pub fn human_count(n: u64) -> String {
    let x = n as f64;
    if x >= 1e9 {
        format!("{:.1}B", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.0}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.0}K", x / 1e3)
    } else {
        n.to_string()
    }
}

/// The adapter's name when a backend line such as "gpu: llvmpipe (LLVM 15, 256 bits)" names a
/// software renderer (it runs on the CPU, far slower than the CPU backend); None otherwise.
pub fn software_adapter(backend: &str) -> Option<String> {
    let adapter = backend.strip_prefix("gpu:")?.trim();
    const SOFTWARE: [&str; 6] = [
        "llvmpipe",
        "lavapipe",
        "softpipe",
        "swiftshader",
        "microsoft basic render",
        "warp",
    ];
    let lower = adapter.to_lowercase();
    let hit = SOFTWARE.iter().any(|s| lower.contains(s)) || lower.contains("cpu,");
    hit.then(|| {
        adapter
            .split(['(', ';'])
            .next()
            .unwrap_or(adapter)
            .trim()
            .to_owned()
    })
}

/// An engine or parser message with a plain-words hint of what to do about it appended.
pub fn with_advice(message: &str) -> String {
    let lower = message.to_lowercase();
    let advice = if lower.contains("truncated") || lower.contains("unexpected end") {
        Some("The file looks incomplete: download or convert it again.")
    } else if lower.contains("bad magic") || lower.contains("not a .cellm file") {
        Some("This is not a .cellm model: convert the checkpoint with the wizard first.")
    } else if lower.contains("format version") {
        Some("The file was made by another cellm version: convert the checkpoint again.")
    } else if lower.contains("invalid header") || lower.contains("tensor '") {
        Some("The file looks damaged: convert the checkpoint again.")
    } else if lower.contains("the context holds") {
        Some("The conversation is longer than the model's context: start a new chat.")
    } else if lower.contains("unsupported model") {
        Some("This build runs Gemma 3 and Gemma 4 models.")
    } else {
        None
    };
    let message = message.trim_end_matches('.');
    match advice {
        Some(a) => format!("{message}. {a}"),
        None => format!("{message}."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_software_adapters() {
        assert_eq!(
            software_adapter("gpu: llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, Cpu)").as_deref(),
            Some("llvmpipe")
        );
        assert_eq!(
            software_adapter("gpu: NVIDIA H100 (Vulkan, DiscreteGpu)"),
            None
        );
        assert_eq!(software_adapter("cpu · 2 threads"), None);
    }

    #[test]
    fn parser_errors_get_advice() {
        let m = with_advice("m.cellm is truncated: tensor data");
        assert!(m.ends_with("download or convert it again."), "{m}");
        assert_eq!(with_advice("something else."), "something else.");
    }

    #[test]
    fn strips_finished_and_streaming_preludes() {
        assert_eq!(
            strip_thought("<|channel>thought\nhmm<channel|>Hello"),
            "Hello"
        );
        assert_eq!(strip_thought("<|channel>thought\nstill thinking"), "");
        assert_eq!(strip_thought("Plain answer"), "Plain answer");
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(human_bytes(253_000_000), "253 MB");
        assert_eq!(human_count(268_000_000), "268M");
    }
}
