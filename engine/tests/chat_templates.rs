//! Chat templates rendered by minijinja against transformers' jinja2 renders
//! (testdata/chat/chat_cases.json, made by testdata/chat/make_chat_cases.py).

use cellm_engine::chat::{ChatMessage, ChatTemplate};
use cellm_engine::session::Role;
use std::path::Path;

#[derive(serde::Deserialize)]
struct Msg {
    role: Role,
    content: String,
    images: usize,
    audios: usize,
}

#[derive(serde::Deserialize)]
struct Case {
    template: String,
    conversation: String,
    messages: Vec<Msg>,
    add_generation_prompt: bool,
    variables: serde_json::Map<String, serde_json::Value>,
    expected: String,
}

#[derive(serde::Deserialize)]
struct Cases {
    /// A template exercising the Jinja features HF templates use.
    features_template: String,
    cases: Vec<Case>,
}

#[test]
fn chat_templates_match_transformers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata");
    let cases: Cases = serde_json::from_str(
        &std::fs::read_to_string(root.join("chat/chat_cases.json")).expect("chat cases"),
    )
    .expect("chat cases json");
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tiny-gemma3/tokenizer_config.json"))
            .expect("tiny-gemma3 tokenizer_config"),
    )
    .expect("tokenizer_config json");
    let real_gemma3 = config["chat_template"].as_str().expect("chat_template");
    let mut failures = Vec::new();
    for c in &cases.cases {
        let mut t = match c.template.as_str() {
            "tiny-gemma3" => ChatTemplate::new(Some(real_gemma3), "gemma3", "<bos>"),
            "builtin-gemma3" => ChatTemplate::new(None, "gemma3", "<bos>"),
            "builtin-gemma4" => ChatTemplate::new(None, "gemma4", "<bos>"),
            "features" => ChatTemplate::new(Some(&cases.features_template), "gemma3", "<bos>"),
            other => panic!("unknown template {other}"),
        }
        .expect("template compiles");
        for (k, v) in &c.variables {
            t.set_variable(k, v.clone());
        }
        let messages: Vec<ChatMessage> = c
            .messages
            .iter()
            .map(|m| ChatMessage {
                role: m.role,
                content: m.content.clone(),
                images: m.images,
                audios: m.audios,
            })
            .collect();
        let got = t
            .render(&messages, c.add_generation_prompt)
            .expect("render");
        if got != c.expected {
            failures.push(format!(
                "{} / {} (gen {}, {:?}):\n  got  {got:?}\n  want {:?}",
                c.template, c.conversation, c.add_generation_prompt, c.variables, c.expected
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
