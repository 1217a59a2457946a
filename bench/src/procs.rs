//! Processes under test: spawn pinned to a core, wait until ready, read RSS and CPU time.

use anyhow::{anyhow, bail, Context};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Proc {
    pub name: String,
    pub child: Child,
    pub url: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in MiB.
    pub fn rss_mib(&self) -> f64 {
        rss_kib(self.pid()) as f64 / 1024.0
    }

    /// User + system CPU time of the whole process (all threads).
    pub fn cpu(&self) -> Duration {
        cpu_time(self.pid())
    }

    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop within 10 s; killed", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `taskset -c CPU program args...` when a CPU is given and taskset exists.
pub fn command(program: &Path, args: &[String], cpu: Option<usize>) -> Command {
    match cpu {
        Some(c) if Path::new("/usr/bin/taskset").exists() => {
            let mut cmd = Command::new("/usr/bin/taskset");
            cmd.arg("-c").arg(c.to_string()).arg(program).args(args);
            cmd
        }
        _ => {
            let mut cmd = Command::new(program);
            cmd.args(args);
            cmd
        }
    }
}

/// Spawns a process that prints `<prefix>http://ADDR` on stdout when ready.
pub fn spawn_announcing(name: &str, mut cmd: Command, prefix: &str) -> anyhow::Result<Proc> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        let _ = tx.send(line);
        let mut sink = String::new();
        while r.read_line(&mut sink).unwrap_or(0) > 0 {
            sink.clear();
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| anyhow!("{name} did not announce its address"))?;
    let Some(url) = line.trim().strip_prefix(prefix) else {
        let _ = child.kill();
        bail!("{name}: unexpected first line {line:?}");
    };
    Ok(Proc {
        name: name.to_string(),
        url: url.to_string(),
        child,
    })
}

/// Spawns a process and polls `health_url` until it answers 200.
pub async fn spawn_polling(
    name: &str,
    mut cmd: Command,
    url: String,
    health_url: &str,
    wait: Duration,
) -> anyhow::Result<Proc> {
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    let proc = Proc {
        name: name.to_string(),
        url,
        child,
    };
    let client = crate::load::client();
    let deadline = Instant::now() + wait;
    let uri: http::Uri = health_url.parse()?;
    while Instant::now() < deadline {
        let req =
            http::Request::get(uri.clone()).body(http_body_util::Full::new(bytes::Bytes::new()))?;
        if let Ok(resp) = client.request(req).await {
            if resp.status().is_success() {
                return Ok(proc);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{name} was not ready within {wait:?}")
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime from /proc/PID/stat (clock ticks of 10 ms).
pub fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the `(comm)` part; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let total = ticks(11) + ticks(12);
    Duration::from_millis(total * 10)
}
