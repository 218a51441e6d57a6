//! The generator's HTTP client for the measured requests: hyper's pooled HTTP/1.1 client with bodies built once
//! per request and the URI parsed once per run. The generator shares the two cores with the gateway it measures,
//! so every cycle it spends is taken from the server (reqwest's extra layers cost it a third more CPU per call).

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A keep-alive client for one gateway, with its bearer token.
#[derive(Clone)]
pub struct Lean {
    client: Client<HttpConnector, Full<Bytes>>,
    bearer: Option<HeaderValue>,
}

impl Lean {
    pub fn new(token: Option<&str>, connections: usize) -> anyhow::Result<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(connections).build(connector);
        let bearer = token.map(|t| HeaderValue::from_str(&format!("Bearer {t}"))).transpose()?;
        Ok(Self { client, bearer })
    }

    /// Sends one request; the answer's status and body.
    pub async fn send(
        &self,
        method: Method,
        uri: &Uri,
        extra: Option<(&'static str, HeaderValue)>,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(u16, Bytes)> {
        let mut request = Request::builder().method(method).uri(uri.clone());
        if let Some(bearer) = &self.bearer {
            request = request.header(AUTHORIZATION, bearer.clone());
        }
        if let Some((name, value)) = extra {
            request = request.header(name, value);
        }
        let body = match body {
            Some(bytes) => {
                request = request.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Full::new(Bytes::from(bytes))
            }
            None => Full::new(Bytes::new()),
        };
        let response = self.client.request(request.body(body)?).await?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }
}
