//! A two-way fork-join for the fused kernels: [`join`] runs one closure on the calling
//! thread and the other on one process-wide helper thread that spins between jobs.
//!
//! The fused MLP kernels split a pass into two row blocks, forking every 0.1-1 ms. With
//! `rayon::join` from outside the pool, the caller parks while two pool workers wake
//! (futex waits and `sched_yield` were 8-10% of a GCD iteration's profile, plus the wake-up
//! latency, which a CPU profile does not show). Here the caller runs its half itself, the
//! helper picks the other half up within a spin (it keeps spinning for [`SPIN`] after each
//! job before it parks), and when the helper has not started, the caller takes its half
//! back and runs both: a fork is never slower than running the two halves in sequence
//! by more than two atomic operations.
//!
//! One fork at a time uses the helper; a concurrent or nested [`join`] runs sequentially.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::OnceLock;
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long the helper spins for a next job before it parks: longer than the gaps
/// between the MLP calls of one training iteration (tens to hundreds of µs), short
/// enough that an idle process stops using the core at once.
pub const SPIN: Duration = Duration::from_millis(1);

/// A posted job: the function that runs it, given the job's own address.
struct JobHeader {
    run: unsafe fn(*const JobHeader),
}

/// A job on the poster's stack; `header` first so that a `*const JobHeader` is the job.
#[repr(C)]
struct StackJob<F, R> {
    header: JobHeader,
    work: UnsafeCell<Option<F>>,
    result: UnsafeCell<Option<thread::Result<R>>>,
    done: AtomicBool,
}

/// Runs the job at `job` and marks it done.
///
/// # Safety
/// `job` must point to a live `StackJob<F, R>` whose work has not been taken, and nothing
/// else may touch its cells until `done` is set.
unsafe fn run_stack_job<F: FnOnce() -> R, R>(job: *const JobHeader) {
    // SAFETY: as the contract says; `header` is the first field of a `repr(C)` struct.
    let job = unsafe { &*(job as *const StackJob<F, R>) };
    // SAFETY: the helper owns the cells until `done` (the poster waits for it).
    let work = unsafe { (*job.work.get()).take() };
    if let Some(work) = work {
        let result = catch_unwind(AssertUnwindSafe(work));
        // SAFETY: as above.
        unsafe { *job.result.get() = Some(result) };
    }
    // The poster may free the job as soon as it sees this: nothing touches it after.
    job.done.store(true, Ordering::Release);
}

/// The helper's shared state.
struct Helper {
    /// The job waiting for the helper (null: none).
    pending: AtomicPtr<JobHeader>,
    /// The helper is parked (or about to be) and needs an unpark.
    parked: AtomicBool,
    /// A fork is using the helper.
    busy: AtomicBool,
}

static HELPER: Helper = Helper {
    pending: AtomicPtr::new(ptr::null_mut()),
    parked: AtomicBool::new(false),
    busy: AtomicBool::new(false),
};

/// The helper thread, started on first use (`None` if it could not be started).
fn helper_thread() -> Option<&'static Thread> {
    static THREAD: OnceLock<Option<Thread>> = OnceLock::new();
    THREAD
        .get_or_init(|| {
            thread::Builder::new()
                .name("denoise-gym-fork".to_string())
                .spawn(helper_loop)
                .ok()
                .map(|handle| handle.thread().clone())
        })
        .as_ref()
}

