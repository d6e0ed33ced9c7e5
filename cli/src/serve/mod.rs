//! `mrsampler serve`: a restoration service over HTTP that batches requests at the step level.
//!
//! * [`scheduler`]: one thread owns the network and the running requests' runs, and puts
//!   their pending evaluations into batched calls (continuous batching: requests join and
//!   leave between steps).
//! * [`metrics`]: the Prometheus metrics.
//! * This module: the HTTP endpoints (axum on tokio), request limits and errors.
//!
//! Endpoints: `POST /v1/restore` (an image body, options in the query; answers the restored
//! PNG), `GET /health`, `GET /metrics`, `GET /openapi.json`.

pub mod metrics;
pub mod scheduler;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mrsampler::schedule::IrSdeSchedule;
use mrsampler::{GridSpec, SamplerSpec};
use tokio::sync::{mpsc, oneshot};

use crate::error::Result;
use crate::images::{self, image_seed};
use crate::sampling::Model;
use crate::spec::{ToolSpec, parse_spec};
use metrics::Metrics;
use scheduler::{Failure, Job, Settings};

/// The OpenAPI description of the endpoints.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The service's limits and defaults.
pub struct Limits {
    /// Most requests sampled at once, and most samples in one network call.
    pub max_batch: usize,
    /// Most pixels sampled at once over the running requests (the memory budget).
    pub max_batch_pixels: usize,
    /// Largest request body, bytes.
    pub max_body: usize,
    /// Largest image, pixels (width × height).
    pub max_pixels: usize,
    /// Requests waiting beyond the running ones; more are answered 503.
    pub queue: usize,
    /// Per-request limit, from arrival to answer.
    pub timeout: Duration,
    /// The sampler a request gets without `sampler`.
    pub sampler: SamplerSpec,
    /// The NFE a request gets without `nfe`.
    pub nfe: usize,
    /// Largest NFE a request may ask for.
    pub max_nfe: usize,
}

/// What the handlers share.
struct App {
    jobs: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
    limits: Limits,
    schedule: IrSdeSchedule,
    channels: usize,
    stopping: AtomicBool,
}

/// Serves on `listen` until SIGINT/SIGTERM, then stops taking requests, finishes the running
/// and queued ones and returns. `ready` is told the bound address (port 0 picks one).
pub fn run(
    model: Model,
    schedule: IrSdeSchedule,
    channels: usize,
    limits: Limits,
    listen: SocketAddr,
    ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let metrics = Arc::new(Metrics::new());
    let (tx, rx) = mpsc::channel::<Job>(limits.queue.max(1));
    let settings = Settings {
        schedule: schedule.clone(),
        device: model.device(),
        max_batch: limits.max_batch,
        max_running_pixels: limits.max_batch_pixels,
    };
    let worker = {
        let metrics = metrics.clone();
        std::thread::Builder::new()
            .name("mrsampler-scheduler".into())
            .spawn(move || scheduler::run(model, settings, rx, metrics))
            .map_err(|e| format!("cannot start the scheduler thread: {e}"))?
    };
    let app = Arc::new(App {
        jobs: tx,
        metrics,
        limits,
        schedule,
        channels,
        stopping: AtomicBool::new(false),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("--listen {listen}: {e}"))?;
        let bound = listener
            .local_addr()
            .map_err(|e| format!("--listen {listen}: {e}"))?;
        ready(bound);
        let router = Router::new()
            .route("/v1/restore", post(restore))
            .route("/health", get(health))
            .route("/metrics", get(metrics_text))
            .route("/openapi.json", get(openapi))
            .with_state(app.clone());
        let stopping = app.clone();
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                stopping.stopping.store(true, Ordering::SeqCst);
                eprintln!("shutting down: finishing the running requests");
            })
            .await
            .map_err(|e| format!("server: {e}"))?;
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    // Every handler has returned; closing the queue lets the scheduler finish and stop.
    drop(app);
    worker.join().map_err(|_| "the scheduler thread panicked")?;
    Ok(())
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// A JSON error answer, counted as `outcome`.
fn error(app: &App, status: StatusCode, outcome: &str, message: impl Into<String>) -> Response {
    app.metrics.finished(outcome);
    json_error(status, message)
}

/// A JSON error answer (for an outcome the scheduler counted).
fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The query parameters `POST /v1/restore` takes.
const PARAMETERS: [&str; 4] = ["nfe", "sampler", "seed", "name"];

