//! Saved files survive kill -9 at any moment: a child process saves chats (and a report file)
//! in a loop, the test kills it at random times and checks that every file still parses.

use std::path::PathBuf;
use std::time::Duration;

/// The child's body: run only when the parent starts this test binary with a target folder.
#[test]
#[ignore = "the child process of saves_survive_kill_9"]
fn atomic_writes_child() {
    let Some(dir) = std::env::args().skip_while(|a| a != "--").nth(1) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let store = cellm_app::gui::store::ChatStore::new(&dir);
    let mut chat = cellm_app::gui::model::Chat::new("harden".to_string());
    for i in 0u64.. {
        // Sizes vary so a torn write would be visible as truncated JSON.
        chat.title = format!("{i} {}", "x".repeat((i as usize * 7919) % 100_000));
        store.save(&chat).expect("save chat");
        let report =
            serde_json::json!({"i": i, "pad": "y".repeat((i as usize * 104_729) % 200_000)});
        cellm_engine::atomic_file::write_atomic(
            &dir.join("report.json"),
            report.to_string().as_bytes(),
        )
        .expect("save report");
    }
}

#[test]
fn saves_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..30 {
        let mut child = std::process::Command::new(&exe)
            .args([
                "atomic_writes_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--",
            ])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(30 + seed % 120));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let chats = dir.path().join("chats");
        for entry in std::fs::read_dir(&chats).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "json") {
                let bytes = std::fs::read(&p).unwrap();
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .unwrap_or_else(|e| panic!("round {round}: {} is torn: {e}", p.display()));
            }
        }
        let report = dir.path().join("report.json");
        if report.exists() {
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(&report).unwrap())
                .unwrap_or_else(|e| panic!("round {round}: report.json is torn: {e}"));
        }
    }
}
