//! Shared by the config crate's integration tests.

#![allow(dead_code)] // each test binary uses its own part of this

use std::path::Path;

use mailherd_config::{Config, Problems};

/// The commented example config that ships with the project.
pub const EXAMPLE: &str = include_str!("../../../../examples/mailherd.toml");

/// The example with every commented section header and `key = value`
/// line from `marker` (a commented header such as `# [alerts]`) to the end
/// switched on.
pub fn example_enabled_from(marker: &str) -> String {
    let start = EXAMPLE
        .find(marker)
        .unwrap_or_else(|| panic!("the example documents {marker}"));
    let (head, tail) = EXAMPLE.split_at(start);
    let tail: Vec<String> = tail
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if rest.starts_with('[') || rest.contains(" = ") => rest.to_string(),
            _ => line.to_string(),
        })
        .collect();
    format!("{head}{}\n", tail.join("\n"))
}

/// Parses `text` as if read from `node.toml`.
pub fn parse(text: &str) -> Result<Config, Problems> {
    Config::parse(Path::new("node.toml"), text)
}

/// The problem about `key` in `text`, as `(line, message)`; checks the
/// `node.toml:LINE: KEY: ` rendering too.
pub fn problem_about(text: &str, key: &str) -> (usize, String) {
    let problems = parse(text).expect_err("the config must be refused");
    let found = problems
        .0
        .iter()
        .find(|p| p.key == key)
        .unwrap_or_else(|| panic!("no problem for {key}; got:\n{problems}"));
    let line = found.line.expect("a line");
    assert!(found
        .to_string()
        .starts_with(&format!("node.toml:{line}: {key}: ")));
    (line, found.message.clone())
}

/// The 1-based line of the first line of `text` that starts with `start`
/// at or after line `from` (1 for the whole text).
pub fn line_starting(text: &str, start: &str, from: usize) -> usize {
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find(|(_, line)| line.starts_with(start))
        .unwrap_or_else(|| panic!("no line starts with {start:?}"))
        .0
        + 1
}
