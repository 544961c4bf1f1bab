//! Logging set-up shared by both binaries.

use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::settings::LogFormat;

/// Installs the global subscriber: JSON lines (or pretty text) filtered by `RUST_LOG`.
/// `component` is attached to every line so mixed logs stay attributable.
/// Calling it twice is harmless (the second call is ignored), which keeps tests simple.
pub fn init(component: &'static str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(false))
            .try_init(),
        LogFormat::Pretty => registry.with(fmt::layer()).try_init(),
    };
    if result.is_ok() {
        tracing::info!(component, "telemetry initialised");
    }
}
