//! SigV4 request signing for Bedrock (service `bedrock`), with credentials taken from the
//! config or the standard AWS environment variables once, at start-up.

use crate::config::ProviderConfig;
use crate::providers::native::{AuthFuture, RequestAuth};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http_body_util::Full;
use std::time::SystemTime;

/// Signs each request with the provider's credentials for one region.
pub struct SigV4 {
    credentials: Credentials,
    region: String,
    service: &'static str,
}

impl std::fmt::Debug for SigV4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials' own Debug hides the secret; keep ours short anyway.
        f.debug_struct("SigV4")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl SigV4 {
    pub fn new(
        access_key_id: &str,
        secret_access_key: &str,
        session_token: Option<String>,
        region: &str,
    ) -> Self {
        Self {
            // Keys pasted from files often end in a newline.
            credentials: Credentials::new(
                access_key_id.trim(),
                secret_access_key.trim(),
                session_token.map(|t| t.trim().to_string()),
                None,
                "sluice",
            ),
            region: region.to_string(),
            service: "bedrock",
        }
    }

    /// Credentials from the provider's config, else from `AWS_ACCESS_KEY_ID` /
    /// `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`; an error when neither has them.
    pub fn from_config(cfg: &ProviderConfig, region: &str) -> Result<Self, String> {
        Self::from_sources(cfg, region, |k| std::env::var(k).ok())
    }

    fn from_sources(
        cfg: &ProviderConfig,
        region: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let s = Self::find(cfg, region, env)?;
        // aws-sigv4 panics on header values it cannot build: refuse such keys at start-up.
        let printable = |v: &str| v.bytes().all(|b| b.is_ascii_graphic());
        let c = &s.credentials;
        if !printable(c.access_key_id())
            || !printable(c.secret_access_key())
            || !c.session_token().is_none_or(printable)
            || !printable(region)
        {
            return Err(format!(
                "provider {}: the AWS credentials or region contain spaces or characters that are not printable ASCII",
                cfg.name
            ));
        }
        Ok(s)
    }

    fn find(
        cfg: &ProviderConfig,
        region: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let n = &cfg.native;
        if let (Some(id), Some(secret)) = (&n.aws_access_key_id, &n.aws_secret_access_key) {
            let token = n.aws_session_token.as_ref().map(|t| t.expose().to_string());
            return Ok(Self::new(id.expose(), secret.expose(), token, region));
        }
        let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => {
                Ok(Self::new(&id, &secret, env("AWS_SESSION_TOKEN"), region))
            }
            _ => Err(format!(
                "provider {}: kind bedrock needs AWS credentials: set aws_access_key_id and \
                 aws_secret_access_key in its config, or the AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY environment variables",
                cfg.name
            )),
        }
    }

    /// Adds `x-amz-date`, `authorization` (and `x-amz-security-token`) for `time`.
    pub fn sign_at<B>(
        &self,
        req: &mut http::Request<B>,
        body: &[u8],
        time: SystemTime,
    ) -> Result<(), String> {
        let identity = self.credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(self.service)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("SigV4 parameters: {e}"))?
            .into();
        let uri = req.uri().to_string();
        let mut headers = Vec::with_capacity(req.headers().len());
        for (name, value) in req.headers() {
            let v = value
                .to_str()
                .map_err(|_| format!("header {name} is not visible ASCII; cannot sign it"))?;
            headers.push((name.as_str(), v));
        }
        let signable = SignableRequest::new(
            req.method().as_str(),
            &uri,
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| format!("SigV4: {e}"))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| format!("SigV4: {e}"))?
            .into_parts();
        instructions.apply_to_request_http1x(req);
        Ok(())
    }
}