fn helper_loop() {
    loop {
        let mut idle_since = Instant::now();
        let mut spins: u32 = 0;
        let job = loop {
            if !HELPER.pending.load(Ordering::Relaxed).is_null() {
                let job = HELPER.pending.swap(ptr::null_mut(), Ordering::Acquire);
                if !job.is_null() {
                    break job;
                }
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(256) && idle_since.elapsed() > SPIN {
                // Seen in this order against the poster's `pending` store and `parked`
                // load (all SeqCst), either the poster sees `parked` and unparks, or this
                // load sees the job; `park` returns at once after an earlier unpark.
                HELPER.parked.store(true, Ordering::SeqCst);
                if HELPER.pending.load(Ordering::SeqCst).is_null() {
                    thread::park();
                }
                HELPER.parked.store(false, Ordering::SeqCst);
                idle_since = Instant::now();
            } else {
                std::hint::spin_loop();
            }
        };
        // SAFETY: a posted job stays alive until it is marked done (the poster waits),
        // and the swap above gave it to this thread alone.
        unsafe { ((*job).run)(job) };
    }
}

/// Runs `a` on this thread and `b` on the helper thread at the same time, and returns
/// both results; sequentially (`a` then `b`) when the helper is busy with another fork or
/// could not be started. A panic in either closure is resumed here after both finished.
pub fn join<A, B, RA, RB>(a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA,
    B: FnOnce() -> RB + Send,
    RB: Send,
{
    let Some(helper) = helper_thread() else {
        return sequential(a, b);
    };
    if HELPER
        .busy
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return sequential(a, b);
    }
    let job = StackJob {
        header: JobHeader {
            run: run_stack_job::<B, RB>,
        },
        work: UnsafeCell::new(Some(b)),
        result: UnsafeCell::new(None),
        done: AtomicBool::new(false),
    };
    let job_ptr = &job.header as *const JobHeader as *mut JobHeader;
    HELPER.pending.store(job_ptr, Ordering::SeqCst);
    if HELPER.parked.load(Ordering::SeqCst) {
        helper.unpark();
    }
    let result_a = catch_unwind(AssertUnwindSafe(a));
    // Not started yet: take it back and run it here rather than wait for a wake-up.
    if HELPER
        .pending
        .compare_exchange(
            job_ptr,
            ptr::null_mut(),
            Ordering::Acquire,
            Ordering::Relaxed,
        )
        .is_ok()
    {
        // SAFETY: the job was never handed out, so this thread alone owns it.
        unsafe { run_stack_job::<B, RB>(job_ptr) };
    } else {
        let mut waits: u32 = 0;
        while !job.done.load(Ordering::Acquire) {
            if waits < 1 << 16 {
                std::hint::spin_loop();
                waits += 1;
            } else {
                thread::yield_now();
            }
        }
    }
    HELPER.busy.store(false, Ordering::Release);
    let result_b = job
        .result
        .into_inner()
        .unwrap_or_else(|| unreachable!("a finished job holds its result"));
    both(result_a, result_b)
}

/// `a` then `b` on this thread, with [`join`]'s contract: both run, then a panic resumes.
fn sequential<A: FnOnce() -> RA, B: FnOnce() -> RB, RA, RB>(a: A, b: B) -> (RA, RB) {
    let result_a = catch_unwind(AssertUnwindSafe(a));
    let result_b = catch_unwind(AssertUnwindSafe(b));
    both(result_a, result_b)
}

fn both<RA, RB>(a: thread::Result<RA>, b: thread::Result<RB>) -> (RA, RB) {
    match (a, b) {
        (Ok(ra), Ok(rb)) => (ra, rb),
        (Err(panic), _) | (_, Err(panic)) => resume_unwind(panic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_returns_both_results_and_runs_b_off_thread_when_free() {
        let caller = thread::current().id();
        let mut seen_other_thread = false;
        // The caller's half lasts long enough for a spinning helper to take the other.
        let slow_double = |i: u64| {
            let start = Instant::now();
            while start.elapsed() < Duration::from_micros(50) {
                std::hint::spin_loop();
            }
            i * 2
        };
        // Other tests' forks hold the helper now and then (a panicking one for as long as
        // its backtrace prints): keep forking until one lands on it, for up to 10 s.
        let started = Instant::now();
        let mut i = 0u64;
        while !seen_other_thread && started.elapsed() < Duration::from_secs(10) {
            let (a, (b, id)) = join(|| slow_double(i), || (i * 3, thread::current().id()));
            assert_eq!((a, b), (i * 2, i * 3));
            seen_other_thread |= id != caller;
            i += 1;
        }
        assert!(seen_other_thread, "the helper never ran a job");
    }

    #[test]
    fn a_panic_in_either_half_reaches_the_caller_after_both_ran() {
        let ran_b = AtomicBool::new(false);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            join(|| panic!("half a"), || ran_b.store(true, Ordering::SeqCst))
        }));
        assert!(outcome.is_err());
        assert!(ran_b.load(Ordering::SeqCst));
        let outcome = catch_unwind(|| join(|| 1, || -> u32 { panic!("half b") }));
        assert!(outcome.is_err());
        // The helper is usable after a panic.
        assert_eq!(join(|| 1, || 2), (1, 2));
    }

    #[test]
    fn nested_joins_run() {
        let (a, b) = join(|| join(|| 1, || 2), || join(|| 3, || 4));
        assert_eq!((a, b), ((1, 2), (3, 4)));
    }
}
