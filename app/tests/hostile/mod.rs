//! Helpers of the hostile-input suite: run the `cellm` binary as a child process under a
//! timeout and an address-space cap, judge the outcome, and rewrite .cellm / GGUF files.

#![allow(dead_code)]

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Address space a child may map: bad input must fail cleanly well below it.
pub const MEMORY_CAP: u64 = 8 << 30;
/// Wall time a child may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

pub struct Outcome {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    pub secs: f64,
}

/// Runs `cellm ARGS` with `stdin`, a timeout and a memory cap.
pub fn cellm<I, S>(args: I, stdin: Option<&[u8]>) -> Outcome
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cellm"));
    cmd.args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: MEMORY_CAP,
                rlim_max: MEMORY_CAP,
            };
            libc::setrlimit(libc::RLIMIT_AS, &lim);
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn cellm");
    let mut input = child.stdin.take().expect("stdin");
    let bytes = stdin.map(<[u8]>::to_vec);
    let writer = std::thread::spawn(move || {
        if let Some(b) = bytes {
            let _ = input.write_all(&b);
        }
    });
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > TIMEOUT {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    Outcome {
        code: status.code(),
        signal: status.signal(),
        timed_out,
        stdout,
        stderr,
        secs: start.elapsed().as_secs_f64(),
    }
}

impl Outcome {
    fn describe(&self) -> String {
        format!(
            "code {:?}, signal {:?}, timed out {}, {:.1} s, stderr: {}",
            self.code,
            self.signal,
            self.timed_out,
            self.secs,
            self.stderr.trim()
        )
    }

    /// A clean error: exit status 1 or 2, an `error` line on stderr, no panic, no signal, no
    /// timeout.
    pub fn clean_error(&self) -> Result<(), String> {
        let error_lines = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error"))
            .count();
        if self.timed_out
            || self.signal.is_some()
            || !matches!(self.code, Some(1 | 2))
            || self.stderr.contains("panicked")
            || error_lines == 0
        {
            return Err(format!("not a clean error: {}", self.describe()));
        }
        Ok(())
    }

    /// Success, or a clean error (inputs whose handling may legitimately go either way).
    pub fn ok_or_clean(&self) -> Result<(), String> {
        if self.code == Some(0) && !self.stderr.contains("panicked") {
            return Ok(());
        }
        self.clean_error()
    }

    pub fn success(&self) -> Result<(), String> {
        if self.code == Some(0) && !self.stderr.contains("panicked") {
            Ok(())
        } else {
            Err(format!("expected success: {}", self.describe()))
        }
    }
}

/// Collects failures of many cases and reports them all at once.
#[derive(Default)]
pub struct Cases {
    pub count: usize,
    pub failures: Vec<String>,
}

impl Cases {
    pub fn check(&mut self, name: &str, result: Result<(), String>) {
        self.count += 1;
        if let Err(e) = result {
            self.failures.push(format!("{name}: {e}"));
        }
    }

    /// Also requires `needle` in stderr (the message names the problem).
    pub fn check_msg(&mut self, name: &str, o: &Outcome, needle: &str) {
        let r = o.clean_error().and_then(|()| {
            if o.stderr.contains(needle) {
                Ok(())
            } else {
                Err(format!("stderr lacks '{needle}': {}", o.stderr.trim()))
            }
        });
        self.check(name, r);
    }

    pub fn finish(self, suite: &str) {
        eprintln!("{suite}: {} cases", self.count);
        assert!(
            self.failures.is_empty(),
            "{suite}: {} of {} cases failed:\n{}",
            self.failures.len(),
            self.count,
            self.failures.join("\n")
        );
    }
}

