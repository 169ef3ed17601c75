//! Adapter and device selection, plus a cache of compiled compute pipelines.

use super::GpuError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What the user sees about the chosen adapter.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    /// "Vulkan", "Metal", "Dx12", "Gl".
    pub backend: String,
    /// "DiscreteGpu", "IntegratedGpu", "Cpu" (lavapipe), ...
    pub device_type: String,
    /// Whether `shader-f16` was enabled on the device.
    pub shader_f16: bool,
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {})", self.name, self.backend, self.device_type)
    }
}

/// Identifies a compiled pipeline: shader key, entry point and up to four `override` constants
/// (as bits). Built without allocating, since every dispatch of every token looks one up.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct PipelineKey {
    key: &'static str,
    entry: &'static str,
    constants: [(&'static str, u64); 4],
}

impl std::fmt::Display for PipelineKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.key, self.entry)?;
        for (k, v) in self.constants.iter().filter(|(k, _)| !k.is_empty()) {
            write!(f, ":{k}={}", f64::from_bits(*v))?;
        }
        Ok(())
    }
}

/// A wgpu device and queue with the kernels' pipelines. Cheap to share by reference; all methods
/// take `&self`.
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) limits: wgpu::Limits,
    summary: AdapterSummary,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
    /// Validation / out-of-memory errors reported asynchronously by wgpu; surfaced as
    /// [`GpuError::Device`] at the next submit or read-back instead of wgpu's default panic.
    errors: Arc<Mutex<Option<String>>>,
    /// A 16-byte buffer bound where an op's optional input is absent.
    pub(crate) dummy: wgpu::Buffer,
    /// Smallest subgroup size of the adapter, 0 where subgroup operations are not enabled.
    pub(crate) subgroup_min: u32,
    /// Bind groups reused across submits and the op-parameter buffer (see [`super::Encoder`]).
    pub(crate) binds: Mutex<super::encoder::BindCache>,
    /// Time spent encoding/submitting and waiting, printed at drop when `CELLM_GPU_PROFILE` is set.
    pub(crate) profile: Option<Profile>,
}

/// Where a model's GPU time goes, from the host's side (see `CELLM_GPU_PROFILE`).
#[derive(Default)]
pub(crate) struct Profile {
    pub submits: std::sync::atomic::AtomicU64,
    pub dispatches: std::sync::atomic::AtomicU64,
    pub encode_ns: std::sync::atomic::AtomicU64,
    pub wait_ns: std::sync::atomic::AtomicU64,
    pub waits: std::sync::atomic::AtomicU64,
    /// Per kernel (pipeline key): dispatches and GPU nanoseconds, when timing.
    pub kernels: Mutex<HashMap<String, (u64, f64)>>,
    pub timing: bool,
    /// Time whole submits instead of single dispatches.
    pub span: bool,
}

impl Drop for GpuContext {
    fn drop(&mut self) {
        if let Some(p) = &self.profile {
            use std::sync::atomic::Ordering::Relaxed;
            let ms = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed) as f64 / 1e6;
            eprintln!(
                "gpu profile: {} submits, {} dispatches, encode+submit {:.1} ms, {} waits {:.1} ms",
                p.submits.load(Relaxed),
                p.dispatches.load(Relaxed),
                ms(&p.encode_ns),
                p.waits.load(Relaxed),
                ms(&p.wait_ns)
            );
            let kernels = p.kernels.lock().map(|k| k.clone()).unwrap_or_default();
            let mut rows: Vec<_> = kernels.into_iter().collect();
            rows.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
            for (name, (n, ns)) in rows {
                eprintln!(
                    "  {:>9.2} ms {:>7} x {:>7.2} us  {name}",
                    ns / 1e6,
                    n,
                    ns / 1e3 / n.max(1) as f64
                );
            }
        }
    }
}

impl GpuContext {
    /// Adds the nanoseconds since `since` to a profile counter (no-op unless profiling).
    pub(crate) fn count(
        &self,
        pick: impl Fn(&Profile) -> &std::sync::atomic::AtomicU64,
        since: Option<std::time::Instant>,
    ) {
        if let Some(t) = since {
            self.add(pick, t.elapsed().as_nanos() as u64);
        }
    }

