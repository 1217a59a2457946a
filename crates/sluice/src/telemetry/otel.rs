//! OpenTelemetry traces over OTLP (HTTP/protobuf), off unless `OTEL_EXPORTER_OTLP_ENDPOINT`
//! or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set.
//!
//! A request's spans are built when it settles, from timestamps taken along the way (no span
//! objects live on the request path): a server span for the request (child of the client's
//! W3C `traceparent` when it sent one), one span per pipeline step, and one client span per
//! upstream attempt, whose id goes upstream in its own `traceparent`. Attributes follow the
//! GenAI semantic conventions (`gen_ai.system`, `gen_ai.request.model`, ...).

use crate::store::UsageRecord;
use bytes::Bytes;
use http::HeaderValue;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

thread_local! {
    /// Ids the next span built on this thread must take (see [`PresetIds`]).
    static PRESET: std::cell::Cell<(Option<TraceId>, Option<SpanId>)> =
        const { std::cell::Cell::new((None, None)) };
}

/// Random ids, except where a span's id was fixed beforehand: a request's trace id and the
/// attempt span ids already sent upstream in `traceparent`.
#[derive(Debug)]
struct PresetIds;

impl opentelemetry_sdk::trace::IdGenerator for PresetIds {
    fn new_trace_id(&self) -> TraceId {
        PRESET
            .with(|p| p.get().0)
            .unwrap_or_else(|| TraceId::from_bytes(rand::random::<[u8; 16]>()))
    }
    fn new_span_id(&self) -> SpanId {
        PRESET.with(|p| p.get().1).unwrap_or_else(random_span_id)
    }
}

/// Builds and ends one span with the given ids, times and status.
fn emit(
    tracer: &SdkTracer,
    builder: opentelemetry::trace::SpanBuilder,
    cx: &Context,
    ids: (Option<TraceId>, Option<SpanId>),
    end: SystemTime,
    status: Status,
) {
    use opentelemetry::trace::Span;
    PRESET.with(|p| p.set(ids));
    let mut span = tracer.build_with_context(builder, cx);
    PRESET.with(|p| p.set((None, None)));
    span.set_status(status);
    span.end_with_timestamp(end);
}

struct Otel {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

static OTEL: OnceLock<Option<Otel>> = OnceLock::new();

tokio::task_local! {
    /// The trace of the request being dispatched, for the upstream-attempt hook.
    static CURRENT: Arc<RequestTrace>;
}

/// Sends the exporter's requests on the gateway's tokio runtime (the SDK's batch processor
/// runs on its own thread, outside any runtime).
#[derive(Debug)]
struct RuntimeClient {
    handle: tokio::runtime::Handle,
    client: crate::providers::openai_compat::HttpsClient,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for RuntimeClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        let task = self.handle.spawn(async move {
            use http_body_util::BodyExt;
            let (parts, body) = request.into_parts();
            let req = http::Request::from_parts(parts, http_body_util::Full::new(body));
            let resp =
                tokio::time::timeout(std::time::Duration::from_secs(10), client.request(req))
                    .await
                    .map_err(|_| "OTLP export timed out".to_string())?
                    .map_err(|e| e.to_string())?;
            let (parts, body) = resp.into_parts();
            let body = http_body_util::Limited::new(body, 4 << 20)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>(http::Response::from_parts(parts, body))
        });
        match task.await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(e.to_string().into()),
        }
    }
}

/// Starts the exporter when an OTLP endpoint is configured in the environment.
pub fn init() {
    OTEL.get_or_init(|| {
        let configured = [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()));
        if !configured {
            return None;
        }
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let client = RuntimeClient {
            handle,
            client: crate::providers::openai_compat::basic_client(),
        };
        use opentelemetry_otlp::WithHttpConfig;
        let exporter = match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .build()
        {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("OpenTelemetry export disabled: {e}");
                return None;
            }
        };
        let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "sluice".into());
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_id_generator(PresetIds)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service)
                    .build(),
            )
            .build();
        let tracer = provider.tracer("sluice");
        tracing::info!("OpenTelemetry traces: exporting over OTLP/HTTP");
        Some(Otel { provider, tracer })
    });
}

/// Exports what is still buffered (graceful shutdown).
pub fn shutdown() {
    if let Some(Some(o)) = OTEL.get() {
        if let Err(e) = o.provider.shutdown() {
            tracing::warn!("OpenTelemetry shutdown: {e}");
        }
    }
}

fn tracer() -> Option<&'static SdkTracer> {
    OTEL.get().and_then(Option::as_ref).map(|o| &o.tracer)
}

