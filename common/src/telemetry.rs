//! OpenTelemetry traces over OTLP/HTTP (protobuf), switched on by the standard `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (and `OTEL_SERVICE_NAME`) variables; without them nothing is set up and spans cost only `tracing`'s own
//! bookkeeping.
//!
//! The exporter's batch processor runs on its own thread; it sends through the process's tokio runtime with the
//! workspace's one reqwest client, so no second HTTP stack is linked.

use std::fmt;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Runs the exporter's requests on the application's tokio runtime.
struct RuntimeHttpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl fmt::Debug for RuntimeHttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RuntimeHttpClient")
    }
}

#[async_trait::async_trait]
impl HttpClient for RuntimeHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let (parts, body) = request.into_parts();
        let send = async move {
            let mut builder = client.request(parts.method, parts.uri.to_string()).body(body.to_vec());
            for (name, value) in &parts.headers {
                builder = builder.header(name, value);
            }
            let response = builder.timeout(std::time::Duration::from_secs(10)).send().await?;
            let status = response.status();
            let bytes = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, bytes))
        };
        let (status, bytes) = self.runtime.spawn(send).await??;
        let mut answer = Response::new(Bytes::from(bytes.to_vec()));
        *answer.status_mut() = http_status(status.as_u16())?;
        Ok(answer)
    }
}

fn http_status(code: u16) -> Result<http::StatusCode, HttpError> {
    Ok(http::StatusCode::from_u16(code)?)
}

/// The installed exporter; flushes on `shutdown`.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Sends what is still buffered (call before the process exits).
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "could not flush traces");
        }
    }
}

/// Whether the standard variables ask for trace export.
pub fn wanted() -> bool {
    std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some_and(|v| !v.is_empty())
        || std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some_and(|v| !v.is_empty())
}

/// Builds the OTLP exporter and the `tracing` layer that feeds it (must run inside the tokio runtime).
pub fn layer<S>(
    default_service: &str,
) -> Result<(tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>, Telemetry), String>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let runtime = tokio::runtime::Handle::try_current().map_err(|e| format!("traces need the tokio runtime: {e}"))?;
    let client = RuntimeHttpClient { client: reqwest::Client::new(), runtime };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_http_client(client)
        .build()
        .map_err(|e| format!("OTLP exporter: {e}"))?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| default_service.to_string());
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    let tracer = provider.tracer("flowork");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok((tracing_opentelemetry::layer().with_tracer(tracer), Telemetry { provider }))
}

/// Makes `span` a child of the W3C `traceparent` (if it is valid), so one trace spans client, gateway and
/// engine.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else { return };
    let mut carrier = std::collections::HashMap::new();
    carrier.insert("traceparent".to_string(), traceparent.to_string());
    let context = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(context);
}
