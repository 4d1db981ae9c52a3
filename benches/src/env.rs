//! What a result was measured on, printed at the top of every harness's output: date,
//! CPU, cores, load, kernel, compiler, build profile, and the file system under the
//! data, whose flushes [`FlushCounter`] counts.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The compiler that built this crate (recorded by the build script).
pub const RUSTC: &str = env!("TERN_BENCHES_RUSTC");

/// `release` when built without debug assertions (`--release`), else `debug`.
pub fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug (numbers are not meaningful; use --release)"
    } else {
        "release"
    }
}

/// The number of CPUs this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// `(name, value)` lines describing the machine and the build. Linux details come from
/// `/proc` and are `unknown` elsewhere.
pub fn describe(data_dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("date (UTC)", utc_now()),
        ("cpu", cpu_model()),
        ("cores available", cores().to_string()),
        ("kernel", proc_line("/proc/sys/kernel/osrelease")),
        ("load average (1, 5, 15 min) at the start", load_average()),
        ("rustc", RUSTC.to_owned()),
        ("build profile", profile().to_owned()),
        ("data directory", data_dir.display().to_string()),
        ("its file system", file_system(data_dir)),
    ]
}

/// The first three fields of `/proc/loadavg`: other work on the machine skews results.
fn load_average() -> String {
    let line = proc_line("/proc/loadavg");
    let fields: Vec<&str> = line.split_whitespace().take(3).collect();
    if fields.len() == 3 {
        fields.join(", ")
    } else {
        line
    }
}

fn proc_line(path: &str) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.trim().to_owned()))
        .unwrap_or_else(|| "unknown".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The mount point and type of the file system holding `path`.
fn file_system(path: &Path) -> String {
    mount_of(path).map_or_else(
        || "unknown".into(),
        |m| format!("{} on {} (mounted at {})", m.kind, m.device, m.point),
    )
}

/// One line of `/proc/mounts`.
struct Mount {
    device: String,
    point: String,
    kind: String,
}

/// The mount holding `path`: the longest matching mount point in `/proc/mounts`.
fn mount_of(path: &Path) -> Option<Mount> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let device = fields.next()?;
            let point = fields.next()?;
            let kind = fields.next()?;
            path.starts_with(point).then(|| Mount {
                device: device.to_owned(),
                point: point.to_owned(),
                kind: kind.to_owned(),
            })
        })
        .max_by_key(|m| m.point.len())
}

/// The block device under a directory, whose cache flushes (what `fsync` costs on
/// most file systems) can be counted in `/proc/diskstats`. The counter is the whole
/// device's: other processes' flushes are counted too.
#[derive(Debug, Clone)]
pub struct FlushCounter {
    device: String,
}

impl FlushCounter {
    /// The counter of the device holding `dir`; `None` when there is none (a memory
    /// file system) or the kernel does not report flushes.
    pub fn for_dir(dir: &Path) -> Option<Self> {
        let mount = mount_of(dir)?;
        let device = mount.device.strip_prefix("/dev/")?.to_owned();
        let counter = Self { device };
        counter.read().map(|_| counter)
    }

    /// The device's name, e.g. `vda`.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Flush requests the device has completed since boot (field 16 of its line in
    /// `/proc/diskstats`, Linux 5.5 and later).
    pub fn read(&self) -> Option<u64> {
        let stats = std::fs::read_to_string("/proc/diskstats").ok()?;
        stats.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(2) != Some(&self.device.as_str()) {
                return None;
            }
            fields.get(3 + 15)?.parse().ok()
        })
    }
}

/// The current UTC date and time, `YYYY-MM-DD HH:MM`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// Formats Unix seconds as a UTC `YYYY-MM-DD HH:MM`.
fn format_utc(secs: u64) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| format!("{secs} s"))
}

/// The command that reproduces this run of the benchmark binary `bin`, with its arguments
/// quoted for a POSIX shell.
pub fn command_line(bin: &str) -> String {
    let profile = if cfg!(debug_assertions) {
        ""
    } else {
        " --release"
    };
    let mut line = format!("cargo run{profile} -p tern-benches --bin {bin} --");
    for arg in std::env::args().skip(1) {
        let plain = !arg.is_empty()
            && arg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.,/=".contains(c));
        if plain {
            line.push(' ');
            line.push_str(&arg);
        } else {
            line.push_str(&format!(" '{}'", arg.replace('\'', r"'\''")));
        }
    }
    line
}

/// A count above zero, for command-line arguments.
pub fn positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be above 0".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Whole seconds above zero, for command-line arguments.
pub fn seconds(text: &str) -> Result<std::time::Duration, String> {
    positive(text).map(|n| std::time::Duration::from_secs(n as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00");
        assert_eq!(format_utc(1_709_210_096), "2024-02-29 12:34");
        assert_eq!(format_utc(1_767_225_599), "2025-12-31 23:59");
    }
}
