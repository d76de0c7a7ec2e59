//! Shared helpers of inkling's benchmarks.

use std::process::Command;
use std::time::Duration;

/// The path of a module of the Python standard library on this machine: real code that
/// nobody here wrote, present wherever `python3` is.
pub fn python_stdlib_file(module: &str) -> String {
    let output = Command::new("python3")
        .args(["-c", &format!("import {module}; print({module}.__file__)")])
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "python3 cannot import {module}");
    String::from_utf8(output.stdout)
        .expect("utf-8 path")
        .trim()
        .to_owned()
}

/// The `q` quantile (0..=1) of `values`, which must be sorted and non-empty.
pub fn quantile(values: &[Duration], q: f64) -> Duration {
    values[((values.len() - 1) as f64 * q).round() as usize]
}
