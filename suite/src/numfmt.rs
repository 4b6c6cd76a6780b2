//! How numbers read in the report, the charts and `compare`: about three significant figures,
//! milliseconds, intervals. At the bottom of the suite, so every page can use it.

/// µs as `1.23 ms`.
pub fn fmt_ms(us: f64) -> String {
    format!("{} ms", fmt_value(us / 1000.0))
}

/// Formats a value to about three significant figures.
pub fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{:.0}", v)
    } else if a >= 10.0 {
        format!("{:.1}", v)
    } else if a >= 1.0 {
        format!("{:.2}", v)
    } else {
        format!("{:.3}", v)
    }
}

/// `0.1` → `100 ms`, `2` → `2 s`.
pub fn fmt_interval(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.0} ms", secs * 1000.0)
    } else if secs.fract() == 0.0 {
        format!("{secs:.0} s")
    } else {
        format!("{} s", fmt_value(secs))
    }
}
