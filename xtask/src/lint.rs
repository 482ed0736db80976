//! `lint`: formatting, clippy, cargo-deny, docs, packaging, the monitoring rules.

use crate::prelude::*;

/// `promtool check rules` and `promtool test rules` on `docs/monitoring/alerts.yml`. promtool comes
/// from Debian's `prometheus` package: installed under `CI=true` when missing (a failure if it cannot
/// be), otherwise skipped visibly.
pub(crate) fn monitoring_rules() -> Result {
    if !have("promtool", "--version") {
        if in_ci() {
            eprintln!("xtask: installing promtool (Debian package prometheus; CI=true, not found)");
            apt_install(&["prometheus"])?;
        } else {
            println!("SKIP promtool: not installed (`apt-get install prometheus`)");
            return Ok(());
        }
    }
    let dir = root().join("docs/monitoring");
    run(Command::new("promtool")
        .args(["check", "rules", "alerts.yml"])
        .current_dir(&dir))?;
    run(Command::new("promtool")
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(&dir))
}

pub(crate) fn lint() -> Result {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    // The fuzz targets are a workspace of their own.
    run(cargo().args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"]))?;
    module_cycles()?;
    monitoring_rules()?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    package()?;
    if !have("cargo-deny", "--version") {
        if in_ci() {
            eprintln!("xtask: installing cargo-deny (CI=true, not found)");
            run(cargo().args(["install", "cargo-deny", "--locked"]))?;
        } else {
            println!("SKIP cargo-deny: not installed (`cargo install cargo-deny --locked`)");
            return Ok(());
        }
    }
    run(cargo().args([
        "deny",
        "--all-features",
        "check",
        "bans",
        "licenses",
        "sources",
    ]))?;
    // The RustSec database is cloned from GitHub; where GitHub is unreachable (this project's build
    // machines reach only package registries) the check is skipped visibly, and the GitHub workflow
    // runs it with network access.
    let advisories = cargo()
        .args(["deny", "--all-features", "check", "advisories"])
        .output()
        .map_err(|e| format!("cannot run cargo deny: {e}"))?;
    let stderr = String::from_utf8_lossy(&advisories.stderr);
    if advisories.status.success() {
        eprintln!("xtask: cargo deny advisories ok");
    } else if stderr.contains("failed to fetch advisory database") {
        println!(
            "SKIP cargo-deny advisories: the RustSec database (GitHub) is unreachable from here"
        );
    } else {
        eprintln!("{stderr}");
        return Err("cargo deny check advisories failed".into());
    }
    Ok(())
}

/// Every publishable crate packages cleanly, in dependency order (`cargo package --workspace`
/// resolves the workspace's own crates from the packages it just made): manifests complete, every
/// file a crate includes (its README, `include_str!` sources) inside the package, and each package
/// built from its own sources. Crates marked `publish = false` (tests, examples, xtask) are left out.
pub(crate) fn package() -> Result {
    forget_packaged_sources()?;
    let mut cmd = cargo();
    cmd.args(["package", "--workspace", "--locked", "--allow-dirty"]);
    for name in unpublished()? {
        cmd.args(["--exclude", &name]);
    }
    run(&mut cmd)
}

/// Remove what earlier packaging runs left of the workspace's crates. `cargo package` verifies each
/// crate against the others through a temporary local registry in the target directory; cargo
/// extracts registry crates once into `$CARGO_HOME/registry/src/<registry>/`, and treats a registry
/// crate it compiled before (same name, version and registry) as unchanged. With the shared target
/// directory, a crate whose API changed since an earlier run was verified against its old copy
/// (seen: `no SetOptions in resk_core` after `SetOptions` was added). So the extracted copies (of
/// registries other than crates.io) and the compiled `resk*` artifacts go first; the workspace's
/// crates are compiled again in a new clone anyway.
fn forget_packaged_sources() -> Result {
    let debug = target_dir().join("debug");
    for dir in [".fingerprint", "deps", "build"] {
        let Ok(entries) = std::fs::read_dir(debug.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("resk") || name.starts_with("libresk") {
                let path = entry.path();
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
            }
        }
    }
    let home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .ok_or("neither CARGO_HOME nor HOME is set")?;
    for kind in ["src", "cache"] {
        let Ok(entries) = std::fs::read_dir(home.join("registry").join(kind)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("index.crates.io") {
                continue;
            }
            let Ok(crates) = std::fs::read_dir(entry.path()) else {
                continue;
            };
            for krate in crates.flatten() {
                if krate.file_name().to_string_lossy().starts_with("resk") {
                    let path = krate.path();
                    let removed = if path.is_dir() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                    removed.map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
                }
            }
        }
    }
    Ok(())
}

/// The names of the workspace members whose manifest says `publish = false`.
pub(crate) fn unpublished() -> Result<Vec<String>> {
    let mut names = Vec::new();
    for group in ["crates", "examples"] {
        let dir = root().join(group);
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let manifest = entry.path().join("Cargo.toml");
            let Ok(text) = std::fs::read_to_string(&manifest) else {
                continue;
            };
            if !text.lines().any(|l| l.trim() == "publish = false") {
                continue;
            }
            let name = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("name = "))
                .map(|n| n.trim_matches('"').to_owned())
                .ok_or(format!("{}: no package name", manifest.display()))?;
            names.push(name);
        }
    }
    names.push("xtask".into());
    Ok(names)
}

// ---------------------------------------------------------------------------------------------
// bench
// ---------------------------------------------------------------------------------------------
