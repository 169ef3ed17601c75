//! Chat persistence: atomic JSON files, unreadable files reported (not fatal), Markdown export.

use cellm_app::gui::model::{Attachment, Chat, ChatMessage};
use cellm_app::gui::store::ChatStore;
use std::path::Path;

#[test]
fn gui_store_round_trip_delete_and_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChatStore::new(dir.path());
    let mut chat = Chat::new("17-1".into());
    chat.system_prompt = "Be brief.".into();
    chat.messages.push(ChatMessage::user(
        "What is in this picture?",
        vec![Attachment::from_path(Path::new("/tmp/cat.png")).unwrap()],
    ));
    let mut reply = ChatMessage::assistant_empty();
    reply.text = "A cat.\n\n```rust\nfn main() {}\n```".into();
    chat.messages.push(reply);
    chat.auto_title();
    store.save(&chat).unwrap();
    // No temporary file is left next to the chat.
    let names: Vec<String> = std::fs::read_dir(store.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["17-1.json".to_owned()]);

    std::fs::write(store.dir().join("broken.json"), b"{ not json").unwrap();
    let (chats, problems) = store.load_all();
    assert_eq!(chats, vec![chat.clone()]);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains("broken.json"));

    let md = chat.to_markdown();
    assert!(md.starts_with("# What is in this picture?\n"));
    assert!(md.contains("> System: Be brief."));
    assert!(md.contains("## Assistant\n\nA cat."));
    assert!(md.contains("*Attached: /tmp/cat.png*"));

    store.delete("17-1").unwrap();
    store.delete("17-1").unwrap(); // deleting twice is fine
    assert!(store.load_all().0.is_empty());
}

#[test]
fn gui_store_ids_cannot_escape_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChatStore::new(&dir.path().join("data"));
    let chat = Chat::new("../../etc/passwd".into());
    store.save(&chat).unwrap();
    assert!(store.dir().join("etcpasswd.json").is_file());
}
