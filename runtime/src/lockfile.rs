//! The single-instance lock: `<data_dir>/millwright.lock` holds the PID of the node that owns
//! the data directory.
//!
//! Acquiring:
//! 1. write our PID (and, on Linux, the process start time) to a private temp file, then
//!    hard-link it to `millwright.lock`: the link is atomic and fails if the lock exists
//!    (O_EXCL semantics), so nobody ever reads a half-written lock;
//! 2. if the lock exists, read its PID. When that process is alive (a racing or older
//!    instance), send it SIGTERM, wait up to 5 s for it to exit, then SIGKILL it. A PID that is
//!    dead, or alive but started after the lock was written (PID reuse), is stale;
//! 3. remove the stale lock (only if it still names the same owner) and try again.
//!
//! Releasing (on drop): the file is removed only if it still holds our PID, so a node that was
//! displaced by a newer instance never deletes the newcomer's lock.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "millwright.lock";

/// How long an older instance gets to exit after SIGTERM before it is sent SIGKILL.
pub const TERM_TIMEOUT: Duration = Duration::from_secs(5);

/// How many times a lock held by others is contested before giving up.
const MAX_ATTEMPTS: usize = 5;

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The data directory or lock file could not be created, read or removed.
    #[error("lock {path}: {source} (check that the data directory is writable)")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Another instance could not be displaced.
    #[error(
        "lock {path}: held by pid {pid}, which could not be stopped: {reason} (stop that process, or use another data_dir)"
    )]
    Held {
        /// The lock file.
        path: PathBuf,
        /// The owner's PID.
        pid: i32,
        /// Why it could not be stopped.
        reason: String,
    },
}

/// Who owns a lock: a PID and, where known, the owner's start time (clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    pid: i32,
    start_time: Option<u64>,
}

impl Owner {
    fn me() -> Self {
        let pid = std::process::id() as i32;
        Self {
            pid,
            start_time: process_start_time(pid),
        }
    }

    fn render(&self) -> String {
        match self.start_time {
            Some(t) => format!("{}\nstart_time={t}\n", self.pid),
            None => format!("{}\n", self.pid),
        }
    }

    fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        let pid = lines
            .next()?
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|p| *p > 0)?;
        let start_time = lines
            .filter_map(|l| l.trim().strip_prefix("start_time="))
            .find_map(|v| v.parse().ok());
        Some(Self { pid, start_time })
    }

    /// Whether this owner is still running (same PID and, when recorded, same start time).
    fn is_alive(&self) -> bool {
        if !pid_is_alive(self.pid) {
            return false;
        }
        match (self.start_time, process_start_time(self.pid)) {
            (Some(recorded), Some(now)) => recorded == now,
            _ => true,
        }
    }
}

/// Whether `pid` names a live, non-zombie process.
fn pid_is_alive(pid: i32) -> bool {
    match kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => !is_zombie(pid),
        Err(_) => false,
    }
}

/// `/proc/<pid>/stat` split after the command name (which may contain spaces and parens).
fn proc_stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// A zombie has exited but was not reaped yet; it counts as dead.
fn is_zombie(pid: i32) -> bool {
    proc_stat_fields(pid).is_some_and(|f| f.first().map(String::as_str) == Some("Z"))
}

/// The start time of `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`), where
/// the platform has it.
fn process_start_time(pid: i32) -> Option<u64> {
    // Fields after the command: state is field 3, so start time (22) is index 19.
    proc_stat_fields(pid)?.get(19)?.parse().ok()
}

/// The held lock. Dropping it removes the file if it still holds our PID.
#[derive(Debug)]
pub struct Lockfile {
    path: PathBuf,
    owner: Owner,
}

impl Lockfile {
    /// Takes the lock in `data_dir` (creating the directory), displacing a live older
    /// instance with SIGTERM and, after [`TERM_TIMEOUT`], SIGKILL. Waits (asynchronously) for
    /// a displaced instance to exit. The file operations are small and synchronous.
    ///
    /// # Errors
    /// [`LockError::Io`] when the directory or file cannot be used, [`LockError::Held`] when
    /// the owner cannot be stopped (e.g. it belongs to another user).
    pub async fn acquire(data_dir: &Path) -> Result<Self, LockError> {
        Self::acquire_with(data_dir, TERM_TIMEOUT).await
    }

