//! Process helpers shared by `cargo xtask` and resk's tests, in one place (standard library only,
//! so xtask still builds in seconds): a child process killed on drop, free loopback ports, waiting
//! for a port, a private redis-server, and minting a token with `resk-server token`.

use std::{
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A child process, killed and reaped when dropped.
#[derive(Debug)]
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nothing listens on (free when asked; bind it soon).
pub fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// Wait until `port` on loopback accepts connections, at most `limit`; the error names `what`.
pub fn wait_for_port(port: u16, limit: Duration, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() >= deadline {
            return Err(format!(
                "{what}: nothing listening on 127.0.0.1:{port} after {limit:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Whether `program arg` runs and succeeds (`redis-server --version`, say).
pub fn have(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A private redis-server on loopback `port` without persistence, with `extra` arguments,
/// started and listening.
pub fn redis_server(port: u16, extra: &[&str]) -> Result<Proc, String> {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start redis-server: {e}"))?;
    let server = Proc(child);
    wait_for_port(port, Duration::from_secs(30), "redis-server")?;
    Ok(server)
}

/// A token from `<bin> token <args>` with `env` (the server's JWT settings) and nothing else of
/// this process's environment but `PATH`.
pub fn mint_token(bin: &Path, env: &[(&str, &str)], args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(bin);
    cmd.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    let out = cmd
        .arg("token")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_listening_port_is_found_and_a_free_one_is_not() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        wait_for_port(port, Duration::from_secs(1), "test").unwrap();
        let free = free_port().unwrap();
        let err = wait_for_port(free, Duration::from_millis(50), "nothing").unwrap_err();
        assert!(err.contains("nothing listening"), "{err}");
        assert!(have("true", "--version") || have("sh", "-c"));
    }
}
