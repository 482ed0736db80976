//! `bench compare <git-rev>`: the exact-hit load of `bench` against resk-server built at another
//! revision and at this checkout, in interleaved rounds of one run, side by side: how a change
//! moved the hot path, judged on the same machine at the same moment.

use crate::prelude::*;

/// resk-server built at `rev` (a detached worktree sharing this target directory, so only the
/// workspace's own crates are compiled again), copied beside the target as `resk-server-<rev>`.
fn build_at(rev: &str) -> Result<PathBuf> {
    let root = root();
    let sha = Command::new("git")
        .args(["rev-parse", "--short", rev])
        .current_dir(&root)
        .output()
        .map_err(|e| format!("git: {e}"))?;
    if !sha.status.success() {
        return Err(format!("git does not know {rev:?}"));
    }
    let sha = String::from_utf8_lossy(&sha.stdout).trim().to_owned();
    let out = target_dir()
        .join("compare")
        .join(format!("resk-server-{sha}"));
    if out.exists() {
        return Ok(out);
    }
    let tree = env::temp_dir().join(format!("resk-compare-{sha}"));
    if !tree.exists() {
        run(Command::new("git")
            .args(["worktree", "add", "--detach"])
            .arg(&tree)
            .arg(&sha)
            .current_dir(&root))?;
    }
    // Two trees built into one target directory share artifact names (paths relative to the
    // workspace), and cargo trusts an artifact newer than its sources: each tree's crates are made
    // newer than the other's artifacts before it is built (seen without it: this checkout failed to
    // compile against the worktree's older resk-core).
    touch_sources(&tree.join("crates"))?;
    let built = release_resk_in(&tree)?;
    std::fs::create_dir_all(out.parent().unwrap_or(Path::new("."))).map_err(|e| e.to_string())?;
    std::fs::copy(built, &out).map_err(|e| format!("cannot keep the {sha} build: {e}"))?;
    let _ = run(Command::new("git")
        .args(["worktree", "remove", "--force"])
        .arg(&tree)
        .current_dir(&root));
    Ok(out)
}

pub(crate) fn bench_compare(rev: &str, secs: u64, rounds: usize) -> Result {
    ensure_wrk()?;
    let before = build_at(rev)?;
    // Built after the other revision: target/release/resk-server is this checkout's again.
    touch_sources(&root().join("crates"))?;
    let now = release_resk_in(&root())?;
    let dir = env::temp_dir().join(format!("resk-compare-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let env = [("LOG_LEVEL", "warn")];
    let old = seed_resk(&before, true, &env)?;
    let new = seed_resk(&now, true, &env)?;
    for threads in [1u32, 2] {
        let load = Load {
            threads,
            secs,
            conns: 64,
            dir: &dir,
        };
        let mut runs: [Vec<WrkResult>; 2] = [Vec::new(), Vec::new()];
        for round in 0..rounds {
            // Alternate which goes first, so neither always gets the warmer machine.
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let seeded = if i == 0 { &old } else { &new };
                runs[i].push(bench_seeded(seeded, &load)?);
            }
        }
        let [o, n] = [summarise(&runs[0]), summarise(&runs[1])];
        println!();
        println!(
            "## Exact hit (AES-GCM, JWT, rate limit), wrk -t{threads} -c64, {secs} s x {rounds} rounds, medians"
        );
        println!();
        println!("| build | requests/s | p50 ms | p99 ms | server CPU us/request |");
        println!("| --- | ---: | ---: | ---: | ---: |");
        println!(
            "| {rev} | {:.0} | {:.3} | {:.3} | {:.1} |",
            o.rps, o.p50_ms, o.p99_ms, o.cpu_us
        );
        println!(
            "| this checkout | {:.0} | {:.3} | {:.3} | {:.1} |",
            n.rps, n.p50_ms, n.p99_ms, n.cpu_us
        );
        println!(
            "| ratio (this / {rev}) | {:.3}x | {:.3}x | {:.3}x | {:.3}x |",
            n.rps / o.rps,
            n.p50_ms / o.p50_ms,
            n.p99_ms / o.p99_ms,
            n.cpu_us / o.cpu_us
        );
        if o.errors + n.errors > 0 {
            return Err("some requests failed during the comparison".into());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
