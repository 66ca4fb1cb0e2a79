//! The standard `process_*` metrics (CPU seconds, resident memory, open and maximum file
//! descriptors, threads, start time), read from `/proc/self` at scrape time (Linux).

use std::fs;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge};

/// What `/proc/self` says about this process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct ProcessSample {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub virtual_bytes: f64,
    pub threads: f64,
    pub start_time_seconds: f64,
    pub open_fds: f64,
    pub max_fds: f64,
}

/// Parses the fields of `/proc/self/stat` after the command name.
fn parse_stat(
    stat: &str,
    ticks_per_sec: f64,
    page_size: f64,
    boot_time: f64,
) -> Option<ProcessSample> {
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field numbers of proc(5) minus 3 (pid, comm and state come before `rest`'s index 1).
    let get = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    Some(ProcessSample {
        cpu_seconds: (get(14)? + get(15)?) / ticks_per_sec,
        threads: get(20)?,
        start_time_seconds: boot_time + get(22)? / ticks_per_sec,
        virtual_bytes: get(23)?,
        resident_bytes: get(24)? * page_size,
        ..ProcessSample::default()
    })
}

fn boot_time() -> Option<f64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn max_fds() -> f64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur as f64
    } else {
        0.0
    }
}

/// A sample of this process now, if `/proc` is there.
pub(super) fn sample() -> Option<ProcessSample> {
    // SAFETY: sysconf only reads system configuration.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    let mut sample = parse_stat(&stat, ticks.max(1) as f64, page.max(1) as f64, boot_time()?)?;
    sample.open_fds = fs::read_dir("/proc/self/fd").ok()?.count() as f64;
    sample.max_fds = max_fds();
    Some(sample)
}

pub(super) struct ProcessCollector {
    descs: Vec<Desc>,
}

/// (name, help, is a counter, reader).
type Field = (&'static str, &'static str, bool, fn(&ProcessSample) -> f64);

const FIELDS: &[Field] = &[
    (
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds",
        true,
        |s| s.cpu_seconds,
    ),
    (
        "process_resident_memory_bytes",
        "Resident memory size in bytes",
        false,
        |s| s.resident_bytes,
    ),
    (
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes",
        false,
        |s| s.virtual_bytes,
    ),
    (
        "process_open_fds",
        "Number of open file descriptors",
        false,
        |s| s.open_fds,
    ),
    (
        "process_max_fds",
        "Maximum number of open file descriptors",
        false,
        |s| s.max_fds,
    ),
    (
        "process_threads",
        "Number of OS threads in the process",
        false,
        |s| s.threads,
    ),
    (
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch in seconds",
        false,
        |s| s.start_time_seconds,
    ),
];

fn family(field: &Field, sample: &ProcessSample) -> Option<MetricFamily> {
    let (name, help, is_counter, read) = field;
    if *is_counter {
        let counter = Counter::new(*name, *help).ok()?;
        counter.inc_by(read(sample).max(0.0));
        counter.collect().into_iter().next()
    } else {
        let gauge = Gauge::new(*name, *help).ok()?;
        gauge.set(read(sample));
        gauge.collect().into_iter().next()
    }
}

impl ProcessCollector {
    pub(super) fn new() -> prometheus::Result<Self> {
        let mut descs = Vec::new();
        for (name, help, _, _) in FIELDS {
            descs.extend(Gauge::new(*name, *help)?.desc().into_iter().cloned());
        }
        Ok(Self { descs })
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(sample) = sample() else {
            return Vec::new();
        };
        FIELDS.iter().filter_map(|f| family(f, &sample)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        // A command name with spaces and a ')' must not shift the fields.
        let stat = "4242 (hub cache) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 150 0 0 20 0 7 0 1000 123456789 2048 18446744073709551615";
        let s = parse_stat(stat, 100.0, 4096.0, 1_700_000_000.0).unwrap();
        assert_eq!(s.cpu_seconds, 4.0);
        assert_eq!(s.threads, 7.0);
        assert_eq!(s.start_time_seconds, 1_700_000_010.0);
        assert_eq!(s.virtual_bytes, 123_456_789.0);
        assert_eq!(s.resident_bytes, 2048.0 * 4096.0);
    }

    #[test]
    fn this_process_is_sampled() {
        let s = sample().expect("/proc/self is readable");
        assert!(s.resident_bytes > 0.0 && s.open_fds >= 3.0 && s.max_fds >= s.open_fds);
        assert!(s.threads >= 1.0 && s.start_time_seconds > 1.0e9);
    }
}
