//! W3C trace context across process boundaries: HTTP request headers into the api, AMQP
//! message headers from the api to the worker, and the `traceparent` stored with each
//! transaction so later work (the alert publisher, an analyst's question) continues or
//! names the same trace.

use lapin::types::{AMQPValue, FieldTable};
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TraceContextExt,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header names (`traceparent`, `tracestate`).
pub const TRACEPARENT: &str = "traceparent";

/// Writes `span`'s context into AMQP message headers (`traceparent`, `tracestate`).
/// Nothing is written when tracing is not set up.
pub fn inject_amqp(span: &tracing::Span, headers: &mut FieldTable) {
    struct Headers<'a>(&'a mut FieldTable);
    impl Injector for Headers<'_> {
        fn set(&mut self, key: &str, value: String) {
            self.0.insert(key.into(), AMQPValue::LongString(value.into()));
        }
    }
    TraceContextPropagator::new().inject_context(&span.context(), &mut Headers(headers));
}

/// The remote context an AMQP message carries (empty if it carries none).
pub fn extract_amqp(headers: Option<&FieldTable>) -> Context {
    extract(|key| match headers?.inner().get(key)? {
        AMQPValue::LongString(value) => Some(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        AMQPValue::ShortString(value) => Some(value.as_str().to_owned()),
        _ => None,
    })
}

/// The remote context found through `get` (a header lookup by lower-case name).
pub fn extract(get: impl Fn(&str) -> Option<String>) -> Context {
    // `Extractor::get` must return a borrow, so read the two headers first.
    let values: Vec<(String, String)> = ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|key| get(key).map(|value| (key.to_owned(), value)))
        .collect();
    struct Owned(Vec<(String, String)>);
    impl Extractor for Owned {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
        }

        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|(k, _)| k.as_str()).collect()
        }
    }
    TraceContextPropagator::new().extract(&Owned(values))
}

/// `span`'s `traceparent` header value, if tracing is set up.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    struct Parent(Option<String>);
    impl Injector for Parent {
        fn set(&mut self, key: &str, value: String) {
            if key == TRACEPARENT {
                self.0 = Some(value);
            }
        }
    }
    let mut parent = Parent(None);
    TraceContextPropagator::new().inject_context(&span.context(), &mut parent);
    parent.0
}

/// The context a stored `traceparent` names (empty if it is not one).
pub fn context_of(traceparent: &str) -> Context {
    extract(|key| (key == TRACEPARENT).then(|| traceparent.to_owned()))
}

/// The trace id (32 hex digits) of a `traceparent` value, if it is a valid one.
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    let cx = context_of(traceparent);
    let span = cx.span();
    let ids = span.span_context();
    ids.is_valid().then(|| ids.trace_id().to_string())
}

/// The trace id `span` belongs to, if tracing is set up.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let otel = cx.span();
    let ids = otel.span_context();
    ids.is_valid().then(|| ids.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_round_trips_through_amqp_headers() {
        let cx = context_of(PARENT);
        assert!(cx.span().span_context().is_remote());
        assert_eq!(trace_id_of(PARENT).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        let mut headers = FieldTable::default();
        headers.insert(TRACEPARENT.into(), AMQPValue::LongString(PARENT.into()));
        let back = extract_amqp(Some(&headers));
        assert_eq!(back.span().span_context().trace_id(), cx.span().span_context().trace_id());
        assert_eq!(back.span().span_context().span_id(), cx.span().span_context().span_id());
    }

    #[test]
    fn garbage_and_absence_give_an_empty_context() {
        for bad in ["", "00-zz-00f067aa0ba902b7-01", "01-4bf92f3577b34da6a3ce929d0e0e4736"] {
            assert_eq!(trace_id_of(bad), None, "{bad}");
        }
        assert!(!extract_amqp(None).span().span_context().is_valid());
    }

    #[test]
    fn without_a_subscriber_nothing_is_injected() {
        let mut headers = FieldTable::default();
        inject_amqp(&tracing::Span::none(), &mut headers);
        assert!(headers.inner().is_empty());
        assert_eq!(traceparent(&tracing::Span::none()), None);
    }
}
