//! Requests and latency of every gRPC call a service answers, by method and
//! result code, as a tower layer on the server, so no handler counts itself.
//!
//! A gRPC status travels in the response headers when a call fails before
//! its reply ("trailers-only") and in the trailers otherwise, so a call is
//! recorded when one of the two carries `grpc-status`; a body dropped before
//! either (the caller went away) counts as `Cancelled`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Call {
    /// `package.Service/Method`.
    method: String,
    /// The gRPC status code's name.
    code: &'static str,
}

#[derive(Debug)]
struct Families {
    requests: Family<Call, Counter>,
    latency: Family<Call, Histogram>,
}

/// The RPC families of one gRPC server; cheap to clone.
#[derive(Debug, Clone)]
pub struct RpcMetrics(Arc<Families>);

impl RpcMetrics {
    /// Registers `rpc_requests` and `rpc_duration_seconds` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let families = Families {
            requests: Family::default(),
            // 50 µs to about 1.6 s.
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
            }),
        };
        registry.register(
            "rpc_requests",
            "gRPC calls answered, by method and status code",
            families.requests.clone(),
        );
        registry.register(
            "rpc_duration_seconds",
            "From a gRPC call's arrival to its status, by method and status code",
            families.latency.clone(),
        );
        Self(Arc::new(families))
    }

    /// Counts one call; `method` moves into the labels rather than being
    /// copied, as this runs once per call.
    fn record(&self, method: String, code: tonic::Code, started: Instant) {
        let call = Call {
            method,
            code: code_name(code),
        };
        self.0.requests.get_or_create(&call).inc();
        self.0
            .latency
            .get_or_create(&call)
            .observe(started.elapsed().as_secs_f64());
    }
}

impl<S> Layer<S> for RpcMetrics {
    type Service = Measured<S>;

    fn layer(&self, inner: S) -> Measured<S> {
        Measured {
            inner,
            metrics: self.clone(),
        }
    }
}

/// A gRPC service whose calls are counted and timed.
#[derive(Debug, Clone)]
pub struct Measured<S> {
    inner: S,
    metrics: RpcMetrics,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Measured<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body + Unpin,
{
    type Response = Response<MeasuredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let mut pending = Pending {
            metrics: self.metrics.clone(),
            method: request.uri().path().trim_start_matches('/').to_owned(),
            started: Instant::now(),
            done: false,
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            if let Some(code) = status(response.headers()) {
                pending.finish(code);
            }
            Ok(response.map(|body| MeasuredBody { body, pending }))
        })
    }
}

/// A call not yet recorded.
struct Pending {
    metrics: RpcMetrics,
    method: String,
    started: Instant,
    done: bool,
}

impl Pending {
    fn finish(&mut self, code: tonic::Code) {
        if !self.done {
            self.done = true;
            self.metrics
                .record(std::mem::take(&mut self.method), code, self.started);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.finish(tonic::Code::Cancelled);
    }
}

/// A response body that records its call when the trailers pass.
pub struct MeasuredBody<B> {
    body: B,
    pending: Pending,
}

impl<B: Body + Unpin> Body for MeasuredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        match &frame {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status) {
                    this.pending.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.pending.finish(tonic::Code::Internal),
            Poll::Ready(None) => this.pending.finish(tonic::Code::Unknown),
            Poll::Pending => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The name of `code`, as tonic spells it.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "Ok",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

fn status(headers: &HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    value.parse::<i32>().ok().map(tonic::Code::from_i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use prometheus_client::encoding::text::encode;

    fn rendered(registry: &Registry) -> String {
        let mut out = String::new();
        encode(&mut out, registry).expect("encodes");
        out
    }

    async fn answer(
        metrics: &RpcMetrics,
        response: Response<Full<bytes::Bytes>>,
        trailers: Option<HeaderMap>,
    ) {
        let mut service = metrics.layer(tower::service_fn(move |_: Request<()>| {
            let response = response.clone();
            async move { Ok::<_, std::convert::Infallible>(response) }
        }));
        let request = Request::builder()
            .uri("/fishchat.logic.Logic/Send")
            .body(())
            .expect("request");
        let response = service.call(request).await.expect("answers");
        let body = response.into_body();
        match trailers {
            Some(trailers) => {
                let with_trailers = MeasuredBody {
                    body: Full::new(bytes::Bytes::new())
                        .with_trailers(async move { Some(Ok(trailers)) })
                        .boxed_unsync(),
                    pending: body.pending,
                };
                with_trailers.collect().await.expect("collects");
            }
            None => drop(body),
        }
    }

    #[tokio::test]
    async fn a_status_in_the_headers_is_recorded_at_once() {
        let mut registry = Registry::default();
        let metrics = RpcMetrics::register(&mut registry);
        let response = Response::builder()
            .header("grpc-status", "5")
            .body(Full::new(bytes::Bytes::new()))
            .expect("response");
        answer(&metrics, response, None).await;
        let text = rendered(&registry);
        assert!(
            text.contains(
                r#"rpc_requests_total{method="fishchat.logic.Logic/Send",code="NotFound"} 1"#
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_status_in_the_trailers_is_recorded_when_they_pass() {
        let mut registry = Registry::default();
        let metrics = RpcMetrics::register(&mut registry);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let response = Response::new(Full::new(bytes::Bytes::new()));
        answer(&metrics, response, Some(trailers)).await;
        let text = rendered(&registry);
        assert!(
            text.contains(r#"rpc_requests_total{method="fishchat.logic.Logic/Send",code="Ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"rpc_duration_seconds_count{method="fishchat.logic.Logic/Send",code="Ok"} 1"#
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_status_counts_as_cancelled() {
        let mut registry = Registry::default();
        let metrics = RpcMetrics::register(&mut registry);
        answer(
            &metrics,
            Response::new(Full::new(bytes::Bytes::new())),
            None,
        )
        .await;
        let text = rendered(&registry);
        assert!(text.contains(r#"code="Cancelled"} 1"#), "{text}");
    }

    #[test]
    fn code_names_are_tonics_own() {
        for n in 0..=16 {
            let code = tonic::Code::from_i32(n);
            assert_eq!(code_name(code), format!("{code:?}"));
        }
    }
}