async fn restore(
    State(app): State<Arc<App>>,
    Query(query): Query<HashMap<String, String>>,
    body: Body,
) -> Response {
    let arrived = Instant::now();
    if app.stopping.load(Ordering::SeqCst) {
        return error(
            &app,
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the service is shutting down",
        );
    }
    // Options: every parameter acts or is refused.
    if let Some(unknown) = query.keys().find(|k| !PARAMETERS.contains(&k.as_str())) {
        return error(
            &app,
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "unknown parameter `{unknown}`; the parameters are {}",
                PARAMETERS.join(", ")
            ),
        );
    }
    let options = match options(&app, &query) {
        Ok(o) => o,
        Err(message) => return error(&app, StatusCode::BAD_REQUEST, "bad_request", message),
    };
    let bytes = match axum::body::to_bytes(body, app.limits.max_body).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                &app,
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the body is larger than the limit of {} bytes",
                    app.limits.max_body
                ),
            );
        }
    };
    if bytes.is_empty() {
        return error(
            &app,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the body is empty: send a PNG or JPEG image",
        );
    }
    // Decoding is CPU work: off the async workers.
    let decoded = tokio::task::spawn_blocking(move || {
        images::decode(&bytes, "the request body").map_err(|e| e.to_string())
    })
    .await;
    let picture = match decoded {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return error(&app, StatusCode::BAD_REQUEST, "bad_request", e),
        Err(e) => {
            return error(
                &app,
                StatusCode::INTERNAL_SERVER_ERROR,
                "error",
                e.to_string(),
            );
        }
    };
    let pixels = picture.width * picture.height;
    if pixels > app.limits.max_pixels {
        return error(
            &app,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the image has {}×{} = {pixels} pixels, more than the limit of {}",
                picture.width, picture.height, app.limits.max_pixels
            ),
        );
    }
    if picture.channels != app.channels {
        return error(
            &app,
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_request",
            format!(
                "the model takes {}-channel images; this one has {} colour channel(s)",
                app.channels, picture.channels
            ),
        );
    }
    let (reply, answer) = oneshot::channel();
    let job = Job {
        picture,
        spec: options.spec,
        nfe: options.nfe,
        seed: options.seed,
        deadline: arrived + app.limits.timeout,
        reply,
    };
    match app.jobs.try_send(job) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            let mut response = error(
                &app,
                StatusCode::SERVICE_UNAVAILABLE,
                "queue_full",
                format!(
                    "the queue is full ({} waiting); retry later",
                    app.limits.queue
                ),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            return error(
                &app,
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the service is shutting down",
            );
        }
    }
    app.metrics
        .queued
        .set(app.jobs.max_capacity() as i64 - app.jobs.capacity() as i64);
    let left = app.limits.timeout.saturating_sub(arrived.elapsed());
    match tokio::time::timeout(left + Duration::from_millis(200), answer).await {
        Ok(Ok(Ok(png))) => {
            let seconds = format!("{:.3}", arrived.elapsed().as_secs_f64());
            let mut response =
                (StatusCode::OK, [(header::CONTENT_TYPE, "image/png")], png).into_response();
            if let Ok(v) = HeaderValue::from_str(&seconds) {
                response.headers_mut().insert("x-mrsampler-seconds", v);
            }
            response
        }
        // The scheduler counts these: a timeout it answered, a dropped wait as a cancellation.
        Ok(Ok(Err(Failure::Timeout))) | Err(_) => json_error(
            StatusCode::GATEWAY_TIMEOUT,
            format!("not restored within {:?}", app.limits.timeout),
        ),
        Ok(Ok(Err(Failure::Internal(message)))) => {
            json_error(StatusCode::INTERNAL_SERVER_ERROR, message)
        }
        Ok(Err(_)) => error(
            &app,
            StatusCode::INTERNAL_SERVER_ERROR,
            "error",
            "the scheduler dropped the request",
        ),
    }
}

/// A request's sampler, NFE and seed.
struct Options {
    spec: SamplerSpec,
    nfe: usize,
    seed: u64,
}

fn options(app: &App, query: &HashMap<String, String>) -> std::result::Result<Options, String> {
    let spec = match query.get("sampler") {
        Some(text) => {
            let spec = parse_spec(text).map_err(|e| format!("sampler: {e}"))?;
            if let GridSpec::File(_) = spec.grid {
                return Err("sampler: grid files are the server's to choose; give a grid name or a list of times".into());
            }
            spec
        }
        None => app.limits.sampler.clone(),
    };
    let nfe = match query.get("nfe") {
        Some(n) => n.parse::<usize>().map_err(|e| format!("nfe `{n}`: {e}"))?,
        None => match &spec.grid {
            GridSpec::Times(times) => times.len().saturating_sub(1),
            _ => app.limits.nfe,
        },
    };
    if nfe == 0 || nfe > app.limits.max_nfe {
        return Err(format!(
            "nfe {nfe}: give 1 to {} network evaluations",
            app.limits.max_nfe
        ));
    }
    let seed = match query.get("seed") {
        Some(s) => s.parse::<u64>().map_err(|e| format!("seed `{s}`: {e}"))?,
        None => 0,
    };
    let name = query.get("name").map_or("image.png", String::as_str);
    // The sampler must build (a bad order or grid for this NFE is the client's error).
    spec.for_images(&app.schedule, nfe)
        .map_err(|e| format!("sampler {spec} at nfe {nfe}: {e}"))?;
    Ok(Options {
        spec,
        nfe,
        seed: image_seed(seed, name),
    })
}

async fn health(State(app): State<Arc<App>>) -> Response {
    let stopping = app.stopping.load(Ordering::SeqCst);
    let body = serde_json::json!({
        "status": if stopping { "shutting down" } else { "ok" },
        "running": app.metrics.running.get(),
        "queued": app.jobs.max_capacity() - app.jobs.capacity(),
    })
    .to_string();
    let status = if stopping {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    app.metrics
        .queued
        .set((app.jobs.max_capacity() - app.jobs.capacity()) as i64);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.text(),
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}
