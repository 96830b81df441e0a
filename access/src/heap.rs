//! Gives freed heap back to the system, a little after a burst.
//!
//! An idle connection costs the node about a hundred bytes, but a login storm
//! (thousands of logins queued for logic at once) allocates far more for a
//! while: requests, replies and their futures, on the runtime's threads.
//! glibc returns a freed block to the system only when it sits at the top of
//! its arena, and the long-lived connection records allocated in between keep
//! it from being there, so after a storm the node kept several times its idle
//! memory for good (568 bytes per connection after 19,000 logins at 2,000/s
//! against 120 at 400/s). `malloc_trim` hands every whole free page back from
//! all arenas; run every few seconds it costs microseconds on a heap of tens
//! of MiB.

use std::time::Duration;

use tokio::runtime::Handle;

/// Trims the heap every `every` on `runtime`, for as long as it runs.
pub fn spawn_trimmer(runtime: &Handle, every: Duration) {
    runtime.spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if tokio::task::spawn_blocking(trim).await.is_err() {
                return;
            }
        }
    });
}

/// Returns whole free pages of every arena to the system; true when any went.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // the one foreign call of the crate; no pointer crosses it
fn trim() -> bool {
    // SAFETY: malloc_trim takes no pointer and may be called from any thread
    // at any time; it locks each arena while it walks it.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators return memory by themselves, or not at all.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    #[test]
    fn freed_blocks_under_a_live_one_go_back_to_the_system() {
        let blocks: Vec<Box<[u8; 256]>> = (0..100_000).map(|i| Box::new([i as u8; 256])).collect();
        // Allocated after them, so it sits above them and keeps glibc from
        // shrinking the arena when they are freed.
        let pin = Box::new([7u8; 256]);
        drop(blocks);
        let before = rss_kib();
        assert!(trim(), "25 MB of free blocks: some pages go");
        let after = rss_kib();
        assert!(
            before.saturating_sub(after) > 10 * 1024,
            "VmRSS {before} kB -> {after} kB"
        );
        assert_eq!(pin[0], 7);
    }
}
