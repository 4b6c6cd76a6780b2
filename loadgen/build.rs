//! Records the git revision and compiler version, so every report says what produced it.

use std::process::Command;

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn main() {
    let rev = run("git", &["rev-parse", "--short=12", "HEAD"]).map(|rev| {
        let dirty = run("git", &["status", "--porcelain", "--untracked-files=no"]).is_some();
        if dirty {
            format!("{rev}-dirty")
        } else {
            rev
        }
    });
    println!(
        "cargo:rustc-env=PUSHBENCH_GIT_REV={}",
        rev.unwrap_or_else(|| "unknown".into())
    );
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    println!(
        "cargo:rustc-env=PUSHBENCH_RUSTC={}",
        run(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into())
    );
    for path in ["../.git/HEAD", "../.git/index"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
