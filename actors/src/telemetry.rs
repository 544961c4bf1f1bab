//! Logs, traces and metrics set-up shared by both binaries.
//!
//! - **Logs**: JSON lines (or pretty text, `LOG_FORMAT`) filtered by `RUST_LOG`; every line
//!   carries `component` and, inside a traced operation, `trace_id` and `span_id` plus the
//!   fields of the spans it happened in (`transaction_id`, `account_id`, ...). See [`logs`].
//! - **Traces**: every `tracing` span is an OpenTelemetry span. Trace ids exist whether or
//!   not they are exported, so logs, AMQP headers and alert payloads always carry them;
//!   with `OTEL_EXPORTER_OTLP_ENDPOINT` set, sampled traces are exported over OTLP (gRPC or
//!   HTTP/protobuf). W3C trace context crosses process boundaries in HTTP and AMQP headers
//!   ([`propagation`]).
//! - **Metrics**: one process-wide Prometheus recorder ([`metrics`]), described and
//!   pre-registered from [`catalog`].

pub mod catalog;
pub mod logs;
pub mod propagation;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{
    Resource,
    trace::{Sampler, SdkTracerProvider},
};
use tracing_subscriber::{EnvFilter, fmt, fmt::MakeWriter, layer::SubscriberExt, util::SubscriberInitExt};

use crate::settings::{LogFormat, OtlpProtocol, TracingSettings};

/// Keeps the trace pipeline alive; dropping it flushes the spans still buffered and stops
/// the exporter (hold it in `main` until the process is done).
#[must_use = "dropping the guard stops trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is buffered now (tests call it before reading what a collector received).
    pub fn flush(&self) {
        if let Some(provider) = &self.provider
            && let Err(error) = provider.force_flush()
        {
            tracing::warn!(component = "telemetry", %error, "flushing spans failed");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("telemetry: stopping the trace exporter failed: {error}");
        }
    }
}

/// Installs the global subscriber writing logs to stdout. Calling it again is harmless
/// (later calls change nothing), which keeps tests simple.
pub fn init(component: &'static str, format: LogFormat, tracing: &TracingSettings) -> Telemetry {
    init_with_writer(component, format, tracing, std::io::stdout)
}

/// [`init`], writing log lines to `writer` (tests capture them).
pub fn init_with_writer<W>(
    component: &'static str,
    format: LogFormat,
    tracing: &TracingSettings,
    writer: W,
) -> Telemetry
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (provider, export_error) = match tracer_provider(component, tracing) {
        Ok(provider) => (provider, None),
        // A collector we cannot set up must not stop payments: keep ids, skip export.
        Err(error) => (base_provider(component, tracing).build(), Some(error)),
    };
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service_name(component)))
        .with_tracked_inactivity(false)
        .with_threads(false);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // ractor wraps each actor's whole life in an INFO `Actor` span. Nobody reads it (work on
    // a job runs in the job's span, which ractor carries across messages), and with one
    // actor per account it is 100,000 spans kept open in the registry: refused globally.
    let no_actor_spans = tracing_subscriber::filter::filter_fn(|meta| {
        !(meta.is_span() && meta.name() == "Actor" && meta.target().starts_with("ractor"))
    });
    let registry = tracing_subscriber::registry().with(filter).with(no_actor_spans).with(otel);
    let result = match format {
        LogFormat::Json => {
            let lines = logs::JsonLines::new(component);
            registry
                .with(lines.probe())
                .with(
                    fmt::layer()
                        .fmt_fields(fmt::format::JsonFields::new())
                        .event_format(lines)
                        .with_writer(writer),
                )
                .try_init()
        }
        LogFormat::Pretty => registry.with(fmt::layer().with_writer(writer)).try_init(),
    };
    if result.is_err() {
        // Someone (an earlier call) owns the global subscriber: ours would see no spans.
        let _ = provider.shutdown();
        return Telemetry { provider: None };
    }
    match (&tracing.otlp_endpoint, export_error) {
        (_, Some(error)) => {
            tracing::error!(component, %error, "trace export could not be set up; traces stay local")
        }
        (Some(endpoint), None) => tracing::info!(
            component,
            endpoint,
            protocol = ?tracing.otlp_protocol,
            sample_ratio = tracing.sample_ratio,
            "telemetry initialised; exporting traces"
        ),
        (None, None) => tracing::info!(component, "telemetry initialised; trace export off"),
    }
    Telemetry { provider: Some(provider) }
}

fn service_name(component: &str) -> String {
    format!("fraudsense-{component}")
}

/// Sampler and resource, without any exporter.
fn base_provider(
    component: &str,
    tracing: &TracingSettings,
) -> opentelemetry_sdk::trace::TracerProviderBuilder {
    let sampler = match tracing.otlp_endpoint {
        // Nothing leaves the process: keep every id, record nothing beyond that.
        None => Sampler::AlwaysOn,
        Some(_) => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(tracing.sample_ratio))),
    };
    SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_resource(Resource::builder().with_service_name(service_name(component)).build())
}

/// The provider, exporting over OTLP when an endpoint is configured.
fn tracer_provider(
    component: &str,
    tracing: &TracingSettings,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::{SpanExporter, WithExportConfig};
    let builder = base_provider(component, tracing);
    let Some(endpoint) = &tracing.otlp_endpoint else { return Ok(builder.build()) };
    let timeout = std::time::Duration::from_secs(5);
    Ok(match tracing.otlp_protocol {
        OtlpProtocol::Grpc => {
            // tonic needs the tokio runtime: batch on it rather than on a bare thread.
            let exporter =
                SpanExporter::builder().with_tonic().with_endpoint(endpoint).with_timeout(timeout).build()?;
            let batches =
                opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                    exporter,
                    opentelemetry_sdk::runtime::Tokio,
                )
                .build();
            builder.with_span_processor(batches).build()
        }
        OtlpProtocol::HttpProtobuf => {
            // The blocking HTTP client runs on the batch processor's own thread.
            let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
            let exporter =
                SpanExporter::builder().with_http().with_endpoint(url).with_timeout(timeout).build()?;
            builder.with_batch_exporter(exporter).build()
        }
    })
}

/// Buckets for latency histograms, in seconds: 0.5 ms … 10 s.
const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// What `/metrics` serves in either binary: the process gauges, read now, then everything
/// recorded.
pub fn render_metrics() -> String {
    if let Some(bytes) = resident_bytes() {
        metrics::gauge!("process_resident_memory_bytes").set(bytes as f64);
    }
    metrics().render()
}

/// Resident memory of this process (`VmRSS` in `/proc/self/status`); `None` without procfs.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The process-wide Prometheus recorder, installed on first use. Both binaries render it
/// on `/metrics`; several apps in one test process share it.
pub fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed, in which case ours just stays empty.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}
