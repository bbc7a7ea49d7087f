//! How numbers read on the console, in one place: as Portuguese writes them.
//!
//! A decimal comma (`2,5 MiB`, `0,04 s`), a dot between thousands (`9.873`, `1.048.576`),
//! a space between a number and its unit (`13 B`, `31 s`), binary units for sizes
//! (`KiB`, `MiB`, ...). Every console line a person reads — progress bars, download summaries,
//! upload requests, SEARCH and LIST results, `PARCIAIS`, `FONTES`, the tracker's counts — is
//! formatted here, so one style holds everywhere. Log lines (`RUST_LOG`, English diagnostics)
//! keep Rust's own formatting.

use std::time::Duration;

/// `n` with a dot between thousands: `9.873`, `1.048.576`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('.');
        }
        out.push(d);
    }
    out
}

/// `value` with `places` decimals after a comma, thousands dotted: `2,5`, `1.023,9`, `0,04`.
pub fn decimal(value: f64, places: usize) -> String {
    let value = if value.is_finite() {
        value.max(0.0)
    } else {
        0.0
    };
    let text = format!("{value:.places$}");
    match text.split_once('.') {
        Some((whole, fraction)) => {
            let whole = whole.parse::<u64>().map_or(whole.to_string(), thousands);
            format!("{whole},{fraction}")
        }
        None => text.parse::<u64>().map_or(text.clone(), thousands),
    }
}

/// The binary units after bytes.
const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];

/// A size or an amount of bytes: `512 B`, `12,0 KiB`, `1,8 GiB`.
pub fn human_bytes(bytes: f64) -> String {
    match scaled(bytes) {
        None => format!("{} B", thousands(bytes.max(0.0) as u64)),
        Some((value, unit)) => format!("{} {unit}", decimal(value, 1)),
    }
}

/// A size in bytes, in [`human_bytes`]' style.
pub fn human_size(bytes: u64) -> String {
    human_bytes(bytes as f64)
}

/// A rate: `310,2 MiB/s`.
pub fn human_rate(bytes_per_second: f64) -> String {
    format!("{}/s", human_bytes(bytes_per_second))
}

/// `bytes` in the largest binary unit that keeps it at 1 or more, or `None` under 1 KiB.
fn scaled(bytes: f64) -> Option<(f64, &'static str)> {
    if bytes.is_nan() || bytes < 1024.0 {
        return None;
    }
    let mut value = bytes / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    // 1023.96 KiB would print as `1024,0 KiB`: the next unit reads better.
    if format!("{value:.1}") == "1024.0" && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    Some((value, UNITS[unit]))
}

/// `1,8/4,0 GiB`: what is done of a total, both in the total's unit.
pub fn done_of_total(done: u64, total: u64) -> String {
    match scaled(total as f64) {
        None => format!("{}/{} B", thousands(done), thousands(total)),
        Some((value, unit)) => {
            let scale = total as f64 / value;
            format!(
                "{}/{} {unit}",
                decimal(done as f64 / scale, 1),
                decimal(value, 1)
            )
        }
    }
}

/// A time to come, in whole seconds rounded up: `7 s`, `2 min 05 s`, `1 h 02 min`.
pub fn human_duration(seconds: f64) -> String {
    let s = if seconds.is_finite() {
        seconds.max(0.0).ceil() as u64
    } else {
        0
    };
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", thousands(s / 3600), (s % 3600) / 60),
    }
}

/// How long something took: `0,04 s`, `12,3 s`, then as [`human_duration`]; a whole number
/// of seconds (a timeout, not a measure) as such: `15 s`.
pub fn elapsed_text(elapsed: Duration) -> String {
    let s = elapsed.as_secs_f64();
    if elapsed.subsec_nanos() == 0 {
        human_duration(s)
    } else if s < 1.0 {
        format!("{} s", decimal(s, 2))
    } else if s < 60.0 {
        format!("{} s", decimal(s, 1))
    } else {
        human_duration(s)
    }
}

/// `1 arquivo`, `9.873 arquivos`: a count with its noun in the right number.
pub fn count(n: u64, singular: &str, plural: &str) -> String {
    if n == 1 {
        format!("1 {singular}")
    } else {
        format!("{} {plural}", thousands(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_use_dots() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(9_873), "9.873");
        assert_eq!(thousands(1_234_567), "1.234.567");
    }

    #[test]
    fn decimals_use_a_comma() {
        assert_eq!(decimal(2.5, 1), "2,5");
        assert_eq!(decimal(0.044, 2), "0,04");
        assert_eq!(decimal(1023.94, 1), "1.023,9");
        assert_eq!(decimal(15.0, 0), "15");
        assert_eq!(decimal(f64::NAN, 1), "0,0");
    }

    /// Sizes, rates and progress in one style: a comma, a space before the unit.
    #[test]
    fn sizes_rates_and_progress_read_the_same() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_size(3 << 20), "3,0 MiB");
        assert_eq!(human_size(2_621_440), "2,5 MiB");
        assert_eq!(human_size((1 << 20) - 20), "1,0 MiB");
        assert_eq!(human_rate(310.2 * 1048576.0), "310,2 MiB/s");
        assert_eq!(done_of_total(1 << 30, 4 << 30), "1,0/4,0 GiB");
        assert_eq!(done_of_total(5, 13), "5/13 B");
        assert_eq!(done_of_total(128 << 20, 256 << 20), "128,0/256,0 MiB");
    }

    #[test]
    fn durations_have_a_space_before_the_unit() {
        assert_eq!(human_duration(30.5), "31 s");
        assert_eq!(human_duration(125.0), "2 min 05 s");
        assert_eq!(human_duration(3720.0), "1 h 02 min");
        assert_eq!(elapsed_text(Duration::from_millis(40)), "0,04 s");
        assert_eq!(elapsed_text(Duration::from_millis(2345)), "2,3 s");
        assert_eq!(elapsed_text(Duration::from_millis(15_020)), "15,0 s");
        assert_eq!(elapsed_text(Duration::from_secs(15)), "15 s");
    }

    #[test]
    fn counts_agree_in_number() {
        assert_eq!(count(1, "arquivo", "arquivos"), "1 arquivo");
        assert_eq!(count(0, "arquivo", "arquivos"), "0 arquivos");
        assert_eq!(count(9_873, "linha", "linhas"), "9.873 linhas");
    }
}