    /// [`acquire`](Self::acquire) with a custom SIGTERM timeout (for tests).
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire).
    pub async fn acquire_with(data_dir: &Path, term_timeout: Duration) -> Result<Self, LockError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| LockError::Io { path, source }
        };
        fs::create_dir_all(data_dir).map_err(io(data_dir))?;
        let path = data_dir.join(LOCK_FILE);
        let me = Owner::me();
        let tmp = data_dir.join(format!(".{LOCK_FILE}.{}.tmp", me.pid));
        write_synced(&tmp, &me.render()).map_err(io(&tmp))?;
        let result = Self::contest(&path, &tmp, me, term_timeout).await;
        let _ = fs::remove_file(&tmp);
        result
    }

    async fn contest(
        path: &Path,
        tmp: &Path,
        me: Owner,
        term_timeout: Duration,
    ) -> Result<Self, LockError> {
        let mut last_holder = None;
        for _ in 0..MAX_ATTEMPTS {
            match fs::hard_link(tmp, path) {
                Ok(()) => {
                    tracing::info!(lock = %path.display(), pid = me.pid, "lock acquired");
                    return Ok(Self {
                        path: path.to_owned(),
                        owner: me,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(LockError::Io {
                        path: path.to_owned(),
                        source,
                    });
                }
            }
            let text = match fs::read_to_string(path) {
                Ok(t) => t,
                // Released between our link and our read: try again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(LockError::Io {
                        path: path.to_owned(),
                        source,
                    });
                }
            };
            let holder = Owner::parse(&text);
            match holder {
                Some(h) if h.pid == me.pid => {
                    // Our own PID from an earlier life of this process id: stale.
                    tracing::warn!(lock = %path.display(), "lock names our own pid; treating it as stale");
                }
                Some(h) if h.is_alive() => {
                    tracing::warn!(
                        lock = %path.display(),
                        pid = h.pid,
                        "another instance holds the lock; sending SIGTERM"
                    );
                    stop_process(h, term_timeout)
                        .await
                        .map_err(|reason| LockError::Held {
                            path: path.to_owned(),
                            pid: h.pid,
                            reason,
                        })?;
                }
                Some(h) => {
                    tracing::warn!(lock = %path.display(), pid = h.pid, "removing a stale lock (its process is gone)");
                }
                None => {
                    tracing::warn!(lock = %path.display(), "removing an unreadable lock");
                }
            }
            remove_if_unchanged(path, &text).map_err(|source| LockError::Io {
                path: path.to_owned(),
                source,
            })?;
            last_holder = holder;
        }
        Err(LockError::Held {
            path: path.to_owned(),
            pid: last_holder.map_or(0, |h| h.pid),
            reason: format!("the lock was retaken {MAX_ATTEMPTS} times in a row"),
        })
    }

    /// The PID of the live process holding the lock in `data_dir`, if any: how a tool knows
    /// that a node runs on a data dir (and must be reached through it, not the files).
    pub fn holder(data_dir: &Path) -> Option<i32> {
        let text = fs::read_to_string(data_dir.join(LOCK_FILE)).ok()?;
        let me = i32::try_from(std::process::id()).ok();
        Owner::parse(&text)
            .filter(|h| Some(h.pid) != me && h.is_alive())
            .map(|h| h.pid)
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the lock if it still holds our PID. Returns whether it did.
    pub fn release(self) -> bool {
        // Drop does the work; this only reports it.
        let ours = self.still_ours();
        drop(self);
        ours
    }

    fn still_ours(&self) -> bool {
        fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| Owner::parse(&t))
            .is_some_and(|o| o.pid == self.owner.pid)
    }
}

impl Drop for Lockfile {
    fn drop(&mut self) {
        if self.still_ours() {
            match fs::remove_file(&self.path) {
                Ok(()) => tracing::info!(lock = %self.path.display(), "lock released"),
                Err(e) => {
                    tracing::warn!(lock = %self.path.display(), error = %e, "could not remove the lock")
                }
            }
        } else {
            tracing::warn!(lock = %self.path.display(), "lock no longer holds our pid; leaving it");
        }
    }
}