impl RequestAuth for SigV4 {
    fn apply<'a>(
        &'a self,
        req: &'a mut http::Request<Full<Bytes>>,
        body: &'a [u8],
    ) -> AuthFuture<'a> {
        let r = self.sign_at(req, body, SystemTime::now());
        Box::pin(async move { r })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::time::{Duration, UNIX_EPOCH};

    /// HMAC-SHA256 written out (RFC 2104), so the expected signature does not come from the
    /// crate under test.
    fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let mut inner = Sha256::new();
        inner.update(k.iter().map(|b| b ^ 0x36).collect::<Vec<u8>>());
        inner.update(msg);
        let mut outer = Sha256::new();
        outer.update(k.iter().map(|b| b ^ 0x5c).collect::<Vec<u8>>());
        outer.update(inner.finalize());
        outer.finalize().to_vec()
    }

    const HOST: &str = "bedrock-runtime.us-east-1.amazonaws.com";
    const PATH: &str = "/model/us.anthropic.claude-3-7-sonnet-20250219-v1%3A0/converse";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn request() -> http::Request<()> {
        let mut r = http::Request::new(());
        *r.method_mut() = http::Method::POST;
        *r.uri_mut() = format!("https://{HOST}{PATH}").parse().unwrap();
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r
    }

    /// 2024-01-02T03:04:05Z
    fn when() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_704_164_645)
    }

    /// The signature computed by hand from the SigV4 specification: the path is
    /// percent-encoded a second time in the canonical request (every service but S3).
    fn expected_authorization(body: &[u8]) -> String {
        let canonical_path = PATH.replace('%', "%25");
        let canonical = format!(
            "POST\n{canonical_path}\n\ncontent-type:application/json\nhost:{HOST}\n\
             x-amz-date:20240102T030405Z\n\ncontent-type;host;x-amz-date\n{}",
            hex::encode(Sha256::digest(body))
        );
        let scope = "20240102/us-east-1/bedrock/aws4_request";
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n20240102T030405Z\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let k = hmac(format!("AWS4{SECRET}").as_bytes(), b"20240102");
        let k = hmac(&k, b"us-east-1");
        let k = hmac(&k, b"bedrock");
        let k = hmac(&k, b"aws4_request");
        let sig = hex::encode(hmac(&k, to_sign.as_bytes()));
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{scope}, \
             SignedHeaders=content-type;host;x-amz-date, Signature={sig}"
        )
    }

    #[test]
    fn signature_matches_one_derived_from_the_spec() {
        let s = SigV4::new("AKIDEXAMPLE", SECRET, None, "us-east-1");
        let body = br#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#;
        let mut r = request();
        s.sign_at(&mut r, body, when()).unwrap();
        assert_eq!(r.headers()["x-amz-date"], "20240102T030405Z");
        assert_eq!(
            r.headers()["authorization"].to_str().unwrap(),
            expected_authorization(body)
        );
        // Another body signs differently.
        let mut r2 = request();
        s.sign_at(&mut r2, b"{}", when()).unwrap();
        assert_ne!(r2.headers()["authorization"], r.headers()["authorization"]);
        assert_eq!(
            r2.headers()["authorization"].to_str().unwrap(),
            expected_authorization(b"{}")
        );
    }

    fn cfg(keys: Option<(&str, &str)>) -> ProviderConfig {
        let yaml = match keys {
            Some((id, secret)) => format!(
                "providers:\n  - {{name: b, kind: bedrock, region: us-east-1, aws_access_key_id: {id}, aws_secret_access_key: {secret}}}\n"
            ),
            None => "providers:\n  - {name: b, kind: bedrock, region: us-east-1}\n".to_string(),
        };
        crate::config::from_yaml(&yaml, &|_| None)
            .unwrap()
            .providers
            .remove(0)
    }

    #[test]
    fn credentials_come_from_config_then_environment_else_a_clear_error() {
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("ENVKEY".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("envsecret".to_string()),
            "AWS_SESSION_TOKEN" => Some("envtoken".to_string()),
            _ => None,
        };
        let none = |_: &str| None;
        let s = SigV4::from_sources(&cfg(Some(("CFGKEY", "cfgsecret"))), "us-east-1", env).unwrap();
        assert_eq!(s.credentials.access_key_id(), "CFGKEY");
        assert_eq!(s.credentials.session_token(), None);
        let s = SigV4::from_sources(&cfg(None), "us-east-1", env).unwrap();
        assert_eq!(s.credentials.access_key_id(), "ENVKEY");
        assert_eq!(s.credentials.session_token(), Some("envtoken"));
        let e = SigV4::from_sources(&cfg(None), "us-east-1", none).unwrap_err();
        assert!(
            e.contains("AWS_ACCESS_KEY_ID") && e.contains("provider b"),
            "{e}"
        );
    }

    #[test]
    fn session_token_is_sent_and_secret_is_not_shown() {
        let s = SigV4::new("AKID", "secret-value", Some("tok".into()), "eu-west-1");
        let mut r = request();
        s.sign_at(&mut r, b"{}", when()).unwrap();
        assert_eq!(r.headers()["x-amz-security-token"], "tok");
        let auth = r.headers()["authorization"].to_str().unwrap();
        assert!(auth.contains("/eu-west-1/bedrock/aws4_request"), "{auth}");
        assert!(auth.contains("x-amz-security-token"), "{auth}");
        assert!(!format!("{s:?}").contains("secret-value"));
    }
}
