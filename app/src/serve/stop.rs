//! Stop sequences over streamed text: text that might be the start of a stop sequence is held
//! back until the next piece shows whether it is one, so a stop string is never sent.

pub struct StopMatcher {
    stops: Vec<String>,
    text: String,
    /// Bytes of `text` already handed out.
    sent: usize,
    hit: bool,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            text: String::new(),
            sent: 0,
            hit: false,
        }
    }

    /// Whether a stop sequence was found (nothing more will be returned).
    pub fn stopped(&self) -> bool {
        self.hit
    }

    /// Adds a piece; returns the text that is now safe to send (possibly empty).
    pub fn push(&mut self, piece: &str) -> String {
        if self.hit {
            return String::new();
        }
        self.text.push_str(piece);
        // A stop may straddle the previous pieces: search from where the longest one could start.
        let longest = self.stops.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut from = self.sent.saturating_sub(longest);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let first_hit = self
            .stops
            .iter()
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i))
            .min();
        if let Some(at) = first_hit {
            self.hit = true;
            let out = self.text[self.sent.min(at)..at].to_string();
            self.sent = at;
            return out;
        }
        // Hold back the longest tail that is a prefix of some stop sequence.
        let held = self
            .text
            .char_indices()
            .map(|(i, _)| i)
            .filter(|&i| i >= self.sent)
            .find(|&i| {
                let tail = &self.text[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.text.len());
        let out = self.text[self.sent..held].to_string();
        self.sent = held;
        out
    }

    /// The held-back text at the end of the generation (empty after a stop).
    pub fn finish(&mut self) -> String {
        if self.hit {
            return String::new();
        }
        let out = self.text[self.sent..].to_string();
        self.sent = self.text.len();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::StopMatcher;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            out += &m.push(p);
        }
        out += &m.finish();
        (out, m.stopped())
    }

    #[test]
    fn no_stops_passes_everything() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }

    #[test]
    fn stop_inside_a_piece() {
        assert_eq!(run(&["END"], &["abcENDxyz"]), ("abc".into(), true));
    }

    #[test]
    fn stop_across_pieces_is_never_sent() {
        let mut m = StopMatcher::new(vec!["STOP".into()]);
        assert_eq!(m.push("hello ST"), "hello ");
        assert_eq!(m.push("O"), "");
        assert_eq!(m.push("P and more"), "");
        assert!(m.stopped());
    }

    #[test]
    fn false_start_is_released() {
        let mut m = StopMatcher::new(vec!["STOP".into()]);
        assert_eq!(m.push("ST"), "");
        assert_eq!(m.push("AY"), "STAY");
        assert_eq!(m.finish(), "");
        assert!(!m.stopped());
    }

    #[test]
    fn earliest_of_several_and_multibyte() {
        assert_eq!(run(&["é!", "b"], &["a→", "bé!"]), ("a→".into(), true));
        assert_eq!(run(&["\n\n"], &["x\n", "\ny"]), ("x".into(), true));
    }
}
