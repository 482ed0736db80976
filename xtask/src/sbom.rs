//! `sbom`: CycloneDX SBOMs of every workspace crate.

use crate::prelude::*;

/// `cargo xtask sbom`: CycloneDX SBOMs of the workspace crates. cargo-cyclonedx (the CycloneDX
/// project's own cargo plugin, pinned) is installed once when missing; it writes next to each manifest,
/// so the files are moved under the target directory, never left in the source tree.
pub(crate) fn sbom() -> Result {
    if !have("cargo-cyclonedx", "--version") {
        eprintln!("xtask: installing cargo-cyclonedx (once)");
        run(cargo().args([
            "install",
            "cargo-cyclonedx",
            "--version",
            "0.5.9",
            "--locked",
        ]))?;
    }
    run(cargo().args([
        "cyclonedx",
        "--format",
        "json",
        "--spec-version",
        "1.5",
        "--quiet",
    ]))?;
    // cargo-cyclonedx writes `<crate>.cdx.json` beside every workspace member's manifest: gather them.
    let dir = target_dir().join("sbom");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut members = vec![root().join("xtask")];
    for parent in ["crates", "examples"] {
        if let Ok(entries) = std::fs::read_dir(root().join(parent)) {
            members.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
        }
    }
    let mut gathered = 0;
    for member in members {
        let Ok(entries) = std::fs::read_dir(&member) else {
            continue;
        };
        for file in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if file.to_string_lossy().ends_with(".cdx.json") {
                let to = dir.join(file.file_name().unwrap_or_default());
                std::fs::copy(&file, &to).map_err(|e| format!("{}: {e}", to.display()))?;
                std::fs::remove_file(&file).map_err(|e| format!("{}: {e}", file.display()))?;
                gathered += 1;
            }
        }
    }
    let out = dir.join("resk-server.cdx.json");
    // xtask is std-only: a textual check that the document is a CycloneDX SBOM with packages in it.
    let text = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let components = text.matches("\"purl\"").count();
    if !text.contains("CycloneDX") || components == 0 {
        return Err(format!(
            "{} is not a CycloneDX SBOM with components",
            out.display()
        ));
    }
    println!(
        "SBOMs of {gathered} workspace crates in {}; resk-server: {components} packages",
        dir.display()
    );
    Ok(())
}