    /// Adds `n` to a profile counter (no-op unless profiling).
    pub(crate) fn add(&self, pick: impl Fn(&Profile) -> &std::sync::atomic::AtomicU64, n: u64) {
        if let Some(p) = &self.profile {
            pick(p).fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The pipeline key of `p` (for per-kernel timings).
    pub(crate) fn pipeline_name(&self, p: &wgpu::ComputePipeline) -> String {
        let cache = self
            .pipelines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache
            .iter()
            .find(|(_, v)| *v == p)
            .map_or_else(|| "?".to_string(), |(k, _)| k.to_string())
    }

    pub(crate) fn timing(&self) -> bool {
        self.profile.as_ref().is_some_and(|p| p.timing)
    }

    /// Submits a command buffer made by [`super::Encoder::finish`].
    pub fn submit_recorded(&self, cb: wgpu::CommandBuffer) -> Result<(), GpuError> {
        let t0 = self.clock();
        self.queue.submit([cb]);
        self.count(|p| &p.encode_ns, t0);
        self.add(|p| &p.submits, 1);
        self.take_error()
    }

    /// Adds the time since `since` to the profile table's row `name` (host-side spans).
    pub(crate) fn note_time(&self, name: &str, since: Option<std::time::Instant>) {
        let (Some(p), Some(t)) = (&self.profile, since) else {
            return;
        };
        if let Ok(mut table) = p.kernels.lock() {
            let e = table.entry(name.to_string()).or_default();
            e.0 += 1;
            e.1 += t.elapsed().as_nanos() as f64;
        }
    }

    pub(crate) fn span_timing(&self) -> bool {
        self.profile.as_ref().is_some_and(|p| p.span)
    }

    /// Now, when profiling (`CELLM_GPU_PROFILE`); None otherwise.
    pub fn clock(&self) -> Option<std::time::Instant> {
        self.profile.as_ref().map(|_| std::time::Instant::now())
    }
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.summary)
            .finish()
    }
}

impl GpuContext {
    /// Opens the high-performance adapter of any backend (the `WGPU_BACKEND` environment
    /// variable may narrow it), with `shader-f16` when offered and the adapter's own limits (so
    /// large weights fit in few buffers).
    pub fn new() -> Result<GpuContext, GpuError> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
            ..Default::default()
        }))
        .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let shader_f16 = adapter.features().contains(wgpu::Features::SHADER_F16);
        let mut required_features = if shader_f16 {
            wgpu::Features::SHADER_F16
        } else {
            wgpu::Features::empty()
        };
        // CELLM_GPU_PROFILE=2: time every dispatch with timestamp queries; =3: time each submit
        // from its first dispatch to its last (GPU busy time; diagnostics only).
        let level = std::env::var("CELLM_GPU_PROFILE").unwrap_or_default();
        let timing = (level == "2" || level == "3")
            && adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        if timing {
            required_features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        // Subgroup shuffles make the matmul lane reductions barrier-free (see matmul.rs).
        let subgroups = adapter.features().contains(wgpu::Features::SUBGROUP)
            && std::env::var_os("CELLM_GPU_NO_SUBGROUPS").is_none();
        if subgroups {
            required_features |= wgpu::Features::SUBGROUP;
        }
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("cellm"),
            required_features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| GpuError::RequestDevice(e.to_string()))?;
        let errors: Arc<Mutex<Option<String>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut slot) = sink.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }));
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        Ok(GpuContext {
            summary: AdapterSummary {
                name: info.name,
                backend: format!("{:?}", info.backend),
                device_type: format!("{:?}", info.device_type),
                shader_f16,
            },
            device,
            queue,
            limits,
            pipelines: Mutex::default(),
            errors,
            dummy,
            binds: Mutex::default(),
            subgroup_min: if subgroups { info.subgroup_min_size } else { 0 },
            profile: std::env::var_os("CELLM_GPU_PROFILE").map(|_| Profile {
                timing,
                span: timing && level == "3",
                ..Profile::default()
            }),
        })
    }

    pub fn adapter(&self) -> &AdapterSummary {
        &self.summary
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// Largest buffer one binding may cover (weights larger than this are split by rows).
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// Returns (and clears) the first asynchronous device error since the last check.
    pub(crate) fn take_error(&self) -> Result<(), GpuError> {
        match self.errors.lock().ok().and_then(|mut e| e.take()) {
            Some(msg) => Err(GpuError::Device(msg)),
            None => Ok(()),
        }
    }

    /// Blocks until all submitted work is done.
    pub fn wait(&self) -> Result<(), GpuError> {
        let t = self.clock();
        let r = self.wait_inner();
        self.count(|p| &p.wait_ns, t);
        self.add(|p| &p.waits, 1);
        r
    }

    fn wait_inner(&self) -> Result<(), GpuError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Device(e.to_string()))?;
        self.take_error()
    }

    /// The compute pipeline for `entry` of `source`, compiled once per (key, constants). `key`
    /// names the shader file; `constants` (at most four) are WGSL `override` values.
    pub(crate) fn pipeline(
        &self,
        key: &'static str,
        source: &str,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> wgpu::ComputePipeline {
        assert!(constants.len() <= 4, "{key}:{entry}: more than 4 constants");
        let mut id = PipelineKey {
            key,
            entry,
            constants: [("", 0); 4],
        };
        for (slot, (k, v)) in id.constants.iter_mut().zip(constants) {
            *slot = (k, v.to_bits());
        }
        let mut cache = self
            .pipelines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(p) = cache.get(&id) {
            return p.clone();
        }
        let full = id.to_string();
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(key),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        let p = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&full),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        cache.insert(id, p.clone());
        p
    }
}
