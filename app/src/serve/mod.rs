//! `cellm serve`: an OpenAI-compatible HTTP API (`/v1/models`, `/v1/chat/completions`,
//! `/v1/completions`, streamed as server-sent events or not) over one loaded model. A library
//! module with a start/stop handle and a request log, so both the CLI and the app can run it.
//!
//! Requests queue on one worker thread that owns the engine session (see `worker.rs`); a client
//! that disconnects cancels its generation; bodies are size-limited; errors are OpenAI-shaped.

mod api;
mod error;
mod request_log;
mod routes;
mod stop;
mod worker;

pub use self::request_log::{LogCallback, LogEntry};
use cellm_engine::session::{ModelInfo, SessionOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Load(String),
    #[error("starting the HTTP runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

pub struct ServerOptions {
    pub model: PathBuf,
    pub session: SessionOptions,
    /// Address to bind; localhost unless the user asks otherwise.
    pub host: String,
    /// 0 picks a free port (see [`ServerHandle::addr`]).
    pub port: u16,
    /// When set, every request must carry `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Largest request body accepted (images and audio arrive base64-encoded inside it).
    pub max_body_bytes: usize,
    /// The id `/v1/models` lists (default: the model file's name without extension).
    pub model_id: Option<String>,
    /// Entries the request log keeps.
    pub log_capacity: usize,
    /// Called with every log line (on the thread that made it; keep it quick).
    pub on_log: Option<LogCallback>,
}

impl ServerOptions {
    pub fn new(model: PathBuf) -> Self {
        Self {
            model,
            session: SessionOptions::default(),
            host: "127.0.0.1".into(),
            port: 8080,
            api_key: None,
            max_body_bytes: 32 * 1024 * 1024,
            model_id: None,
            log_capacity: 500,
            on_log: None,
        }
    }
}

/// A running server. Dropping it stops the server.
pub struct ServerHandle {
    addr: SocketAddr,
    model_id: String,
    info: ModelInfo,
    backend: String,
    log: Arc<request_log::RequestLog>,
    worker: Arc<worker::Worker>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL clients use, e.g. `http://127.0.0.1:8080/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    pub fn model_info(&self) -> &ModelInfo {
        &self.info
    }

    /// Where the model runs ("cpu", "gpu: ...").
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// The request log, oldest entry first.
    pub fn log(&self) -> Vec<LogEntry> {
        self.log.snapshot()
    }

    /// Blocks until the server stops (it runs until [`ServerHandle::stop`] or an I/O failure).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.worker.stop();
    }

    /// Stops accepting connections, cancels the running generation, and waits for both threads.
    pub fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Ends the streams in flight so the graceful shutdown does not wait for them.
        self.worker.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

/// Loads the model, binds the address and serves on background threads.
pub fn start(options: ServerOptions) -> Result<ServerHandle, ServeError> {
    let addr_text = if options.host.contains(':') {
        format!("[{}]:{}", options.host, options.port)
    } else {
        format!("{}:{}", options.host, options.port)
    };
    // Bind before loading, so a busy port fails fast.
    let listener =
        std::net::TcpListener::bind(addr_text.as_str()).map_err(|source| ServeError::Bind {
            addr: addr_text.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: addr_text.clone(),
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ServeError::Bind {
            addr: addr_text.clone(),
            source,
        })?;
    let log = Arc::new(request_log::RequestLog::new(
        options.log_capacity,
        options.on_log,
    ));
    let (worker, info, backend) =
        worker::Worker::spawn(options.model.clone(), options.session.clone(), log.clone())
            .map_err(ServeError::Load)?;
    let worker = Arc::new(worker);
    let model_id = options.model_id.clone().unwrap_or_else(|| {
        options
            .model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "cellm".into())
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cellm-serve-http")
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    let state = Arc::new(routes::AppState {
        worker: worker.clone(),
        model_id: model_id.clone(),
        context_length: info.context_length,
        api_key: options.api_key.clone(),
        log: log.clone(),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    let app = routes::router(state, options.max_body_bytes);
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let serve_log = log.clone();
    let thread = std::thread::Builder::new()
        .name("cellm-serve".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        serve_log.push(format!("server stopped: {e}"));
                        return;
                    }
                };
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = shutdown_rx.await;
                    })
                    .await;
                if let Err(e) = served {
                    serve_log.push(format!("server stopped: {e}"));
                }
            });
        })
        .map_err(ServeError::Runtime)?;
    log.push(format!(
        "serving {model_id} ({backend}) at http://{addr}/v1"
    ));
    Ok(ServerHandle {
        addr,
        model_id,
        info,
        backend,
        log,
        worker,
        shutdown: Some(shutdown_tx),
        thread: Some(thread),
    })
}