/// One upstream attempt, as seen by the transport.
struct AttemptSpan {
    span_id: SpanId,
    provider: Arc<str>,
    target: String,
    start: SystemTime,
    end: Option<SystemTime>,
    status: Option<u16>,
    error: Option<String>,
}

/// What a request's spans are built from.
pub struct RequestTrace {
    trace_id: TraceId,
    span_id: SpanId,
    /// The client's span, from its `traceparent`.
    parent: Option<SpanContext>,
    start: SystemTime,
    /// Pipeline steps: (name, end time); each starts where the previous one ended.
    marks: Mutex<Vec<(&'static str, SystemTime)>>,
    attempts: Mutex<Vec<AttemptSpan>>,
}

/// Parses a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
fn parse_traceparent(v: &str) -> Option<SpanContext> {
    let mut parts = v.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2
        || version == "ff"
        || trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    let trace_id = TraceId::from_hex(trace)
        .ok()
        .filter(|t| *t != TraceId::INVALID)?;
    let span_id = SpanId::from_hex(span)
        .ok()
        .filter(|s| *s != SpanId::INVALID)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    ))
}

fn random_span_id() -> SpanId {
    loop {
        let id = SpanId::from_bytes(rand::random::<[u8; 8]>());
        if id != SpanId::INVALID {
            return id;
        }
    }
}

impl RequestTrace {
    /// A trace for this request, or `None` when tracing is off (or the client's
    /// `traceparent` says not sampled).
    pub fn start(headers: &http::HeaderMap) -> Option<Arc<RequestTrace>> {
        tracer()?;
        let parent = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        if parent.as_ref().is_some_and(|p| !p.is_sampled()) {
            return None;
        }
        let trace_id = parent.as_ref().map_or_else(
            || TraceId::from_bytes(rand::random::<[u8; 16]>()),
            SpanContext::trace_id,
        );
        Some(Arc::new(RequestTrace {
            trace_id,
            span_id: random_span_id(),
            parent,
            start: SystemTime::now(),
            marks: Mutex::new(Vec::with_capacity(8)),
            attempts: Mutex::new(Vec::new()),
        }))
    }

    /// Ends the pipeline step `name` now.
    pub fn mark(&self, name: &'static str) {
        if let Ok(mut m) = self.marks.lock() {
            m.push((name, SystemTime::now()));
        }
    }

    /// Runs `fut` with this trace visible to the upstream-attempt hook.
    pub async fn scope<F: std::future::Future>(self: Arc<Self>, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }

