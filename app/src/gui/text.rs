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

#[cfg(test)]
mod tests {
    use super::*;

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