/// Rewrites a .cellm file's header JSON with `f` (keeping the tensor data), recomputing
/// `header_len` and `data_offset`.
pub fn rewrite_cellm(src: &[u8], f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let header_len = u64::from_le_bytes(src[16..24].try_into().unwrap()) as usize;
    let data_offset = u64::from_le_bytes(src[24..32].try_into().unwrap()) as usize;
    let mut h: serde_json::Value = serde_json::from_slice(&src[32..32 + header_len]).unwrap();
    f(&mut h);
    let json = serde_json::to_vec(&h).unwrap();
    let hl = (32 + json.len()).div_ceil(64) * 64 - 32;
    let mut out = src[..16].to_vec();
    out.extend_from_slice(&(hl as u64).to_le_bytes());
    out.extend_from_slice(&((32 + hl) as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.resize(32 + hl, b' ');
    out.extend_from_slice(&src[data_offset..]);
    out
}

/// The text config inside a .cellm header (`config.text_config` for Gemma 4).
pub fn text_config(h: &mut serde_json::Value) -> &mut serde_json::Value {
    let c = &mut h["config"];
    if c.get("text_config").is_some() {
        &mut c["text_config"]
    } else {
        c
    }
}

/// Overwrites tensor `suffix`'s first 4 bytes (an f32 file) in a .cellm file with `value`.
pub fn poke_f32(bytes: &mut [u8], suffix: &str, value: f32) {
    let header_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    let data_offset = u64::from_le_bytes(bytes[24..32].try_into().unwrap()) as usize;
    let h: serde_json::Value = serde_json::from_slice(&bytes[32..32 + header_len]).unwrap();
    let t = h["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            // The text stack's tensor, not a tower's of the same suffix.
            let n = t["name"].as_str().unwrap();
            n == format!("model.language_model.{suffix}") || n == format!("model.{suffix}")
        })
        .unwrap_or_else(|| panic!("no tensor ending in {suffix}"));
    let at = data_offset + t["offset"].as_u64().unwrap() as usize;
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// A GGUF file split into its parts, to be mutated and written back.
#[derive(Clone)]
pub struct Gguf {
    pub version: u32,
    /// (key, value type, value bytes).
    pub kvs: Vec<(String, u32, Vec<u8>)>,
    /// (name, dims, ggml type, offset).
    pub tensors: Vec<(String, Vec<u64>, u32, u64)>,
    pub alignment: usize,
    pub data: Vec<u8>,
    /// Replace the written tensor / kv counts.
    pub n_tensors: Option<u64>,
    pub n_kv: Option<u64>,
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        s
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn string(&mut self) -> String {
        let n = self.u64() as usize;
        String::from_utf8(self.take(n).to_vec()).unwrap()
    }
    fn skip_value(&mut self, ty: u32) {
        match ty {
            0 | 1 | 7 => self.pos += 1,
            2 | 3 => self.pos += 2,
            4..=6 => self.pos += 4,
            10..=12 => self.pos += 8,
            8 => {
                let n = self.u64() as usize;
                self.pos += n;
            }
            9 => {
                let t = self.u32();
                let n = self.u64();
                for _ in 0..n {
                    self.skip_value(t);
                }
            }
            other => panic!("fixture has value type {other}"),
        }
    }
}

pub fn gguf_string(s: &str) -> Vec<u8> {
    let mut b = (s.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(s.as_bytes());
    b
}

/// A GGUF array of strings.
pub fn gguf_str_array(items: &[String]) -> Vec<u8> {
    let mut b = 8u32.to_le_bytes().to_vec();
    b.extend_from_slice(&(items.len() as u64).to_le_bytes());
    for s in items {
        b.extend(gguf_string(s));
    }
    b
}

impl Gguf {
    pub fn parse(b: &[u8]) -> Self {
        let mut r = Reader { b, pos: 4 };
        let version = r.u32();
        let nt = r.u64();
        let nkv = r.u64();
        let mut kvs = Vec::new();
        let mut alignment = 32;
        for _ in 0..nkv {
            let key = r.string();
            let ty = r.u32();
            let start = r.pos;
            r.skip_value(ty);
            let value = b[start..r.pos].to_vec();
            if key == "general.alignment" {
                alignment = u32::from_le_bytes(value[..4].try_into().unwrap()) as usize;
            }
            kvs.push((key, ty, value));
        }
        let mut tensors = Vec::new();
        for _ in 0..nt {
            let name = r.string();
            let nd = r.u32();
            let dims = (0..nd).map(|_| r.u64()).collect();
            let ty = r.u32();
            let off = r.u64();
            tensors.push((name, dims, ty, off));
        }
        let data_start = r.pos.div_ceil(alignment) * alignment;
        Self {
            version,
            kvs,
            tensors,
            alignment,
            data: b[data_start..].to_vec(),
            n_tensors: None,
            n_kv: None,
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(
            &self
                .n_tensors
                .unwrap_or(self.tensors.len() as u64)
                .to_le_bytes(),
        );
        b.extend_from_slice(&self.n_kv.unwrap_or(self.kvs.len() as u64).to_le_bytes());
        for (k, ty, v) in &self.kvs {
            b.extend(gguf_string(k));
            b.extend_from_slice(&ty.to_le_bytes());
            b.extend_from_slice(v);
        }
        for (name, dims, ty, off) in &self.tensors {
            b.extend(gguf_string(name));
            b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&ty.to_le_bytes());
            b.extend_from_slice(&off.to_le_bytes());
        }
        let align = self.alignment.max(1);
        b.resize(b.len().div_ceil(align) * align, 0);
        b.extend_from_slice(&self.data);
        b
    }

    /// Sets (or adds) a key's value.
    pub fn set(&mut self, key: &str, ty: u32, value: Vec<u8>) {
        match self.kvs.iter_mut().find(|kv| kv.0 == key) {
            Some(kv) => {
                kv.1 = ty;
                kv.2 = value;
            }
            None => self.kvs.push((key.to_string(), ty, value)),
        }
    }

    pub fn remove(&mut self, key: &str) {
        self.kvs.retain(|kv| kv.0 != key);
    }

    /// The vocabulary strings.
    pub fn tokens(&self) -> Vec<String> {
        let v = &self
            .kvs
            .iter()
            .find(|kv| kv.0 == "tokenizer.ggml.tokens")
            .expect("tokens")
            .2;
        let mut r = Reader { b: v, pos: 4 };
        let n = r.u64();
        (0..n).map(|_| r.string()).collect()
    }
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn put(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}
