//! The real `resk-server` binary and private redis-server processes, for tests that start, kill
//! and restart them.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_resk-server");
pub const SECRET: &str = "binary-test-secret-0123456789abcdefghij";
pub const ENC_KEY: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

pub fn command(env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(env: &[(&str, &str)]) -> Server {
        let mut child = command(env)
            .args(["--port", "0", "--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("resk-server listening") {
                    let v: Value = serde_json::from_str(&line).unwrap();
                    let _ = tx.send(
                        v["address"]
                            .as_str()
                            .unwrap()
                            .parse::<SocketAddr>()
                            .unwrap(),
                    );
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("server did not start: {:?}", logs.lock().unwrap()));
        Server { child, addr, logs }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([signal, pid.as_str()])
                .status()
                .unwrap()
                .success()
        );
    }

    pub fn kill9(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    pub fn terminate(&mut self) {
        self.signal("-TERM");
    }

    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn mint(env: &[(&str, &str)], args: &[&str]) -> String {
    resk_procs::mint_token(std::path::Path::new(BIN), env, args).unwrap()
}

pub fn client() -> reqwest::Client {
    // The workspace builds reqwest without a default TLS provider (resk-embed installs ring); the
    // test client must do the same before building a client, even for plain HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A private redis-server on `port`, killed on drop.
pub struct RedisProc(pub resk_procs::Proc);

impl RedisProc {
    pub fn start(port: u16) -> RedisProc {
        Self::spawn(port, &[])
    }

    /// redis-server with `args`, waiting until `port` accepts connections.
    pub fn spawn(port: u16, args: &[&str]) -> RedisProc {
        RedisProc(resk_procs::redis_server(port, args).unwrap())
    }
}

pub fn have_redis() -> bool {
    resk_procs::have("redis-server", "--version")
}

pub fn free_port() -> u16 {
    resk_procs::free_port().unwrap()
}

/// Wait until `port` on loopback accepts connections; panics naming `what` after `limit`.
pub fn wait_for_port(port: u16, limit: Duration, what: &str) {
    resk_procs::wait_for_port(port, limit, what).unwrap();
}
