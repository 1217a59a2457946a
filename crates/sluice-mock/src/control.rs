//! The `/_mock/*` control endpoints: stats, the last recorded request, and reset.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode, Uri};

use crate::{error_response, json_response, method_not_allowed, ApiError, Mock, MockBody, Route};

/// A provider request as received, kept for `GET /_mock/last_request`. Rendered only when asked.
pub(crate) struct Recorded {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Mock {
    /// Never blocks: under contention another request's record wins, which is as "last" as any.
    pub(crate) fn remember(&self, recorded: &Arc<Recorded>) {
        let previous = match self.last_request.try_lock() {
            Ok(mut slot) => slot.replace(Arc::clone(recorded)),
            Err(_) => None,
        };
        // Freed outside the lock.
        drop(previous);
    }

    pub(crate) fn control(&self, route: Route, method: &Method) -> Response<MockBody> {
        if *method != route.method() {
            return method_not_allowed(route, method);
        }
        let body = match route {
            Route::Stats => serde_json::json!({
                "requests": self.request_count(),
                "cancelled": self.cancelled_count(),
            }),
            Route::Reset => {
                self.requests.store(0, Ordering::Relaxed);
                self.cancelled.store(0, Ordering::Relaxed);
                *self
                    .last_request
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = None;
                serde_json::json!({ "reset": true })
            }
            _ => {
                let last = self
                    .last_request
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                match last {
                    Some(recorded) => recorded.to_json(),
                    None => {
                        let error = ApiError {
                            status: StatusCode::NOT_FOUND,
                            kind: "not_found_error",
                            ..ApiError::invalid("no request recorded yet", None)
                        };
                        return error_response(&error);
                    }
                }
            }
        };
        json_response(StatusCode::OK, Bytes::from(body.to_string()))
    }
}

impl Recorded {
    fn to_json(&self) -> serde_json::Value {
        let mut headers = serde_json::Map::new();
        for (name, value) in &self.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            match headers.get_mut(name.as_str()) {
                Some(serde_json::Value::String(existing)) => {
                    existing.push_str(", ");
                    existing.push_str(&value);
                }
                _ => {
                    headers.insert(name.as_str().to_owned(), value.into_owned().into());
                }
            }
        }
        let body = if self.body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&self.body)
                .unwrap_or_else(|_| String::from_utf8_lossy(&self.body).into_owned().into())
        };
        serde_json::json!({
            "method": self.method.as_str(),
            "path": self.uri.path(),
            "query": self.uri.query(),
            "headers": headers,
            "body": body,
        })
    }
}
