//! Authentication: `Authorization: Bearer` or `x-api-key` -> [`Principal`]. Constant-time.

use super::governance::{Governance, KeyRejection};
use super::keys::{KeyPrincipal, Role};
use crate::config::Secret;
use crate::error::ApiError;
use http::HeaderMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub enum Principal {
    /// No auth configured: loopback-only (or explicitly opted-in) open gateway.
    Anonymous,
    /// The configured master key.
    Master,
    /// A virtual key (from the principal cache).
    Key(Arc<KeyPrincipal>),
}

impl Principal {
    /// Label stored in usage records (never a secret).
    pub fn label(&self) -> &str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::Master => "master",
            Principal::Key(k) => &k.id,
        }
    }

    /// The admin role: the master key (and an open gateway) is `admin`.
    pub fn role(&self) -> Option<Role> {
        match self {
            Principal::Anonymous | Principal::Master => Some(Role::Admin),
            Principal::Key(k) => k.role,
        }
    }
}

/// What credentials are accepted.
#[derive(Debug, Clone)]
pub struct Authenticator {
    master_key: Option<Secret<String>>,
}

impl Authenticator {
    pub fn new(master_key: Option<Secret<String>>) -> Self {
        Self { master_key }
    }

    /// Whether a master key is configured.
    pub fn has_master_key(&self) -> bool {
        self.master_key.is_some()
    }

    /// `open` is the gateway's authentication mode (`app::Shared::auth_open`), decided from
    /// the configuration and the store's history, never from how many keys are usable now.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        keys: Option<&Governance>,
        open: bool,
    ) -> Result<Principal, ApiError> {
        if open {
            return Ok(Principal::Anonymous);
        }
        let presented = bearer_or_api_key(headers).ok_or(ApiError::Unauthorized(
            "missing API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`",
        ))?;
        if let Some(master) = &self.master_key {
            if bool::from(presented.as_bytes().ct_eq(master.expose().as_bytes())) {
                return Ok(Principal::Master);
            }
        }
        match keys.map(|g| g.lookup(presented)) {
            Some(Ok(p)) => Ok(Principal::Key(p)),
            Some(Err(KeyRejection::Expired)) => {
                Err(ApiError::Unauthorized("this API key has expired"))
            }
            _ => Err(ApiError::Unauthorized("invalid API key")),
        }
    }
}

fn bearer_or_api_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?.trim();
        let (scheme, rest) = v.split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") {
            let key = rest.trim();
            return (!key.is_empty()).then_some(key);
        }
        return None;
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn master_key_via_bearer_or_x_api_key() {
        let a = Authenticator::new(Some(Secret::new("sk-master".into())));
        assert!(matches!(
            a.authenticate(
                &headers(&[("authorization", "Bearer sk-master")]),
                None,
                false
            ),
            Ok(Principal::Master)
        ));
        assert!(matches!(
            a.authenticate(&headers(&[("x-api-key", "sk-master")]), None, false),
            Ok(Principal::Master)
        ));
        assert!(a
            .authenticate(&headers(&[("authorization", "Bearer nope")]), None, false)
            .is_err());
        assert!(a
            .authenticate(
                &headers(&[("authorization", "Basic sk-master")]),
                None,
                false
            )
            .is_err());
        assert!(a.authenticate(&headers(&[]), None, false).is_err());
    }

    #[test]
    fn open_only_when_the_mode_says_so() {
        let a = Authenticator::new(None);
        assert!(matches!(
            a.authenticate(&headers(&[]), None, true),
            Ok(Principal::Anonymous)
        ));
        assert!(a.authenticate(&headers(&[]), None, false).is_err());
    }
}
