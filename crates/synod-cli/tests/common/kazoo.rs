//! Running the kazoo scripts of `tests/zk/` with a Python that has kazoo.

use super::run;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `SYNOD_KAZOO_PYTHON`, else the venv `.ci/run` makes
/// (`target/kazoo-venv`), else `python3`.
pub fn kazoo_python() -> String {
    if let Ok(python) = std::env::var("SYNOD_KAZOO_PYTHON") {
        return python;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/kazoo-venv/bin/python");
    if venv.exists() {
        return venv.display().to_string();
    }
    "python3".into()
}

/// The script `name` of `tests/zk/`.
pub fn zk_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/zk")
        .join(name)
}

/// A command running the kazoo script `script` (unbuffered output).
pub fn kazoo_command(script: &str) -> Command {
    let mut cmd = Command::new(kazoo_python());
    cmd.arg(zk_script(script))
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

/// Runs a kazoo script to completion; panics with its output unless it
/// succeeded and printed `ok: NAME` for each of `checks`.
pub fn kazoo(script: &str, args: &[&str], checks: &[&str], limit: Duration) -> String {
    let out = run(kazoo_command(script).args(args), limit);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{script} {args:?} failed ({}):\n{text}",
        out.status
    );
    for check in checks {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("ok: {check} "))),
            "{script}: no `ok: {check}` line:\n{text}"
        );
    }
    text
}
