//! Facts about this process that tests and benches report: its resident memory.
//!
//! Read from Linux's `/proc/self/status`; elsewhere the functions return `None`.

/// A `/proc/self/status` field in bytes (`VmHWM`: peak resident set, `VmRSS`: current).
pub fn status_bytes(field: &str) -> Option<u64> {
    let field = field.trim_end_matches(':');
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find(|l| l.split(':').next() == Some(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Peak resident set of this process so far, in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    status_bytes("VmHWM")
}

/// Peak resident set of this process so far, in MB, or an error saying it cannot be read
/// here: a memory test that cannot measure must fail, not pass.
pub fn peak_rss_mb() -> Result<f64, String> {
    peak_rss_bytes()
        .map(|b| b as f64 / (1024.0 * 1024.0))
        .ok_or_else(|| {
            "the peak resident set (VmHWM in /proc/self/status) cannot be read on this system, \
             so memory cannot be measured"
                .to_string()
        })
}

/// Resets the peak resident set to the current one (Linux 4.0+), so that a phase measures
/// its own peak; false where that is not possible.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_rss_reads_or_says_why_not() {
        match super::peak_rss_mb() {
            Ok(mb) => assert!(mb > 0.0),
            Err(e) => {
                assert!(!std::path::Path::new("/proc/self/status").exists());
                assert!(e.contains("cannot be read"), "{e}");
            }
        }
    }

    #[test]
    fn fields_parse_where_proc_exists() {
        if std::path::Path::new("/proc/self/status").exists() {
            // Linux updates VmHWM lazily, so it may trail VmRSS for a moment: both just > 0.
            assert!(super::peak_rss_bytes().is_some_and(|b| b > 0));
            assert!(super::status_bytes("VmRSS:").is_some_and(|b| b > 0));
            assert!(super::status_bytes("NoSuchField").is_none());
        }
    }
}
