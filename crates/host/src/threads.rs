//! How the operating system runs the sandbox's threads: pinned one per core, and a
//! CPU-bound guest demoted below the node's own threads.

use std::cell::Cell;

/// Keeps the calling thread, the `n`th sandbox thread, on one core (of those the
/// process may use), the threads spread over the cores in turn.
pub(crate) fn pin_current(n: usize) {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if cores.is_empty() || !core_affinity::set_for_current(cores[n % cores.len()]) {
        tracing::warn!("cannot pin a sandbox thread to a core; it moves between cores as the operating system decides");
    }
}

thread_local! {
    /// Whether this thread runs under `SCHED_IDLE` now (a syscall only on a change).
    static IDLE: Cell<bool> = const { Cell::new(false) };
}

/// Whether this process may move a thread into `SCHED_IDLE` and back. Leaving it takes
/// `CAP_SYS_NICE` or an `RLIMIT_NICE` of at least 20; probed once on a thread of its own.
pub(crate) fn can_demote() -> bool {
    static PROBED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PROBED.get_or_init(|| {
        let probe = std::thread::spawn(|| apply(true).and_then(|()| apply(false)));
        match probe.join() {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "CPU-bound guests cannot be demoted below the node's threads (SCHED_IDLE and back needs CAP_SYS_NICE or RLIMIT_NICE >= 20); they share the cores equally");
                false
            }
            Err(_) => false,
        }
    })
}

/// Runs the calling sandbox thread under `SCHED_IDLE` (`idle`) or the normal policy,
/// for the guest about to execute on it. Call only where [`can_demote`] holds.
pub(crate) fn set_idle(idle: bool) {
    if IDLE.get() == idle {
        return;
    }
    match apply(idle) {
        Ok(()) => IDLE.set(idle),
        Err(e) => tracing::warn!(error = %e, idle, "cannot change a sandbox thread's scheduling policy"),
    }
}

/// Lets the node's threads that are waiting for this core run now, if this thread runs
/// a demoted guest. `SCHED_IDLE` is not a strict priority: a node thread put back in the
/// run queue (preempted rather than woken) can wait out the idle thread's whole time
/// slice, several milliseconds (seen with `perf sched` under a CPU flood). Called at
/// every tick a demoted guest gives its turn up, it bounds that wait to one tick.
pub(crate) fn yield_if_idle() {
    if IDLE.get() {
        std::thread::yield_now();
    }
}

#[cfg(target_os = "linux")]
fn apply(idle: bool) -> Result<(), String> {
    use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy};
    let policy = ThreadSchedulePolicy::Normal(if idle { NormalThreadSchedulePolicy::Idle } else { NormalThreadSchedulePolicy::Other });
    // The crate maps its 0..=99 range onto niceness 19..=-20; 47 is niceness 0, the default.
    let nice_zero = ThreadPriority::Crossplatform(ThreadPriorityValue::try_from(47u8).map_err(|e| e.to_string())?);
    thread_priority::set_thread_priority_and_policy(thread_priority::thread_native_id(), nice_zero, policy).map_err(|e| format!("{e:?}"))
}

#[cfg(not(target_os = "linux"))]
fn apply(_idle: bool) -> Result<(), String> {
    Err("only Linux has SCHED_IDLE".into())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use thread_priority::{NormalThreadSchedulePolicy, ThreadSchedulePolicy};

    /// The calling thread's policy and niceness (field 19 of `/proc/thread-self/stat`).
    fn policy_and_nice() -> (ThreadSchedulePolicy, i64) {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("read /proc/thread-self/stat");
        let after_comm = &stat[stat.rfind(')').expect("stat has a comm") + 2..];
        let nice = after_comm.split(' ').nth(16).and_then(|n| n.parse().ok()).expect("stat has a nice field");
        (thread_priority::thread_schedule_policy().expect("read the policy"), nice)
    }

    #[test]
    fn a_demoted_thread_goes_idle_and_comes_back_to_the_normal_policy_at_niceness_zero() {
        std::thread::spawn(|| {
            if !can_demote() {
                // Unprivileged without RLIMIT_NICE: demotion is off and nothing changes.
                assert!(std::env::var("CI").as_deref() != Ok("true"), "CI runs as root, where demotion must be available");
                return;
            }
            assert_eq!(policy_and_nice(), (ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other), 0));
            set_idle(true);
            assert_eq!(policy_and_nice().0, ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle));
            set_idle(false);
            assert_eq!(policy_and_nice(), (ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other), 0));
        })
        .join()
        .expect("the probe thread");
    }
}
