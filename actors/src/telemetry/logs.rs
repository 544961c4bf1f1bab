//! The JSON log line: one object per event, flat, so log shippers index every field.
//!
//! ```json
//! {"timestamp":"2026-11-22T06:10:00.123456Z","level":"INFO","component":"alert",
//!  "message":"alert raised","transaction_id":"tx-1","account_id":"acct-42","alert_id":7,
//!  "span":"process_transaction","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736",
//!  "span_id":"00f067aa0ba902b7","target":"fraudsense_actors::alert"}
//! ```
//!
//! Fields of the spans the event happened in are merged in (outermost first, so the nearest
//! span wins, and the event's own fields win over all), which is how a line deep in an
//! actor still names its `transaction_id` and `account_id`. `component` falls back to the
//! binary's name. Nothing here logs payloads: what reaches a log line is what code passes
//! as a field, and the code passes identifiers, never card data or personal details.

use std::{
    fmt,
    sync::{Arc, OnceLock},
};

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::{Dispatch, Event, Subscriber, dispatcher::WeakDispatch, field::Field};
use tracing_subscriber::{
    Layer,
    fmt::{
        FmtContext, FormatEvent, FormattedFields,
        format::{JsonFields, Writer},
    },
    registry::LookupSpan,
};

/// Formats events as single-line JSON objects (see the module doc).
#[derive(Debug, Clone)]
pub struct JsonLines {
    component: &'static str,
    /// The subscriber this formatter serves, to ask its OpenTelemetry layer for span ids
    /// (set by [`DispatchProbe`] when the subscriber is built).
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl JsonLines {
    /// Lines default to `component` when no field names one.
    pub fn new(component: &'static str) -> Self {
        Self { component, dispatch: Arc::default() }
    }

    /// The layer that lets this formatter find trace ids: add it to the same subscriber.
    pub fn probe(&self) -> DispatchProbe {
        DispatchProbe(self.dispatch.clone())
    }

    /// The OpenTelemetry trace and span ids of the span `id`.
    fn ids(&self, id: &tracing::span::Id) -> Option<(String, String)> {
        let dispatch = self.dispatch.get()?.upgrade()?;
        let cx = tracing_opentelemetry::get_otel_context(id, &dispatch)?;
        let span = cx.span();
        let ids = span.span_context();
        ids.is_valid().then(|| (ids.trace_id().to_string(), ids.span_id().to_string()))
    }
}

/// Captures the subscriber it is part of for [`JsonLines`] (a formatter is not told).
#[derive(Debug, Clone)]
pub struct DispatchProbe(Arc<OnceLock<WeakDispatch>>);

impl<S: Subscriber> Layer<S> for DispatchProbe {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.0.set(subscriber.downgrade());
    }
}

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true).into(),
        );
        line.insert("level".into(), meta.level().as_str().into());
        if let Some(scope) = ctx.event_scope() {
            let mut innermost = None;
            let mut leaf = None;
            for span in scope.from_root() {
                leaf = Some(span.id());
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<JsonFields>>()
                    && let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields)
                {
                    line.extend(fields);
                }
                innermost = Some(span.name());
            }
            if let Some(name) = innermost {
                line.insert("span".into(), name.into());
            }
            if let Some((trace_id, span_id)) = leaf.and_then(|id| self.ids(&id)) {
                line.insert("trace_id".into(), trace_id.into());
                line.insert("span_id".into(), span_id.into());
            }
        }
        event.record(&mut Fields(&mut line));
        line.entry("component").or_insert_with(|| self.component.into());
        line.insert("target".into(), meta.target().into());
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Collects an event's fields into the line.
struct Fields<'a>(&'a mut Map<String, Value>);

impl tracing::field::Visit for Fields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};

    use super::*;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(data);
            Ok(data.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_is_one_flat_object_with_span_fields_component_and_trace_ids() {
        use opentelemetry::trace::TracerProvider as _;
        let buffer = Buffer::default();
        let out = buffer.clone();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let lines = JsonLines::new("worker");
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(lines.probe())
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(JsonFields::new())
                    .event_format(lines)
                    .with_writer(move || out.clone()),
            );
        let _guard = subscriber.set_default();
        tracing::info!("outside any span");
        let outer =
            tracing::info_span!("process_transaction", transaction_id = "tx-1", account_id = "acct-9");
        outer.in_scope(|| {
            let inner = tracing::info_span!("score", component = "scorer");
            inner.in_scope(|| tracing::warn!(score = 0.93, degraded = false, "scored"));
        });
        let text =
            String::from_utf8(buffer.0.lock().map(|b| b.clone()).unwrap_or_default()).unwrap_or_default();
        let lines: Vec<Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap_or(Value::Null)).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["component"], "worker");
        assert!(lines[0].get("trace_id").is_none(), "no trace outside a span");
        let scored = &lines[1];
        assert_eq!(scored["message"], "scored");
        assert_eq!(scored["level"], "WARN");
        assert_eq!((&scored["transaction_id"], &scored["account_id"]), (&"tx-1".into(), &"acct-9".into()));
        assert_eq!((&scored["component"], &scored["span"]), (&"scorer".into(), &"score".into()));
        assert_eq!((&scored["score"], &scored["degraded"]), (&0.93.into(), &false.into()));
        let trace_id = scored["trace_id"].as_str().unwrap_or_default();
        assert_eq!(trace_id.len(), 32, "{scored}");
        assert_eq!(scored["span_id"].as_str().map(str::len), Some(16));
        assert_eq!(trace_id, outer.context().span().span_context().trace_id().to_string());
    }
}
