//! The load generator: one-at-a-time, open loop at a fixed rate (latency measured from the
//! intended send time, so a stalled server cannot hide its queueing), and closed loop.

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderName, HeaderValue, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4096)
        .pool_idle_timeout(Duration::from_secs(30))
        .build(conn)
}

/// One request shape sent to one system.
#[derive(Clone)]
pub struct Target {
    pub uri: Uri,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl Target {
    pub fn new(url: &str, headers: &[(&str, String)], body: &str) -> anyhow::Result<Self> {
        let mut h = Vec::new();
        for (k, v) in headers {
            h.push((
                HeaderName::from_bytes(k.as_bytes())?,
                HeaderValue::from_str(v)?,
            ));
        }
        h.push((
            HeaderName::from_static("content-type"),
            HeaderValue::from_static("application/json"),
        ));
        Ok(Self {
            uri: url.parse()?,
            headers: h,
            body: Bytes::from(body.to_string()),
        })
    }

    fn request(&self) -> http::Request<Full<Bytes>> {
        let mut req = http::Request::new(Full::new(self.body.clone()));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = self.uri.clone();
        for (k, v) in &self.headers {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        req
    }
}

pub fn histogram() -> Histogram<u64> {
    // Nanoseconds, 1 ns .. 100 s, 3 significant digits (constant bounds: cannot fail).
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

#[derive(Clone)]
pub struct Outcome {
    pub hist: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    pub fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1e6
    }
    pub fn error_rate(&self) -> f64 {
        let total = self.ok + self.errors;
        if total == 0 {
            0.0
        } else {
            self.errors as f64 / total as f64
        }
    }
}

/// Sends one request and reads the whole body; `true` on a 2xx.
pub async fn send(client: &HttpClient, t: &Target) -> bool {
    match client.request(t.request()).await {
        Ok(resp) => {
            let ok = resp.status().is_success();
            match resp.into_body().collect().await {
                Ok(_) => ok,
                Err(_) => false,
            }
        }
        Err(_) => false,
    }
}

pub async fn one_at_a_time(client: &HttpClient, t: &Target, n: usize) -> Outcome {
    let mut hist = histogram();
    let (mut ok, mut errors) = (0, 0);
    let start = Instant::now();
    for _ in 0..n {
        let s = Instant::now();
        if send(client, t).await {
            ok += 1;
            let _ = hist.record(nanos(s.elapsed()));
        } else {
            errors += 1;
        }
    }
    Outcome {
        hist,
        ok,
        errors,
        elapsed: start.elapsed(),
    }
}

pub async fn closed_loop(client: &HttpClient, t: &Target, conns: usize, dur: Duration) -> Outcome {
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let client = client.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            let (mut ok, mut errors) = (0u64, 0u64);
            while Instant::now() < deadline {
                let s = Instant::now();
                if send(&client, &t).await {
                    ok += 1;
                    let _ = hist.record(nanos(s.elapsed()));
                } else {
                    errors += 1;
                }
            }
            (hist, ok, errors)
        }));
    }
    merge(tasks, start).await
}

/// Open loop at `rate` requests per second. A dedicated thread paces the sends with
/// nanosleep precision (tokio timers tick in milliseconds); latency counts from the time a
/// request was due, so queueing inside the system under test is not hidden.
pub async fn open_loop(client: &HttpClient, t: &Target, rate: u64, dur: Duration) -> Outcome {
    let n = (rate as f64 * dur.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let start = Instant::now() + Duration::from_millis(5);
    std::thread::spawn(move || {
        for i in 0..n {
            let due = start + interval.mul_f64(i as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tx.send(due).is_err() {
                return;
            }
        }
    });
    let results = Arc::new(std::sync::Mutex::new((histogram(), 0u64, 0u64)));
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(due) = rx.recv().await {
        let client = client.clone();
        let t = t.clone();
        let results = results.clone();
        tasks.spawn(async move {
            let ok = send(&client, &t).await;
            let lat = nanos(due.elapsed());
            if let Ok(mut r) = results.lock() {
                if ok {
                    r.1 += 1;
                    let _ = r.0.record(lat);
                } else {
                    r.2 += 1;
                }
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    let r = results
        .lock()
        .map(|r| r.clone())
        .unwrap_or_else(|_| (histogram(), 0, 0));
    Outcome {
        hist: r.0,
        ok: r.1,
        errors: r.2,
        elapsed,
    }
}

/// One streamed request: time to the first body byte, gaps between chunks, total.
pub struct StreamSample {
    pub ttfb: Duration,
    pub gaps: Vec<Duration>,
    pub total: Duration,
    pub ok: bool,
}

pub async fn stream_once(client: &HttpClient, t: &Target) -> StreamSample {
    let s = Instant::now();
    let mut sample = StreamSample {
        ttfb: Duration::ZERO,
        gaps: Vec::new(),
        total: Duration::ZERO,
        ok: false,
    };
    let Ok(resp) = client.request(t.request()).await else {
        return sample;
    };
    let ok = resp.status().is_success();
    let mut body = resp.into_body();
    let mut last: Option<Instant> = None;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return sample };
        if frame.is_data() {
            let now = Instant::now();
            match last {
                None => sample.ttfb = now - s,
                Some(l) => sample.gaps.push(now - l),
            }
            last = Some(now);
        }
    }
    sample.total = s.elapsed();
    sample.ok = ok;
    sample
}

pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

async fn merge(
    tasks: Vec<tokio::task::JoinHandle<(Histogram<u64>, u64, u64)>>,
    start: Instant,
) -> Outcome {
    let mut hist = histogram();
    let (mut ok, mut errors) = (0, 0);
    for t in tasks {
        if let Ok((h, o, e)) = t.await {
            let _ = hist.add(&h);
            ok += o;
            errors += e;
        }
    }
    Outcome {
        hist,
        ok,
        errors,
        elapsed: start.elapsed(),
    }
}
