//! The suite end to end, through the real binary: every experiment at the tiny scale, valid
//! JSON, non-empty charts and a report; `report` redraws the same files from the JSON alone;
//! `compare` passes a run against itself and flags a planted regression.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_pushbench");

fn pushbench(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("PUSHBENCH_LOG", "error")
        .output()
        .expect("the pushbench binary runs")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pushbench-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path, ext));
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Copies only the JSON files of a suite run, keeping their layout.
fn copy_json(from: &Path, to: &Path) {
    for path in files(from, "json") {
        let rel = path.strip_prefix(from).unwrap();
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&path, dest).unwrap();
    }
}

/// `[faults]`: with resume, a mass drop loses and duplicates nothing and every subscriber
/// comes back; a restart tells every subscriber of the new life; the server cuts every stalled
/// streaming reader, counts it, and neither grows nor slows the others past the bounds.
fn check_faults(runs: &[serde_json::Value]) {
    let faults: Vec<_> = runs
        .iter()
        .filter(|r| r["experiment"] == "faults")
        .collect();
    assert_eq!(faults.len(), 5 * 4, "{faults:?}");
    for r in faults {
        let f = &r["fault"];
        let kind = f["fault"].as_str().unwrap();
        let streaming = !matches!(r["transport"].as_str(), Some("poll" | "longpoll"));
        assert_eq!(
            (&r["duplicates"], &r["out_of_order"]),
            (&0.into(), &0.into()),
            "{r}"
        );
        match kind {
            "drop_fixed" | "drop_jitter" => {
                assert_eq!(r["lost"], 0, "{r}");
                assert!(f["back_99_s"].as_f64().is_some(), "never back: {r}");
                assert!(
                    f["reconnects"].as_u64() >= r["clients_connected"].as_u64(),
                    "{r}"
                );
                assert!(f["peak_reconnects_per_s"].as_f64().unwrap() > 0.0, "{r}");
            }
            "restart" => {
                assert_eq!(f["resets"], r["clients_connected"], "{r}");
                assert!(f["restart_s"].as_f64().unwrap() > 0.0, "{r}");
                assert!(
                    f["server_rss_peak"].as_u64().unwrap() > 0,
                    "new life unsampled: {r}"
                );
                if streaming {
                    // What a push subscriber had not been sent when the server died is all
                    // it can lose, and at this scale that is nothing.
                    assert_eq!(r["lost"], 0, "{r}");
                }
            }
            "stall" => {
                let st = &f["stall"];
                assert_eq!(r["lost"], 0, "the readers lost events: {r}");
                if streaming {
                    assert_eq!(st["cut_by_server"], st["stalled"], "{r}");
                    assert!(
                        st["write_timeouts"].as_u64() >= st["stalled"].as_u64(),
                        "{r}"
                    );
                }
                let rss = f["server_rss_peak"].as_f64().unwrap()
                    / f["server_rss_before"].as_f64().unwrap();
                assert!(rss < 1.5, "RSS grew {rss}x: {r}");
            }
            other => panic!("unknown fault {other}"),
        }
    }
}

