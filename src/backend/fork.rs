//! The fused kernels' thread pool: [`for_each_index`] runs `f(0), …, f(n - 1)` on the
//! calling thread and the pool's helper threads, which spin between jobs, and returns the
//! results in index order; [`join`] is its two-closure form.
//!
//! The pool has [`threads`]` - 1` helpers (`RAYON_NUM_THREADS`, else the machine's
//! cores), so a pass uses every core of a workstation or a GPU machine. Which thread runs
//! an index is decided at run time (each thread claims the next unclaimed index), but what
//! an index computes is not, so a caller whose work per index depends on its inputs only
//! gets the same numbers with any number of threads: the kernels cut a pass into row
//! blocks by its batch and widths alone ([`super::cpu::row_blocks`]), never by the thread count.
//!
//! Why not rayon: the MLP kernels fork every 0.1-1 ms. With `rayon::join` from outside
//! the pool the caller parks while pool workers wake (futex waits and `sched_yield` were
//! 8-10% of a GCD iteration's profile, plus the wake-up latency, which a CPU profile does
//! not show). Here the caller works on the job itself from the first moment, helpers pick
//! indices up within a spin (each keeps spinning for [`SPIN`] after a job before it
//! parks), and an index no helper has claimed yet is run by the caller: a job is never
//! slower than running its indices in sequence by more than a few atomic operations.
//!
//! One job at a time uses the helpers; a concurrent or nested call (a block that forks
//! again) runs its indices in sequence on its own thread, with the same results.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long a helper spins for a next job before it parks: longer than the gaps between
/// the MLP calls of one training iteration (tens to hundreds of µs), short enough that an
/// idle process stops using the cores at once.
pub const SPIN: Duration = Duration::from_millis(1);

/// The number of threads a job runs on, the caller included: `RAYON_NUM_THREADS` when it
/// is a positive integer (the knob dfdx's own gemm calls also follow), else the machine's
/// cores. Read once per process.
pub fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(cores)
    })
}

fn cores() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// A posted job: the function that works on it, given the job's own address.
struct JobHeader {
    work: unsafe fn(*const JobHeader),
}

/// A job on the poster's stack; `header` first so that a `*const JobHeader` is the job.
#[repr(C)]
struct IndexJob<'a, F, R> {
    header: JobHeader,
    f: &'a F,
    /// The next index to claim (indices at or above `results.len()` are past the end).
    next: AtomicUsize,
    /// Slot `i` is written by the one thread that claimed index `i`.
    results: Vec<UnsafeCell<Option<thread::Result<R>>>>,
}

impl<F: Fn(usize) -> R + Sync, R: Send> IndexJob<'_, F, R> {
    /// Claims and runs indices until none is left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = self.results.get(i) else {
                return;
            };
            let result = catch_unwind(AssertUnwindSafe(|| (self.f)(i)));
            // SAFETY: the `fetch_add` gave index `i` to this thread alone, and the poster
            // reads the slots only after every thread has left the job (see `post`).
            unsafe { *slot.get() = Some(result) };
        }
    }
}

/// Works on the job at `job`.
///
/// # Safety
/// `job` must point to a live `IndexJob<F, R>` that stays alive until this returns.
unsafe fn work_on<F: Fn(usize) -> R + Sync, R: Send>(job: *const JobHeader) {
    // SAFETY: as the contract says; `header` is the first field of a `repr(C)` struct.
    let job = unsafe { &*(job as *const IndexJob<F, R>) };
    job.work();
}

/// One helper thread: its handle, and whether it is parked (or about to be).
struct Helper {
    thread: Thread,
    parked: AtomicBool,
}

/// The pool's shared state.
struct Pool {
    /// The job being worked on (null: none).
    pending: AtomicPtr<JobHeader>,
    /// Bumped at every post, so a helper tells a new job from the one it just finished
    /// (a new job may sit at the same stack address).
    epoch: AtomicU64,
    /// Helpers between their check-in and check-out of a job (see `post`).
    inside: AtomicUsize,
    /// A job is using the helpers.
    busy: AtomicBool,
    helpers: OnceLock<Vec<Helper>>,
}

static POOL: Pool = Pool {
    pending: AtomicPtr::new(ptr::null_mut()),
    epoch: AtomicU64::new(0),
    inside: AtomicUsize::new(0),
    busy: AtomicBool::new(false),
    helpers: OnceLock::new(),
};

