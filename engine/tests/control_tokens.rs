//! User text never becomes control tokens: every special token of both tiny families, typed
//! inside a user or system message, encodes as plain text; only the template's own markers are
//! special. Chat templates run under instruction, size and recursion limits.

use cellm_engine::chat::{ChatMessage, ChatTemplate};
use cellm_engine::session::Role;
use cellm_engine::tokenizer::Tokenizer;
use std::path::Path;

fn testdata(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(name)
}

fn specials(tok_json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(tok_json).unwrap();
    v["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["special"] == true)
        .map(|t| t["content"].as_str().unwrap().to_string())
        .collect()
}

/// Specials in `ids`, in order.
fn special_ids(tok: &Tokenizer, ids: &[u32]) -> Vec<u32> {
    ids.iter().copied().filter(|&i| tok.is_special(i)).collect()
}

pub fn check_family(tok: &Tokenizer, template: &ChatTemplate, words: &[String]) {
    let base = |text: &str, role: Role| {
        let msgs = [
            ChatMessage::text(Role::System, "be brief"),
            ChatMessage::text(role, text),
        ];
        template.encode(tok, &msgs, true).unwrap()
    };
    let reference = special_ids(tok, &base("hello world", Role::User));
    assert!(!reference.is_empty(), "the template writes markers");
    let mut failures = Vec::new();
    for w in words {
        for text in [
            format!("hello {w} world"),
            w.to_string(),
            format!("{w}{w}x{w}"),
            format!("  {w}\n"),
        ] {
            let ids = base(&text, Role::User);
            if special_ids(tok, &ids) != reference {
                failures.push(format!("{text:?} in a user turn"));
            }
            // The plain encoding decodes back to the typed text.
            let plain = tok.encode_plain(&text).unwrap();
            if tok.decode(&plain).unwrap() != text {
                failures.push(format!("{text:?} does not round-trip"));
            }
        }
        let msgs = [
            ChatMessage::text(Role::System, format!("sys {w}")),
            ChatMessage::text(Role::User, "hi"),
        ];
        let ids = template.encode(tok, &msgs, true).unwrap();
        let sys_ref = special_ids(
            tok,
            &template
                .encode(
                    tok,
                    &[
                        ChatMessage::text(Role::System, "sys"),
                        ChatMessage::text(Role::User, "hi"),
                    ],
                    true,
                )
                .unwrap(),
        );
        if special_ids(tok, &ids) != sys_ref {
            failures.push(format!("{w:?} in a system message"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} spellings became control tokens:\n{}",
        failures.len(),
        words.len(),
        failures.join("\n")
    );
    // Text without special spellings encodes exactly as before.
    let msgs = [ChatMessage::text(Role::User, "plain text")];
    assert_eq!(
        template.encode(tok, &msgs, true).unwrap(),
        tok.encode(&template.render(&msgs, true).unwrap(), false)
            .unwrap()
    );
}

#[test]
fn control_tokens_typed_by_the_user_stay_text() {
    for (dir, family) in [("tiny-gemma3", "gemma3"), ("tiny-gemma4", "gemma4")] {
        let json = std::fs::read_to_string(testdata(dir).join("tokenizer.json")).unwrap();
        let tok = Tokenizer::from_json(&json).unwrap();
        let template = ChatTemplate::new(None, family, "<bos>").unwrap();
        let words = specials(&json);
        assert!(words.len() > 10, "{dir}: {} specials", words.len());
        check_family(&tok, &template, &words);
    }
}

#[test]
fn chat_templates_are_bounded() {
    let msgs = [ChatMessage::text(Role::User, "hi")];
    for (name, src) in [
        (
            "nested loops",
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        ),
        (
            "doubling",
            "{% set s = 'ab' %}{% for i in range(40) %}{% set s = s + s %}{% endfor %}{{ s }}",
        ),
        (
            "recursion",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        ),
        (
            "output size",
            "{% for i in range(100) %}{{ 'x' * 100000000 }}{% endfor %}",
        ),
    ] {
        let t0 = std::time::Instant::now();
        let r = ChatTemplate::new(Some(src), "gemma3", "<bos>").and_then(|t| t.render(&msgs, true));
        assert!(r.is_err(), "{name}: rendered");
        assert!(
            t0.elapsed().as_secs_f64() < 5.0,
            "{name}: took {:?}",
            t0.elapsed()
        );
    }
}
