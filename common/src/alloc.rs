//! The services' allocator, and giving freed heap memory back to the system.
//!
//! Each service binary allocates with jemalloc ([`Allocator`]): its size
//! classes keep many small allocations (an idle socket's state) compact, and
//! its background thread gives the pages a burst of load freed back to the
//! system some seconds later, where glibc's arenas kept them. glibc's
//! allocator still serves what C code allocates (SQLite); [`spawn_trim`] asks
//! it now and then to hand back its whole free pages (`malloc_trim`).
//! Elsewhere (musl, other systems) the trim does nothing.

use std::time::Duration;

/// The allocator every service binary declares as its global allocator.
pub type Allocator = tikv_jemallocator::Jemalloc;

/// The allocator's value: each service's `main.rs` has
/// `#[global_allocator] static ALLOCATOR: Allocator = ALLOCATOR;`.
pub const ALLOCATOR: Allocator = tikv_jemallocator::Jemalloc;

/// How often a service gives its free heap pages back, unless
/// `HEAP_TRIM_SECS` says otherwise (0: never).
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// How often to trim: `HEAP_TRIM_SECS` (whole seconds, 0 for never), else [`TRIM_EVERY`].
pub fn trim_every(var: Option<&str>) -> Result<Option<Duration>, String> {
    match var.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(Some(TRIM_EVERY)),
        Some(value) => match value.parse::<u64>() {
            Ok(0) => Ok(None),
            Ok(secs) => Ok(Some(Duration::from_secs(secs))),
            Err(_) => Err(format!(
                "HEAP_TRIM_SECS: `{value}` is not a whole number of seconds"
            )),
        },
    }
}

/// Gives the heap's whole free pages back to the system; whether any were.
/// Walks and locks every arena in turn, so call it off the hot path.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn trim() -> bool {
    // SAFETY: `malloc_trim` takes no pointers and has no precondition; glibc
    // locks each arena while it walks it.
    unsafe { libc::malloc_trim(0) != 0 }
}

/// Gives the heap's whole free pages back to the system; nothing to do here.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}

/// Trims the heap on a blocking thread as often as `HEAP_TRIM_SECS` says
/// ([`trim_every`]), for as long as the Tokio runtime runs. Call once per
/// process, from within the runtime; a bad value is an error.
pub fn spawn_trim() -> Result<(), String> {
    let Some(every) = trim_every(std::env::var("HEAP_TRIM_SECS").ok().as_deref())? else {
        return Ok(());
    };
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return Ok(());
    }
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            if tokio::task::spawn_blocking(trim).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident memory of this process in KiB.
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    #[test]
    fn the_trim_interval_comes_from_the_environment() {
        assert_eq!(trim_every(None), Ok(Some(TRIM_EVERY)));
        assert_eq!(trim_every(Some(" ")), Ok(Some(TRIM_EVERY)));
        assert_eq!(trim_every(Some("30")), Ok(Some(Duration::from_secs(30))));
        assert_eq!(trim_every(Some("0")), Ok(None));
        assert!(trim_every(Some("ten")).is_err_and(|e| e.contains("HEAP_TRIM_SECS")));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn trimming_returns_freed_small_allocations() {
        // Many small blocks (below glibc's mmap threshold, so they live in
        // the heap), freed except the last one, which pins the top of the
        // heap: without a trim glibc keeps every freed page.
        let blocks: Vec<Vec<u8>> = (0..64 * 1024).map(|i| vec![(i % 251) as u8; 1000]).collect();
        let pin = vec![1u8; 1000];
        let full = rss_kib();
        drop(blocks);
        let freed = rss_kib();
        assert!(trim(), "glibc gave nothing back");
        let trimmed = rss_kib();
        assert!(pin[0] == 1);
        assert!(
            full.saturating_sub(trimmed) > 32 * 1024,
            "64 MB freed, RSS {full} KiB → {freed} KiB after free → {trimmed} KiB after trim"
        );
    }
}
