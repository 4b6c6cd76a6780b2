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
    // Run again whenever the revision or the tree may have moved, so a report never names a
    // commit other than the one its binary was built from: the ref HEAD points at (a commit
    // moves it, not HEAD itself), the index (a `git add`), and every source folder of the
    // workspace (an edit not yet added makes the build `-dirty`). Watching only HEAD and the
    // index, a binary built from edits committed later called itself the commit before.
    let mut watch: Vec<String> = ["HEAD", "index", "packed-refs"]
        .iter()
        .filter_map(|p| run("git", &["rev-parse", "--git-path", p]))
        .collect();
    if let Some(head_ref) = run("git", &["symbolic-ref", "-q", "HEAD"]) {
        watch.extend(run("git", &["rev-parse", "--git-path", &head_ref]));
    }
    for dir in [
        "src",
        "protocol/src",
        "servers/src",
        "loadgen/src",
        "suite/src",
        "benches",
        "Cargo.toml",
    ] {
        watch.push(format!("../{dir}"));
    }
    for path in watch {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
