//! A process's figures from `/proc` (Linux): threads, resident memory, CPU time; and the
//! open-files limit, which a node with thousands of instances may need raised.

use std::io;
use std::time::{Duration, Instant};

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it was read.
    pub at: Instant,
    /// `Threads` of `/proc/<pid>/status`.
    pub threads: u64,
    /// `VmRSS` of `/proc/<pid>/status`, in bytes.
    pub rss: u64,
    /// User plus system CPU time (`utime + stime` of `/proc/<pid>/stat`).
    pub cpu: Duration,
}

impl Sample {
    /// Reads process `pid` now.
    ///
    /// # Errors
    /// The process is gone, or `/proc` is not what Linux writes.
    pub fn read(pid: u32) -> io::Result<Sample> {
        let at = Instant::now();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> io::Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| invalid(format!("/proc/{pid}/status: no {name}")))
        };
        let threads = field("Threads:")?;
        let rss = field("VmRSS:")? * 1024;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // The command name (field 2) is in parentheses and may contain spaces: count the
        // fields from the last `)`. After it, field 3 (state) comes first; utime and stime
        // are fields 14 and 15.
        let after = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .ok_or_else(|| invalid(format!("/proc/{pid}/stat: {stat:.60}")))?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| -> io::Result<u64> {
            fields
                .get(i)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| invalid(format!("/proc/{pid}/stat: field {}", i + 3)))
        };
        let total = ticks(11)? + ticks(12)?;
        let cpu = Duration::from_secs_f64(total as f64 / clock_ticks() as f64);
        Ok(Sample {
            at,
            threads,
            rss,
            cpu,
        })
    }

    /// CPU used between `self` and the later `end`, in cores (1.0: one core busy).
    pub fn cores_until(&self, end: &Sample) -> f64 {
        let wall = end.at.duration_since(self.at).as_secs_f64();
        (end.cpu.saturating_sub(self.cpu)).as_secs_f64() / wall.max(1e-9)
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of `/proc/<pid>/stat` times.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf reads a constant of the system; it has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// Raises this process's soft limit of open files to its hard limit (children inherit it);
/// the `(soft, hard)` limits after.
///
/// # Errors
/// `getrlimit` or `setrlimit` failed.
pub fn raise_open_files_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit whose soft value does not exceed its hard one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((limit.rlim_cur as u64, limit.rlim_max as u64))
}

/// Open file descriptors of process `pid` (entries of `/proc/<pid>/fd`).
///
/// # Errors
/// The process is gone or its `fd` folder cannot be read.
pub fn open_files(pid: u32) -> io::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let s = Sample::read(std::process::id()).unwrap();
        assert!(s.threads >= 1);
        assert!(s.rss > 1024 * 1024, "{s:?}");
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(300) {
            std::hint::black_box(spin.elapsed());
        }
        let e = Sample::read(std::process::id()).unwrap();
        assert!(e.cpu > s.cpu, "{s:?} {e:?}");
        assert!(s.cores_until(&e) > 0.2, "{}", s.cores_until(&e));
    }
}
