//! Log set-up shared by both binaries: one JSON object per line for machines, a readable format on a terminal.
//!
//! Request lines (target `flowork::request`) always carry the same fields — `trace_id, user_id, engine_id,
//! job_id, ip, route, status, latency_ms` — with `null` for the ones a request does not have, so log queries
//! never need to guess whether a field exists.

use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::telemetry::Telemetry;

/// The target of request lines.
pub const REQUEST_TARGET: &str = "flowork::request";

/// The fields every request line has.
pub const REQUEST_FIELDS: [&str; 8] =
    ["trace_id", "user_id", "engine_id", "job_id", "ip", "route", "status", "latency_ms"];

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            other => Err(format!("unknown log format {other:?}: use json or pretty")),
        }
    }
}

/// Installs the global subscriber; `RUST_LOG` overrides the default `info` level. Logs go to stderr so
/// that commands printing results (tokens, JSON) keep stdout clean. When the standard OTLP variables are set
/// (see `telemetry`), spans are also exported as traces; the returned handle flushes them at exit.
pub fn init(format: Option<LogFormat>, service: &str) -> Option<Telemetry> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let format = format.unwrap_or(if std::io::stderr().is_terminal() { LogFormat::Pretty } else { LogFormat::Json });
    let (json, pretty) = match format {
        LogFormat::Json => {
            (Some(tracing_subscriber::fmt::layer().event_format(JsonLines).with_writer(std::io::stderr)), None)
        }
        LogFormat::Pretty => (None, Some(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))),
    };
    let (traces, telemetry) = if crate::telemetry::wanted() {
        match crate::telemetry::layer(service) {
            Ok((layer, telemetry)) => (Some(layer), Some(telemetry)),
            Err(error) => {
                eprintln!("traces are off: {error}");
                (None, None)
            }
        }
    } else {
        (None, None)
    };
    let _ = tracing_subscriber::registry().with(traces).with(filter).with(json).with(pretty).try_init();
    telemetry
}

/// One JSON object per event: `timestamp`, `level`, `target`, `message` and the event's fields.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        writeln!(writer, "{}", event_json(event))
    }
}

/// The JSON object of one event.
pub fn event_json(event: &Event<'_>) -> Value {
    let metadata = event.metadata();
    let mut map = Map::new();
    map.insert("timestamp".into(), crate::timefmt::format_ms(crate::clock::system_now_ms()).into());
    map.insert("level".into(), metadata.level().as_str().into());
    map.insert("target".into(), metadata.target().into());
    event.record(&mut JsonVisitor(&mut map));
    if metadata.target() == REQUEST_TARGET {
        for field in REQUEST_FIELDS {
            map.entry(field).or_insert(Value::Null);
        }
    }
    Value::Object(map)
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}
