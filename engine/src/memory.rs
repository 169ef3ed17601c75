//! Where a session's memory goes: the process counters the OS keeps (Linux `/proc`), and the
//! [`MemoryBreakdown`] a [`crate::session::Session`] reports (mapped weights, tokenizer, KV
//! cache, scratch, device buffers). Outside Linux the OS counters are absent (`None`).

use std::path::Path;

/// The process's resident memory, from `/proc/self/status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProcessMemory {
    /// Anonymous resident memory (heap, stacks): `RssAnon`.
    pub rss_anon_bytes: u64,
    /// File-backed resident memory (mapped model, binary, libraries): `RssFile`.
    pub rss_file_bytes: u64,
    /// Peak resident set size: `VmHWM`.
    pub peak_rss_bytes: u64,
}

impl ProcessMemory {
    /// The counters now; `None` where `/proc/self/status` is unavailable.
    pub fn now() -> Option<Self> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            let kb: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
            Some(kb * 1024)
        };
        Some(Self {
            rss_anon_bytes: field("RssAnon:")?,
            rss_file_bytes: field("RssFile:")?,
            peak_rss_bytes: field("VmHWM:")?,
        })
    }
}

/// Anonymous resident bytes now (0 where unknown): the before/after probe of a build step.
pub fn rss_anon_bytes() -> u64 {
    ProcessMemory::now().map_or(0, |m| m.rss_anon_bytes)
}

/// Returns heap memory freed so far to the OS. glibc keeps freed small allocations in its
/// arenas; the tens of MB of short-lived strings of a tokenizer build would otherwise stay
/// resident for the life of the process. A no-op with other allocators.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused arena pages; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Resident bytes of every mapping of `path` in this process (`/proc/self/smaps`): the pages
/// of a memory-mapped model file the OS holds in memory now.
pub fn mapped_resident_bytes(path: &Path) -> Option<u64> {
    let path = std::fs::canonicalize(path).ok()?;
    let want = format!(" {}", path.to_str()?);
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut total = 0u64;
    let mut inside = false;
    for line in smaps.lines() {
        // A mapping's header: "start-end perms offset dev inode   pathname".
        let mut cols = line.split_whitespace();
        let first = cols.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            inside = line.trim_end().ends_with(&want);
        } else if inside && first == "Rss:" {
            let kb: u64 = cols.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            total += kb * 1024;
        }
    }
    Some(total)
}

/// Where a loaded session's memory goes. Buffer sizes are exact (allocated capacities);
/// `tokenizer_bytes` is the growth of anonymous memory while the tokenizer was built;
/// the mapped and process figures are the OS's (absent outside Linux).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryBreakdown {
    /// Size of the model file.
    pub file_bytes: u64,
    /// Pages of the mapped model file resident now (weights the CPU has read, or that the
    /// GPU upload read and the OS has not yet dropped).
    pub mapped_resident_bytes: Option<u64>,
    /// Anonymous memory the tokenizer build kept (its tables, plus allocator slack).
    pub tokenizer_bytes: u64,
    /// KV cache as allocated now (it grows with the context in use).
    pub kv_cache_bytes: u64,
    /// Host activation buffers of the text stack.
    pub scratch_bytes: u64,
    /// Host logits buffers (the model's and the sampler's copy).
    pub logits_bytes: u64,
    /// Weights uploaded to the GPU (device memory, not host).
    pub device_weight_bytes: u64,
    /// Other device buffers (GPU KV cache, activations).
    pub device_state_bytes: u64,
    /// The whole process, as the OS counts it.
    pub process: Option<ProcessMemory>,
    /// Anonymous memory in no line above (runtime, allocator slack, the GPU driver ..).
    pub other_anon_bytes: Option<u64>,
}

impl MemoryBreakdown {
    /// Fills [`MemoryBreakdown::process`] and [`MemoryBreakdown::other_anon_bytes`] from the
    /// OS counters now.
    pub fn with_process(mut self) -> Self {
        self.process = ProcessMemory::now();
        let known =
            self.tokenizer_bytes + self.kv_cache_bytes + self.scratch_bytes + self.logits_bytes;
        self.other_anon_bytes = self.process.map(|p| p.rss_anon_bytes.saturating_sub(known));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_counters_see_a_mapped_file() {
        if !Path::new("/proc/self/smaps").exists() {
            // Not Linux: the counters are documented as absent.
            assert!(ProcessMemory::now().is_none());
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.bin");
        std::fs::write(&p, vec![7u8; 1 << 20]).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let map = unsafe { memmap2::Mmap::map(&f) }.unwrap();
        let sum: u64 = map.iter().map(|&b| b as u64).sum();
        assert_eq!(sum, 7 << 20);
        let resident = mapped_resident_bytes(&p).unwrap();
        assert!(resident >= 1 << 20, "{resident}");
        let m = ProcessMemory::now().unwrap();
        assert!(m.rss_file_bytes >= resident && m.peak_rss_bytes > 0);
        drop(map);
        assert_eq!(mapped_resident_bytes(&p), Some(0));
    }
}
