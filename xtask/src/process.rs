//! Process helpers every command uses: the workspace root, cargo, running commands, child
//! processes that die with their handle, free ports, plain HTTP, apt.

use crate::prelude::*;

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub(crate) fn in_ci() -> bool {
    env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

pub(crate) fn run(cmd: &mut Command) -> Result {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

pub(crate) use resk_procs::{Proc, have};

pub(crate) fn free_port() -> Result<u16> {
    resk_procs::free_port()
}

pub(crate) fn wait_for_port(port: u16) -> Result {
    resk_procs::wait_for_port(port, Duration::from_secs(30), "a private service")
}

/// One HTTP/1.1 request over a fresh connection; returns (status line, body).
pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> Result<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    Ok((
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    ))
}

/// Install Debian packages: the package lists are read once per xtask run first (`apt-get
/// update`), since a fresh machine has none and `apt-get install` then finds nothing.
pub(crate) fn apt_install(packages: &[&str]) -> Result {
    static UPDATED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let updated = *UPDATED.get_or_init(|| {
        Command::new("apt-get")
            .args(["update", "-q"])
            .status()
            .is_ok_and(|s| s.success())
    });
    if !updated {
        return Err("`apt-get update` failed: cannot install Debian packages".into());
    }
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages))
}

pub(crate) fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}