    /// Builds and hands over every span of the request.
    pub fn finish(&self, rec: &UsageRecord) {
        let Some(tracer) = tracer() else { return };
        let end = SystemTime::now();
        let parent_cx = match &self.parent {
            Some(p) => Context::new().with_remote_span_context(p.clone()),
            None => Context::new(),
        };
        let operation = if rec.surface.ends_with("embeddings") {
            "embeddings"
        } else {
            "chat"
        };
        let mut attrs = vec![
            KeyValue::new("gen_ai.operation.name", operation),
            KeyValue::new("gen_ai.request.model", rec.requested_model.clone()),
            KeyValue::new("sluice.request_id", rec.request_id.clone()),
            KeyValue::new("sluice.surface", rec.surface),
            KeyValue::new("http.response.status_code", i64::from(rec.status)),
            KeyValue::new("sluice.attempts", i64::from(rec.attempts)),
            KeyValue::new("sluice.streamed", rec.streamed),
        ];
        if let Some(p) = &rec.provider {
            attrs.push(KeyValue::new("gen_ai.system", p.to_string()));
            attrs.push(KeyValue::new("gen_ai.provider.name", p.to_string()));
        }
        if let Some(m) = &rec.deployment_model {
            attrs.push(KeyValue::new("gen_ai.response.model", m.to_string()));
        }
        for (k, v) in [
            ("gen_ai.usage.input_tokens", rec.input_tokens),
            ("gen_ai.usage.output_tokens", rec.output_tokens),
            ("gen_ai.usage.cached_input_tokens", rec.cached_input_tokens),
            ("gen_ai.usage.reasoning_tokens", rec.reasoning_tokens),
            ("sluice.ttft_us", rec.ttft_us),
            ("sluice.overhead_us", rec.overhead_us),
        ] {
            if let Some(v) = v {
                attrs.push(KeyValue::new(k, i64::try_from(v).unwrap_or(i64::MAX)));
            }
        }
        if let Some(c) = rec.cost_micro_usd {
            attrs.push(KeyValue::new("sluice.cost_micro_usd", c));
        }
        if let Some(t) = &rec.team {
            attrs.push(KeyValue::new("sluice.team", t.to_string()));
        }
        if let Some(r) = rec.route_reason {
            attrs.push(KeyValue::new("sluice.route_reason", r));
        }
        if let Some(r) = rec.fallback_reason {
            attrs.push(KeyValue::new("sluice.fallback_reason", r));
        }
        let status = match rec.error_class {
            Some(class) => {
                attrs.push(KeyValue::new("error.type", class));
                Status::error(class)
            }
            None => Status::Ok,
        };
        let root = tracer
            .span_builder(format!("{operation} {}", rec.requested_model))
            .with_kind(SpanKind::Server)
            .with_start_time(self.start)
            .with_attributes(attrs);
        let ids = (Some(self.trace_id), Some(self.span_id));
        emit(tracer, root, &parent_cx, ids, end, status);

        let me = SpanContext::new(
            self.trace_id,
            self.span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(me);
        let mut from = self.start;
        if let Ok(marks) = self.marks.lock() {
            for (name, at) in marks.iter() {
                let b = tracer
                    .span_builder(*name)
                    .with_kind(SpanKind::Internal)
                    .with_start_time(from);
                emit(tracer, b, &cx, (None, None), *at, Status::Unset);
                from = *at;
            }
        }
        // The answer going out (the whole stream, for streams), then the books.
        let b = tracer.span_builder("respond").with_start_time(from);
        emit(tracer, b, &cx, (None, None), end, Status::Unset);

        if let Ok(attempts) = self.attempts.lock() {
            for (i, a) in attempts.iter().enumerate() {
                let mut attrs = vec![
                    KeyValue::new("gen_ai.system", a.provider.to_string()),
                    KeyValue::new("gen_ai.request.model", rec.requested_model.clone()),
                    KeyValue::new("sluice.attempt", i64::try_from(i + 1).unwrap_or(i64::MAX)),
                    KeyValue::new("url.full", a.target.clone()),
                ];
                if let Some(s) = a.status {
                    attrs.push(KeyValue::new("http.response.status_code", i64::from(s)));
                }
                let failed = a.error.is_some() || a.status.is_some_and(|s| s >= 400);
                if let Some(e) = &a.error {
                    attrs.push(KeyValue::new("error.type", e.clone()));
                }
                let b = tracer
                    .span_builder(format!("upstream {}", a.provider))
                    .with_kind(SpanKind::Client)
                    .with_start_time(a.start)
                    .with_attributes(attrs);
                let status = if failed {
                    Status::error("upstream failed")
                } else {
                    Status::Ok
                };
                let end = a.end.unwrap_or(end);
                emit(tracer, b, &cx, (None, Some(a.span_id)), end, status);
            }
        }
    }
}

/// One upstream attempt in flight; `end` records how it went.
pub struct AttemptGuard {
    trace: Arc<RequestTrace>,
    index: usize,
}

/// Called by the transport before sending: a `traceparent` for the upstream (this attempt's
/// span as parent) and a guard to close the attempt, when the request is traced.
pub fn upstream_attempt(provider: &Arc<str>, target: &str) -> Option<(HeaderValue, AttemptGuard)> {
    let trace = CURRENT.try_with(Arc::clone).ok()?;
    let span_id = random_span_id();
    let header = HeaderValue::from_str(&format!("00-{}-{}-01", trace.trace_id, span_id)).ok()?;
    let index = {
        let mut a = trace.attempts.lock().ok()?;
        a.push(AttemptSpan {
            span_id,
            provider: provider.clone(),
            target: target.to_string(),
            start: SystemTime::now(),
            end: None,
            status: None,
            error: None,
        });
        a.len() - 1
    };
    Some((header, AttemptGuard { trace, index }))
}

impl AttemptGuard {
    /// The upstream answered with `status` (headers received) or failed with `error`.
    pub fn end(self, status: Option<u16>, error: Option<String>) {
        if let Ok(mut a) = self.trace.attempts.lock() {
            if let Some(s) = a.get_mut(self.index) {
                s.end = Some(SystemTime::now());
                s.status = status;
                s.error = error;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parses_and_rejects_junk() {
        let p = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(
            p.map(|c| c.trace_id().to_string()),
            Some("4bf92f3577b34da6a3ce929d0e0e4736".to_string())
        );
        assert!(
            parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert!(parse_traceparent("garbage").is_none());
        assert!(
            parse_traceparent("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_none()
        );
    }
}