/// Whether the pool has more threads than the machine has cores: then spinning threads
/// yield their core now and then, or they would starve the threads with work.
fn oversubscribed() -> bool {
    static OVER: OnceLock<bool> = OnceLock::new();
    *OVER.get_or_init(|| threads() > cores())
}

/// The helpers, started on first use (fewer when a thread could not be started).
fn helpers() -> &'static [Helper] {
    POOL.helpers.get_or_init(|| {
        (1..threads())
            .map_while(|index| {
                thread::Builder::new()
                    .name(format!("denoise-gym-pool-{index}"))
                    .spawn(move || helper_loop(index - 1))
                    .ok()
                    .map(|handle| Helper {
                        thread: handle.thread().clone(),
                        parked: AtomicBool::new(false),
                    })
            })
            .collect()
    })
}

fn helper_loop(index: usize) {
    // The helper list is being built while the first helpers start: wait for it.
    let me = loop {
        if let Some(list) = POOL.helpers.get() {
            if let Some(me) = list.get(index) {
                break me;
            }
            // Not reachable (the list keeps every helper that started), but a helper
            // without a slot could never be unparked: it ends instead.
            return;
        }
        thread::sleep(Duration::from_micros(50));
    };
    let mut seen = POOL.epoch.load(Ordering::Acquire);
    loop {
        let mut idle_since = Instant::now();
        let mut spins: u32 = 0;
        loop {
            let epoch = POOL.epoch.load(Ordering::Relaxed);
            if epoch != seen {
                seen = epoch;
                break;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(256) {
                std::hint::spin_loop();
                continue;
            }
            if oversubscribed() {
                thread::yield_now();
            }
            if idle_since.elapsed() > SPIN {
                // Seen in this order against the poster's `epoch` bump and `parked` load
                // (all SeqCst), either the poster sees `parked` and unparks, or this load
                // sees the new epoch; `park` returns at once after an earlier unpark.
                me.parked.store(true, Ordering::SeqCst);
                if POOL.epoch.load(Ordering::SeqCst) == seen {
                    thread::park();
                }
                me.parked.store(false, Ordering::SeqCst);
                idle_since = Instant::now();
            }
        }
        // Check in before reading the job: the poster clears `pending` and then waits for
        // `inside` to be 0, so a job seen here stays alive until the check-out.
        POOL.inside.fetch_add(1, Ordering::SeqCst);
        let job = POOL.pending.load(Ordering::SeqCst);
        if !job.is_null() {
            // SAFETY: checked in while `pending` held the job, so the poster is still
            // waiting for this thread before it frees the job.
            unsafe { ((*job).work)(job) };
        }
        POOL.inside.fetch_sub(1, Ordering::Release);
    }
}

/// Runs `f(i)` for every `i` in `0..n` on this thread and the pool's helpers, and returns
/// the results in index order. With one thread, from inside another job, or while another
/// job holds the helpers, the indices run in sequence on this thread. A panic in any `f(i)`
/// is resumed here after every index ran.
pub fn for_each_index<R, F>(n: usize, f: F) -> Vec<R>
where
    F: Fn(usize) -> R + Sync,
    R: Send,
{
    let job = IndexJob {
        header: JobHeader {
            work: work_on::<F, R>,
        },
        f: &f,
        next: AtomicUsize::new(0),
        results: (0..n).map(|_| UnsafeCell::new(None)).collect(),
    };
    if n >= 2 && threads() >= 2 {
        post(&job);
    } else {
        job.work();
    }
    let mut panic = None;
    let results: Vec<R> = job
        .results
        .into_iter()
        .filter_map(|slot| match slot.into_inner() {
            Some(Ok(r)) => Some(r),
            Some(Err(p)) => {
                panic.get_or_insert(p);
                None
            }
            None => unreachable!("every index of a finished job ran"),
        })
        .collect();
    if let Some(panic) = panic {
        resume_unwind(panic);
    }
    results
}

/// Works on `job` with the helpers, when they are free; returns once every index ran.
fn post<F: Fn(usize) -> R + Sync, R: Send>(job: &IndexJob<'_, F, R>) {
    let helpers = helpers();
    if helpers.is_empty()
        || POOL
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
    {
        job.work();
        return;
    }
    let job_ptr = &job.header as *const JobHeader as *mut JobHeader;
    POOL.pending.store(job_ptr, Ordering::SeqCst);
    POOL.epoch.fetch_add(1, Ordering::SeqCst);
    for helper in helpers {
        if helper.parked.load(Ordering::SeqCst) {
            helper.thread.unpark();
        }
    }
    job.work();
    // Every index is claimed. Withdraw the job, then wait for the helpers inside it: one
    // that checks in after the withdrawal reads null, one that checked in before is
    // counted (both SeqCst), and its check-out (Release) publishes its results.
    POOL.pending.store(ptr::null_mut(), Ordering::SeqCst);
    let mut waits: u32 = 0;
    while POOL.inside.load(Ordering::SeqCst) != 0 {
        if waits < 1 << 16 && !oversubscribed() {
            std::hint::spin_loop();
            waits += 1;
        } else {
            thread::yield_now();
        }
    }
    POOL.busy.store(false, Ordering::Release);
}

/// Runs `a` and `b` at the same time (on this thread and a helper when one is free) and
/// returns both results; with [`for_each_index`]'s contract.
pub fn join<A, B, RA, RB>(a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA + Send,
    B: FnOnce() -> RB + Send,
    RA: Send,
    RB: Send,
{
    let (a, b) = (Mutex::new(Some(a)), Mutex::new(Some(b)));
    let mut results = for_each_index(2, |i| {
        // Each closure is taken once, by the index that runs it.
        if i == 0 {
            Either::A(a.lock().ok().and_then(|mut a| a.take()).map(|a| a()))
        } else {
            Either::B(b.lock().ok().and_then(|mut b| b.take()).map(|b| b()))
        }
    })
    .into_iter();
    match (results.next(), results.next()) {
        (Some(Either::A(Some(ra))), Some(Either::B(Some(rb)))) => (ra, rb),
        _ => unreachable!("index 0 runs `a` and index 1 runs `b`, once each"),
    }
}

enum Either<A, B> {
    A(A),
    B(B),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_index_order_and_helpers_take_part() {
        let caller = thread::current().id();
        let mut seen_other_thread = false;
        // Each index lasts long enough for a spinning helper to claim one.
        let slow = |i: usize| {
            let start = Instant::now();
            while start.elapsed() < Duration::from_micros(50) {
                std::hint::spin_loop();
            }
            (i * 3, thread::current().id())
        };
        // Other tests' jobs hold the helpers now and then: keep posting until one lands
        // on a helper, for up to 10 s.
        let started = Instant::now();
        while !seen_other_thread && started.elapsed() < Duration::from_secs(10) {
            let results = for_each_index(8, slow);
            let values: Vec<usize> = results.iter().map(|r| r.0).collect();
            assert_eq!(values, (0..8).map(|i| i * 3).collect::<Vec<_>>());
            seen_other_thread |= results.iter().any(|r| r.1 != caller);
            if threads() < 2 {
                break;
            }
        }
        assert_eq!(seen_other_thread, threads() >= 2, "helpers ran a job");
    }

    #[test]
    fn a_panic_in_any_index_reaches_the_caller_after_every_index_ran() {
        let ran = AtomicUsize::new(0);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            for_each_index(5, |i| {
                ran.fetch_add(1, Ordering::SeqCst);
                assert_ne!(i, 2, "index 2 fails");
            })
        }));
        assert!(outcome.is_err());
        assert_eq!(ran.load(Ordering::SeqCst), 5);
        let outcome = catch_unwind(|| join(|| 1, || -> u32 { panic!("half b") }));
        assert!(outcome.is_err());
        // The pool is usable after a panic.
        assert_eq!(join(|| 1, || 2), (1, 2));
        assert_eq!(for_each_index(3, |i| i), vec![0, 1, 2]);
    }

    #[test]
    fn nested_and_empty_jobs_run() {
        let (a, b) = join(|| join(|| 1, || 2), || join(|| 3, || 4));
        assert_eq!((a, b), ((1, 2), (3, 4)));
        let nested = for_each_index(4, |i| for_each_index(3, |j| i * 10 + j));
        assert_eq!(nested[3], vec![30, 31, 32]);
        assert!(for_each_index(0, |i| i).is_empty());
    }
}