fn write_synced(path: &Path, text: &str) -> io::Result<()> {
    let mut f = fs::File::create(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// Removes `path` if it still holds `expected`, so we never delete a lock someone else just
/// took.
fn remove_if_unchanged(path: &Path, expected: &str) -> io::Result<()> {
    match fs::read_to_string(path) {
        Ok(now) if now == expected => match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// SIGTERM, wait up to `term_timeout`, then SIGKILL and wait again.
async fn stop_process(owner: Owner, term_timeout: Duration) -> Result<(), String> {
    let pid = Pid::from_raw(owner.pid);
    if let Err(e) = kill(pid, Signal::SIGTERM) {
        if e == Errno::ESRCH {
            return Ok(());
        }
        return Err(format!("SIGTERM failed: {e}"));
    }
    if wait_gone(owner, term_timeout).await {
        return Ok(());
    }
    tracing::warn!(pid = owner.pid, timeout = ?term_timeout, "still running after SIGTERM; sending SIGKILL");
    match kill(pid, Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => return Err(format!("SIGKILL failed: {e}")),
    }
    if wait_gone(owner, Duration::from_secs(5)).await {
        Ok(())
    } else {
        Err("still running 5s after SIGKILL".to_owned())
    }
}

async fn wait_gone(owner: Owner, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !owner.is_alive() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn acquire_writes_our_pid_and_drop_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let lock = Lockfile::acquire(dir.path()).await.unwrap();
        let text = fs::read_to_string(lock.path()).unwrap();
        assert_eq!(Owner::parse(&text).unwrap().pid, std::process::id() as i32);
        let path = lock.path().to_owned();
        assert!(lock.release());
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn stale_lock_with_a_dead_pid_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        // A child that has exited and been reaped: its PID is dead.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        fs::write(dir.path().join(LOCK_FILE), format!("{dead}\n")).unwrap();
        let lock = Lockfile::acquire_with(dir.path(), Duration::from_millis(100))
            .await
            .unwrap();
        assert_eq!(lock.owner.pid, std::process::id() as i32);
    }

    #[tokio::test]
    async fn garbage_lock_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(LOCK_FILE), "not a pid").unwrap();
        let lock = Lockfile::acquire(dir.path()).await.unwrap();
        assert!(lock.still_ours());
    }

    #[tokio::test]
    async fn a_reused_pid_with_another_start_time_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        // PID 1 is alive, but did not start at tick 1 after boot... unless this is a container's
        // init started at tick 1, so pick an impossible start time instead.
        fs::write(
            dir.path().join(LOCK_FILE),
            "1\nstart_time=18446744073709551615\n",
        )
        .unwrap();
        let lock = Lockfile::acquire_with(dir.path(), Duration::from_millis(100))
            .await
            .unwrap();
        assert!(lock.still_ours());
    }

    #[tokio::test]
    async fn a_live_holder_gets_sigterm_then_sigkill() {
        let dir = tempfile::tempdir().unwrap();
        // A holder that survives SIGTERM (it only reports it), so only SIGKILL ends it. It
        // says "ready" once the trap is installed.
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "trap 'echo term' TERM; echo ready; while true; do sleep 0.05; done",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        let pid = child.id() as i32;
        let owner = Owner {
            pid,
            start_time: process_start_time(pid),
        };
        fs::write(dir.path().join(LOCK_FILE), owner.render()).unwrap();
        let started = Instant::now();
        let lock = Lockfile::acquire_with(dir.path(), Duration::from_millis(300))
            .await
            .unwrap();
        assert!(lock.still_ours());
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "SIGTERM was survived, so SIGKILL ended it"
        );
        let mut rest = String::new();
        io::Read::read_to_string(&mut out, &mut rest).unwrap();
        assert!(rest.contains("term"), "SIGTERM came first: {rest:?}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(300),
            "SIGKILL only after the SIGTERM timeout ({waited:?})"
        );
        assert!(waited < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn release_leaves_a_lock_that_is_no_longer_ours() {
        let dir = tempfile::tempdir().unwrap();
        let lock = Lockfile::acquire(dir.path()).await.unwrap();
        fs::write(lock.path(), "999999999\n").unwrap();
        let path = lock.path().to_owned();
        assert!(!lock.release());
        assert_eq!(fs::read_to_string(path).unwrap(), "999999999\n");
    }
}
