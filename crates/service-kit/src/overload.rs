//! Load shedding at the gRPC edge: at most a fixed number of calls in flight
//! per process; a call beyond that is answered at once with `UNAVAILABLE`
//! (which gRPC clients treat as "retry with backoff") instead of waiting in
//! an unbounded queue for a database connection. Health and reflection calls
//! are never shed, so an overloaded instance still answers its probes.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::FutureExt as _;
use futures::future::{BoxFuture, Either, Ready, ready};
use tokio::sync::Semaphore;
use tower::{Layer, Service};

/// The layer: shares one budget of `max_in_flight` calls across every
/// connection of the server.
#[derive(Debug, Clone)]
pub struct InFlightLimitLayer {
    permits: Arc<Semaphore>,
    max_in_flight: usize,
}

impl InFlightLimitLayer {
    pub fn new(max_in_flight: usize) -> Self {
        let max_in_flight = max_in_flight.max(1);
        Self {
            permits: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
        }
    }
}

impl<S> Layer<S> for InFlightLimitLayer {
    type Service = InFlightLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InFlightLimit {
            inner,
            permits: self.permits.clone(),
            max_in_flight: self.max_in_flight,
            shed: metrics::counter!("grpc_requests_shed_total"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct InFlightLimit<S> {
    inner: S,
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    shed: metrics::Counter,
}

/// Whether a call is exempt from shedding: health checks and reflection.
fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

impl<S, B, R> Service<http::Request<B>> for InFlightLimit<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Either<
        BoxFuture<'static, Result<Self::Response, Self::Error>>,
        Ready<Result<Self::Response, Self::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if exempt(request.uri().path()) {
            return Either::Left(self.inner.call(request).boxed());
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let response = self.inner.call(request);
                Either::Left(
                    async move {
                        let response = response.await;
                        drop(permit);
                        response
                    }
                    .boxed(),
                )
            }
            Err(_) => {
                self.shed.increment(1);
                let status = tonic::Status::unavailable(format!(
                    "server overloaded: {} calls in flight; retry with backoff",
                    self.max_in_flight
                ));
                Either::Right(ready(Ok(status.into_http::<R>())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tokio::sync::watch;
    use tower::ServiceExt as _;

    use super::*;

    /// Answers a call to a `Hold` method once its test releases them all;
    /// any other call at once.
    #[derive(Clone)]
    struct Held {
        released: watch::Receiver<bool>,
    }

    impl Service<http::Request<()>> for Held {
        type Response = http::Response<String>;
        type Error = Infallible;
        type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<()>) -> Self::Future {
            let hold = request.uri().path().ends_with("/Hold");
            let mut released = self.released.clone();
            async move {
                if hold {
                    let _ = released.wait_for(|released| *released).await;
                }
                Ok(http::Response::new("served".to_owned()))
            }
            .boxed()
        }
    }

    fn call(
        service: &InFlightLimit<Held>,
        path: &str,
    ) -> impl Future<Output = http::Response<String>> + use<> {
        let request = http::Request::builder()
            .uri(path)
            .body(())
            .expect("valid request");
        let service = service.clone();
        async move {
            match service.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    }

    fn grpc_status(response: &http::Response<String>) -> Option<&str> {
        response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn calls_beyond_the_limit_are_shed_as_unavailable_until_one_finishes() {
        let (release, released) = watch::channel(false);
        let service = InFlightLimitLayer::new(2).layer(Held { released });

        let held = [
            tokio::spawn(call(&service, "/ordersaga.test.v1.Test/Hold")),
            tokio::spawn(call(&service, "/ordersaga.test.v1.Test/Hold")),
        ];
        while service.permits.available_permits() > 0 {
            tokio::task::yield_now().await;
        }

        let shed = call(&service, "/ordersaga.test.v1.Test/Quick").await;
        assert_eq!(grpc_status(&shed), Some("14"), "UNAVAILABLE");
        let message = shed.headers()["grpc-message"]
            .to_str()
            .expect("ascii message");
        assert!(message.contains("overloaded"), "{message}");
        assert_eq!(shed.body(), "", "the call never reached the service");

        // Probes are answered even now.
        let health = call(&service, "/grpc.health.v1.Health/Check").await;
        assert_eq!(grpc_status(&health), None);
        assert_eq!(health.body(), "served");

        release.send(true).expect("held calls wait");
        for call in held {
            assert_eq!(call.await.expect("call task").body(), "served");
        }
        let after = call(&service, "/ordersaga.test.v1.Test/Quick").await;
        assert_eq!(grpc_status(&after), None, "the permits came back");
        assert_eq!(after.body(), "served");
    }
}
