//! Layout checks of `lint`: no module of a crate reaches back into a module that reaches it (the
//! import graph of each crate's top-level modules has no cycle), so a request reads as one line
//! through the server and every module can be understood from the ones below it.

use std::collections::{BTreeMap, BTreeSet};

use crate::prelude::*;

/// The crates held to it.
const CRATES: &[&str] = &["crates/resk-server/src", "crates/resk/src"];

/// The top-level modules of `src` and the sibling modules each names as `crate::<module>` (code
/// outside `#[cfg(test)]`; doc links count, so docs do not point upwards either).
fn module_graph(src: &Path) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(src).map_err(|e| format!("{}: {e}", src.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let name = if path.is_dir() {
            path.file_name().map(|n| n.to_string_lossy().into_owned())
        } else if path.extension().is_some_and(|e| e == "rs") {
            path.file_stem().map(|n| n.to_string_lossy().into_owned())
        } else {
            None
        };
        let Some(name) = name.filter(|n| n != "lib" && n != "main") else {
            continue;
        };
        let file = if path.is_dir() {
            path.join("mod.rs")
        } else {
            path
        };
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let code = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .to_owned();
        files.insert(name, code);
    }
    let names: BTreeSet<String> = files.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    for (name, code) in &files {
        let mut deps = BTreeSet::new();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            if rest.starts_with('{') {
                // `use crate::{a::…, b, …}`: every name at the start of a path in the braces.
                let inner = &rest[1..rest.find("};").unwrap_or(rest.len())];
                for part in inner.split([',', '{', ' ', '\n']) {
                    let head: String = part
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if names.contains(&head) && head != *name {
                        deps.insert(head);
                    }
                }
            } else {
                let head: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if names.contains(&head) && head != *name {
                    deps.insert(head);
                }
            }
        }
        graph.insert(name.clone(), deps);
    }
    Ok(graph)
}

/// A cycle of `graph`, if it has one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|p| p == next).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(cycle) = visit(next, graph, state, path) {
                        return Some(cycle);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0
            && let Some(cycle) = visit(node, graph, &mut state, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

/// Fail on a module cycle in any of [`CRATES`].
pub(crate) fn module_cycles() -> Result {
    for src in CRATES {
        let graph = module_graph(&root().join(src))?;
        if let Some(cycle) = find_cycle(&graph) {
            return Err(format!(
                "{src}: modules import each other in a cycle: {}",
                cycle.join(" -> ")
            ));
        }
        println!("xtask: {src}: {} modules, no import cycle", graph.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        edges
            .iter()
            .map(|(a, bs)| {
                (
                    (*a).to_owned(),
                    bs.iter().map(|b| (*b).to_owned()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn a_cycle_is_found_and_a_tree_passes() {
        let tree = graph(&[
            ("app", &["routes", "state"]),
            ("routes", &["state"]),
            ("state", &[]),
        ]);
        assert_eq!(find_cycle(&tree), None);
        let cyclic = graph(&[
            ("app", &["routes"]),
            ("routes", &["state"]),
            ("state", &["app"]),
        ]);
        assert_eq!(
            find_cycle(&cyclic).unwrap(),
            ["app", "routes", "state", "app"]
        );
    }

    #[test]
    fn the_server_and_the_engine_have_no_module_cycle() {
        module_cycles().unwrap();
    }
}