#[test]
fn suite_report_and_compare_end_to_end() {
    let dir = temp_dir("suite");
    let out = pushbench(&[
        "suite",
        "--scale",
        "tiny",
        "--quiet",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));

    // Every load report is valid against the published schema, with no loss where none may be.
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../docs/load.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let reports: Vec<_> = files(&dir, "json")
        .into_iter()
        .filter(|p| p.file_name().unwrap() != "summary.json")
        .collect();
    assert!(reports.len() >= 30, "only {} load reports", reports.len());
    for path in &reports {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let errors: Vec<_> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        assert!(v["delivered"].as_u64().unwrap() > 0 || v["config"]["rate"] == 0.0);
    }

    // The summary covers every experiment and transport.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["schema"], "pushbench-suite/1");
    assert_eq!(summary["experiments"].as_array().unwrap().len(), 11);
    assert!(summary["floor"]["rtt_ns"]["p50"].as_u64().unwrap() > 0);
    // The floor paced at [latency]'s rate: one ping per event, 10 ms apart.
    let paced = &summary["floor"]["paced_rtt_ns"];
    assert!(paced["p50"].as_u64().unwrap() > 0, "{}", summary["floor"]);
    assert!(paced["count"].as_u64().unwrap() >= 10);
    assert_eq!(summary["floor"]["paced_interval_us"], 10_000);
    // [fanout]'s physical limit: one entry per size, every frame read once.
    let params = &summary["params"];
    let sizes: Vec<u64> = params["fanout_clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    let limit = summary["fanout_floor"].as_array().unwrap();
    assert_eq!(limit.len(), sizes.len(), "{limit:?}");
    let events = params["fanout_floor_events"].as_u64().unwrap();
    for (f, n) in limit.iter().zip(&sizes) {
        assert_eq!(f["sockets"].as_u64(), Some(*n), "{f}");
        assert_eq!(f["deliveries"].as_u64(), Some(n * events), "{f}");
        assert_eq!(f["latency_ns"]["count"].as_u64(), Some(n * events), "{f}");
        assert_eq!(f["missing"], 0, "{f}");
        assert!(f["latency_ns"]["p50"].as_u64().unwrap() > 0, "{f}");
        assert!(f["cpu_ms_per_1k"].as_f64().unwrap() > 0.0, "{f}");
    }
    // [latency]'s independent client, for SSE and the stream.
    let crosscheck = summary["crosscheck"].as_array().unwrap();
    let modes: Vec<_> = crosscheck.iter().map(|c| c["transport"].clone()).collect();
    assert_eq!(
        modes,
        [serde_json::json!("stream"), serde_json::json!("sse")]
    );
    for c in crosscheck {
        assert_eq!(c["events"], params["crosscheck_events"], "{c}");
        assert!(c["latency_us"]["p50"].as_u64().unwrap() > 0, "{c}");
    }
    assert_eq!(summary["upstream"].as_array().unwrap().len(), 4);
    assert_eq!(summary["failures"], serde_json::json!([]), "{}", text(&out));
    let runs = summary["runs"].as_array().unwrap();
    for e in [
        "latency",
        "fanout",
        "capacity",
        "throughput",
        "polling",
        "coherence",
        "idle",
        "gateway",
        "faults",
    ] {
        assert!(runs.iter().any(|r| r["experiment"] == e), "no {e} run");
    }
    check_faults(runs);
    for r in runs.iter().filter(|r| r["experiment"] == "fanout") {
        assert_eq!(r["lost"], 0, "fan-out lost events: {r}");
        assert_eq!(r["duplicates"], 0);
    }
    // [gateway]: unicast and topic fan-out through the gateway deliver everything once; the
    // offline runs miss only what the gateway counted as expired or collapsed.
    let via: Vec<_> = runs.iter().filter(|r| r["server"] == "gateway").collect();
    assert_eq!(via.len(), 5, "gateway runs: {via:?}");
    for r in &via {
        let g = &r["gateway"]["summary"];
        let counted = g["server"]["expired"].as_i64().unwrap()
            + g["server"]["collapsed"].as_i64().unwrap()
            + g["server"]["overflowed"].as_i64().unwrap();
        assert_eq!(r["lost"].as_i64().unwrap(), counted, "{r}");
        assert_eq!(
            (r["duplicates"].as_u64(), r["out_of_order"].as_u64()),
            (Some(0), Some(0)),
            "{r}"
        );
        let label = r["label"].as_str().unwrap();
        if label.starts_with("offline") {
            assert!(g["held_expected"].as_u64().unwrap() > 0, "{r}");
            assert!(g["held_delivered"].as_u64().unwrap() > 0, "{r}");
        } else {
            assert_eq!(r["lost"], 0, "{r}");
        }
    }

    // Charts: one SVG and one PNG each, with content.
    let svgs = files(&dir, "svg");
    let pngs = files(&dir, "png");
    assert!(svgs.len() >= 9, "charts: {svgs:?}");
    assert_eq!(svgs.len(), pngs.len());
    for svg in &svgs {
        let body = std::fs::read_to_string(svg).unwrap();
        assert!(
            body.contains("<svg") && body.contains("<text") && body.len() > 4_000,
            "{} looks empty",
            svg.display()
        );
    }
    for png in &pngs {
        let body = std::fs::read(png).unwrap();
        assert!(
            body.starts_with(b"\x89PNG") && body.len() > 10_000,
            "{}",
            png.display()
        );
    }
    let report = std::fs::read_to_string(dir.join("REPORT.md")).unwrap();
    for reading in [
        "the paced TCP floor",
        "**Physical limit.**",
        "An independent client",
    ] {
        assert!(report.contains(reading), "REPORT.md lacks {reading:?}");
    }
    let fanout_chart = std::fs::read_to_string(dir.join("fanout-p99.svg")).unwrap();
    assert!(fanout_chart.contains("physical limit (raw write(2))"));
    for section in [
        "## Environment",
        "## Method",
        "## Summary",
        "## Caveats",
        "### [floor]",
        "### [gateway]",
        "### [idle]",
    ] {
        assert!(report.contains(section), "REPORT.md lacks {section}");
    }
    for svg in &svgs {
        let name = svg.file_name().unwrap().to_str().unwrap();
        assert!(
            report.contains(&format!("]({name})")),
            "{name} not embedded"
        );
    }

    // `report` redraws the same files from the JSON alone.
    let again = temp_dir("report");
    copy_json(&dir, &again);
    let out = pushbench(&["report", again.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    for path in files(&dir, "svg")
        .into_iter()
        .chain(files(&dir, "png"))
        .chain([dir.join("REPORT.md")])
    {
        let name = path.file_name().unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(again.join(name)).unwrap(),
            "{} differs when redrawn",
            name.to_string_lossy()
        );
    }

    // `compare`: a run against itself passes ...
    let out = pushbench(&["compare", dir.to_str().unwrap(), again.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("divided by the median change"));

    // ... and a planted regression fails it: SSE's fan-out p99 made 3× worse.
    let mut planted = summary.clone();
    let runs = planted["runs"].as_array_mut().unwrap();
    let top = runs
        .iter()
        .filter(|r| r["experiment"] == "fanout" && r["transport"] == "sse")
        .map(|r| r["clients"].as_u64().unwrap())
        .max()
        .unwrap();
    for r in runs.iter_mut() {
        if r["experiment"] == "fanout" && r["transport"] == "sse" && r["clients"] == top {
            let p99 = r["latency_us"]["p99"].as_u64().unwrap();
            r["latency_us"]["p99"] = (p99 * 3).into();
        }
    }
    // Compares the run with a planted copy of its summary.
    let compare_planted = |planted: &serde_json::Value| {
        std::fs::write(
            again.join("summary.json"),
            serde_json::to_string(planted).unwrap(),
        )
        .unwrap();
        pushbench(&["compare", dir.to_str().unwrap(), again.to_str().unwrap()])
    };
    let out = compare_planted(&planted);
    assert!(!out.status.success(), "{}", text(&out));
    // The ratio row of `metric` for `who` in compare's output.
    let row = |out: &std::process::Output, metric: &str, who: &str| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.contains(metric) && l.contains(who) && l.contains('×'))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        row(&out, "fanout_p99_ms", "sse").ends_with("MOVED"),
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("moved against the other techniques past")
    );
    // The gateway's ratio to direct WebSocket is checked too: in the same planted summary its
    // fan-out was not touched, so that row passes.
    assert!(
        row(&out, "gateway_fanout_p99", "gateway").ends_with("ok"),
        "{}",
        text(&out)
    );
    // ... and a gateway fan-out made 3× worse moves it.
    for r in planted["runs"].as_array_mut().unwrap() {
        if r["server"] == "gateway" && r["label"].as_str().unwrap().starts_with("topic-") {
            let p99 = r["latency_us"]["p99"].as_u64().unwrap();
            r["latency_us"]["p99"] = (p99 * 3).into();
        }
    }
    let out = compare_planted(&planted);
    assert!(
        row(&out, "gateway_fanout_p99", "gateway").ends_with("MOVED"),
        "{}",
        text(&out)
    );

    // A machine 1.5× slower moves every push technique's latency, but not short polling's,
    // which its poll interval sets: nothing moved against the others. (Judged against the
    // median, short polling's would have read 0.67× and been flagged.)
    let mut slower = summary.clone();
    for r in slower["runs"].as_array_mut().unwrap() {
        if r["experiment"] == "latency" && r["transport"] != "poll" {
            let p50 = r["latency_us"]["p50"].as_u64().unwrap();
            r["latency_us"]["p50"] = (p50 * 3 / 2).into();
        }
    }
    let out = compare_planted(&slower);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        row(&out, "latency_p50_ms", "poll").ends_with("ok"),
        "{}",
        text(&out)
    );

    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&again).unwrap();
}

#[test]
fn bad_suite_arguments_fail_with_one_line() {
    let out = pushbench(&["suite", "--only", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown experiment"));
    let dir = temp_dir("empty");
    let out = pushbench(&["report", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("summary.json") && err.lines().count() == 1,
        "{err}"
    );
    std::fs::write(dir.join("summary.json"), "{\"schema\":\"other/9\"}").unwrap();
    let out = pushbench(&["compare", dir.to_str().unwrap(), dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("other/9"));
    let out = pushbench(&[
        "compare",
        "--tolerance",
        "-1",
        dir.to_str().unwrap(),
        dir.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_interrupted_suite_still_writes_what_ran() {
    let dir = temp_dir("interrupt");
    let child = Command::new(BIN)
        .args(["suite", "--scale", "tiny", "--quiet", "--out"])
        .arg(&dir)
        .env("PUSHBENCH_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Past the floor and into the load runs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !dir.join("latency").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["interrupted"], true);
    assert!(summary["floor"].is_object());
    assert!(dir.join("REPORT.md").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
