//! Fused CPU kernels for the operations that dominate training time, written against
//! dfdx's custom-op interface (a forward on host buffers plus one closure on the tape).
//!
//! Measured with callgrind on a GCD iteration (T = 4, batch 256, width 128; see the
//! docs/performance.md), dfdx 0.13 composes an MLP layer from six kernels
//! (matmul, reshape, broadcast, add, sigmoid, mul), each allocating and zeroing its
//! output and walking it through a strided index; only 29% of the instructions were in
//! matmul. [`mlp_forward`] does a whole MLP as one tape node: the bias and activation
//! are fused into each layer's matmul output, and the backward pass is one closure that
//! writes every weight, bias and input gradient with three `gemm` calls per layer.
//! [`adam_step`] and [`squared_norm`] do the optimiser's element-wise work in one pass
//! over each buffer instead of seven temporary tensors.
//!
//! Everything here computes exactly what the composed dfdx code computes, up to the
//! order of floating-point sums in matmul and the activation's `exp` (a Cephes-style
//! polynomial, within 2 ulp of `f32::exp`, that the compiler vectorises).

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::ops::Range;

use dfdx::prelude::*;

use crate::nn::{Activation, Mlp};
use crate::tensor::{Matrix, Vector};

/// A read-only view of a CPU matrix's storage when it is dense and row-major (what every
/// op here produces), without a copy; `None` for broadcast or strided views.
pub fn host_view<T>(t: &Tensor<(usize, usize), f32, Cpu, T>) -> Option<&[f32]> {
    let (rows, cols) = *t.shape();
    if rows == 0 || cols == 0 {
        return Some(&[]);
    }
    let first: *const f32 = &t[[0, 0]];
    // `Index` goes through the tensor's strides, so the addresses of (0, 1) and (1, 0)
    // reveal them: unit column stride and a row stride of `cols` is a dense row-major
    // buffer, and indexing the last element checked it lies inside the storage.
    // SAFETY: all pointers point into the same `Vec` (the tensor's storage).
    let (column_stride, row_stride, last) = unsafe {
        (
            if cols > 1 {
                (&t[[0, 1]] as *const f32).offset_from(first)
            } else {
                1
            },
            if rows > 1 {
                (&t[[1, 0]] as *const f32).offset_from(first)
            } else {
                cols as isize
            },
            (&t[[rows - 1, cols - 1]] as *const f32).offset_from(first),
        )
    };
    let dense =
        column_stride == 1 && row_stride == cols as isize && last == (rows * cols - 1) as isize;
    // SAFETY: dense row-major with its last element in bounds: `rows·cols` contiguous
    // elements of the storage starting at `first`, borrowed for as long as `t`.
    dense.then(|| unsafe { std::slice::from_raw_parts(first, rows * cols) })
}

/// A CPU matrix's elements in row-major order: borrowed when dense, else copied.
fn host_data<T>(t: &Tensor<(usize, usize), f32, Cpu, T>) -> Cow<'_, [f32]> {
    host_view(t).map_or_else(|| Cow::Owned(t.as_vec()), Cow::Borrowed)
}

/// The storage of a dense CPU matrix, mutably (copied first if another tensor shares it,
/// as dfdx's own in-place ops do); `None` for broadcast or strided views.
pub fn host_view_mut(t: &mut Matrix<Cpu>) -> Option<&mut [f32]> {
    let n = {
        let view = host_view(t)?;
        view.len()
    };
    if n == 0 {
        return Some(&mut []);
    }
    // `IndexMut` makes the storage unique (`Arc::make_mut`) before handing out a pointer.
    let first: *mut f32 = &mut t[[0, 0]];
    // SAFETY: the layout was checked dense above and `make_mut` does not change it; the
    // borrow of `t` is held for the slice's lifetime.
    Some(unsafe { std::slice::from_raw_parts_mut(first, n) })
}

/// `ln(f32::MIN_POSITIVE)`, to one decimal: `exp` of anything lower is subnormal, and so is
/// `sigmoid` of it ([`exp_approx`] clamps there, [`sigmoid_flushed`] returns 0 below it).
const LN_MIN_POSITIVE: f32 = -87.3;

/// `exp(x)` for the activations: Cephes' `expf` (range reduction by `ln 2`, degree-5
/// polynomial) with only arithmetic and bit operations, so that loops over it vectorise
/// (`f32::exp` is a libm call, and Rust's saturating `as i32` is scalar). Inputs are
/// clamped to where `exp` is a normal f32; a NaN input gives a finite value, and the
/// callers' own factor `x` carries the NaN through. The polynomial is written in
/// `mul_add`s, which the AVX-512 and AVX2 + FMA builds of the loops compile to `vfmadd`
/// (T = 4 sampling +10-12%, 3 interleaved runs); without FMA, `mul_add` is computed in
/// software, slower but to the same bits.
#[inline(always)]
fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // 1.5·2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    #[allow(clippy::manual_clamp)] // `clamp` keeps a NaN, which the bit tricks below must not see.
    let x = x.max(LN_MIN_POSITIVE).min(88.3);
    let shifted = x * LOG2E + ROUND;
    let nf = shifted - ROUND;
    let n = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let r = nf.mul_add(2.121_944_4e-4, nf.mul_add(-0.693_359_4, x));
    let mut p = 1.987_569_1e-4_f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let poly = (p * r).mul_add(r, r + 1.0);
    poly * f32::from_bits(((n + 127) as u32) << 23)
}

/// `sigmoid(a)`, and 0 where it would be subnormal (`a <` [`LN_MIN_POSITIVE`]): that
/// tail made SiLU's outputs and gradients subnormal, which slows every product that reads
/// them (see [`silu_backward`]); f32's exact sigmoid is subnormal or 0 there too.
#[inline(always)]
fn sigmoid_flushed(a: f32) -> f32 {
    if a < LN_MIN_POSITIVE {
        0.0
    } else {
        1.0 / (1.0 + exp_approx(-a))
    }
}

/// Runs an element-wise loop compiled for AVX-512 or AVX2 + FMA where the CPU has them
/// (16 or 8 lanes instead of the baseline x86-64 target's 4), else for the baseline.
macro_rules! multiversion {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        $(#[$doc])*
        fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn portable($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) {
                    portable($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    portable($($arg),*)
                }
                if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports every feature `avx512` was compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            portable($($arg),*)
        }
    };
}

multiversion! {
    /// `z ← z + b` for each row of `z` (`b` one row).
    fn add_bias(z: &mut [f32], bias: &[f32]) {
        for row in z.chunks_exact_mut(bias.len()) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
    }
}

multiversion! {
    /// `z ← max(z + b, 0)` for each row of `z`.
    fn add_bias_relu(z: &mut [f32], bias: &[f32]) {
        for row in z.chunks_exact_mut(bias.len()) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v = (*v + b).max(0.0);
            }
        }
    }
}

multiversion! {
    /// `z ← silu(z + b)` for each row of `z` (no tape: nothing kept for backward), as
    /// `a · sigmoid(a)` in the very operations of [`add_bias_silu_keep_sigmoid`], so that a
    /// pass with a tape and one without give the same bits (an agent samples from a
    /// taped mean and the policy's own sampler from an untaped one).
    fn add_bias_silu(z: &mut [f32], bias: &[f32]) {
        for row in z.chunks_exact_mut(bias.len()) {
            for (v, b) in row.iter_mut().zip(bias) {
                let a = *v + b;
                *v = a * sigmoid_flushed(a);
            }
        }
    }
}

multiversion! {
    /// `h ← silu(z + b)` and `z ← sigmoid(z + b)` for each row: backward then needs no
    /// `exp`, since `silu'(a) = s + h (1 - s)` with `s = sigmoid(a)`, `h = a s`.
    fn add_bias_silu_keep_sigmoid(z: &mut [f32], bias: &[f32], h: &mut [MaybeUninit<f32>]) {
        for (row, out) in z.chunks_exact_mut(bias.len()).zip(h.chunks_exact_mut(bias.len())) {
            for ((v, b), o) in row.iter_mut().zip(bias).zip(out.iter_mut()) {
                let a = *v + b;
                let s = sigmoid_flushed(a);
                o.write(a * s);
                *v = s;
            }
        }
    }
}

multiversion! {
    /// `g ← g · silu'(a)` from the kept `s = sigmoid(a)` and `h = silu(a)`, with results
    /// below `f32::MIN_POSITIVE` in magnitude flushed to zero. A unit far in SiLU's negative
    /// tail has `silu'(a)` near 1e-37, so its gradients came out subnormal, and a gemm
    /// reading subnormal operands ran 5× slower (GCD at d = 256: 24 against 58 it/s).
    fn silu_backward(g: &mut [f32], sigmoid: &[f32], h: &[f32]) {
        for ((g, &s), &h) in g.iter_mut().zip(sigmoid).zip(h) {
            let v = *g * (s + h * (1.0 - s));
            *g = if v.abs() < f32::MIN_POSITIVE { 0.0 } else { v };
        }
    }
}

/// Multiply-adds done by [`matmul`] since the process started (what `dgym bench`
/// divides by time to report the achieved matmul rate).
static MULTIPLY_ADDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Multiply-adds of every matmul the fused kernels have run so far (dfdx's own matmuls
/// are not counted).
pub fn multiply_adds() -> u64 {
    MULTIPLY_ADDS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Nanoseconds spent inside [`matmul`] since the process started, summed over threads.
static MATMUL_NANOS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Thread-nanoseconds the fused kernels' matmuls have taken so far (summed over the
/// threads that ran them): with [`multiply_adds`], the rate the matmuls themselves ran
/// at, and their share of an iteration (`dgym bench`). Two clock reads per product, each
/// of which lasts microseconds or more.
pub fn matmul_nanos() -> u64 {
    MATMUL_NANOS.load(std::sync::atomic::Ordering::Relaxed)
}

/// One matmul the fused kernels ran: its shape `m × k · k × n`, whether it added to the
/// destination, and its operands' `(row, column)` strides (a transposed operand has a
/// row stride of 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MatmulCall {
    /// Rows of `a` and of the destination.
    pub m: usize,
    /// Columns of `a`, rows of `b`.
    pub k: usize,
    /// Columns of `b` and of the destination.
    pub n: usize,
    /// Whether the product was added to the destination.
    pub accumulate: bool,
    /// `a`'s `(row, column)` strides.
    pub a_strides: (isize, isize),
    /// `b`'s `(row, column)` strides.
    pub b_strides: (isize, isize),
}

/// Whether [`matmul_raw`] records its calls (only inside [`record_matmul_calls`]).
static RECORDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// The calls recorded so far, with their counts.
static RECORDED: std::sync::Mutex<std::collections::BTreeMap<MatmulCall, u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());
/// One recording at a time.
static RECORDING_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` and returns, beside its result, every distinct matmul the fused kernels ran
/// meanwhile, on any thread of the process, with how often: the shape mix that
/// [`bare_matmul_gflops`] then times alone (`dgym bench`'s "same shapes" gemm rate).
/// Recordings do not nest: a second one waits for the first.
pub fn record_matmul_calls<R>(f: impl FnOnce() -> R) -> (R, Vec<(MatmulCall, u64)>) {
    let _one_at_a_time = RECORDING_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let take = || {
        std::mem::take(
            &mut *RECORDED
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    };
    // Stops the recording however `f` ends, a panic included.
    struct StopRecording;
    impl Drop for StopRecording {
        fn drop(&mut self) {
            RECORDING.store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }
    take();
    let stop = StopRecording;
    RECORDING.store(true, std::sync::atomic::Ordering::SeqCst);
    let result = f();
    drop(stop);
    (result, take().into_iter().collect())
}

fn record(call: MatmulCall) {
    *RECORDED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(call)
        .or_insert(0) += 1;
}

/// The rate in GFLOP/s (2 per multiply-add) of the matmul alone on exactly `calls`, each
/// as often as its count, on the calling thread, operands laid out with the recorded
/// strides in buffers of their own: the best of passes over the mix (after one warm-up
/// pass) until `min_seconds` have gone by. 0 for an empty mix.
pub fn bare_matmul_gflops(calls: &[(MatmulCall, u64)], min_seconds: f64) -> f64 {
    // Each call's `a`, `b` and destination.
    type Buffers = (Vec<f32>, Vec<f32>, Vec<f32>);
    let mut operands: Vec<(MatmulCall, u64, Buffers)> = calls
        .iter()
        .map(|&(c, count)| {
            let a = (0..operand_span((c.m, c.k), c.a_strides) as usize)
                .map(|i| (i % 7) as f32 * 0.1)
                .collect();
            let b = (0..operand_span((c.k, c.n), c.b_strides) as usize)
                .map(|i| (i % 5) as f32 * 0.1)
                .collect();
            (c, count, (a, b, vec![0.0f32; c.m * c.n]))
        })
        .collect();
    let multiply_adds: f64 = calls
        .iter()
        .map(|(c, count)| (c.m * c.k * c.n) as f64 * *count as f64)
        .sum();
    if multiply_adds == 0.0 {
        return 0.0;
    }
    let mut pass = || {
        let start = std::time::Instant::now();
        for (c, count, (a, b, dst)) in operands.iter_mut() {
            for _ in 0..*count {
                matmul(
                    (c.m, c.k, c.n),
                    c.accumulate,
                    a,
                    c.a_strides,
                    b,
                    c.b_strides,
                    dst,
                );
            }
        }
        start.elapsed().as_secs_f64()
    };
    pass();
    let started = std::time::Instant::now();
    let mut best = f64::INFINITY;
    while best.is_infinite() || started.elapsed().as_secs_f64() < min_seconds {
        best = best.min(pass());
    }
    2.0 * multiply_adds / best.max(1e-12) / 1e9
}

/// `dst = a · b` for dense row-major `a: m × k`, `b: k × n`, `dst: m × n`, through the
/// fused kernels' matmul (for benchmarks of the matmul alone).
pub fn matmul_dense(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], dst: &mut [f32]) {
    assert!(
        a.len() >= m * k && b.len() >= k * n,
        "matmul_dense: operand too small"
    );
    matmul(
        (m, k, n),
        false,
        a,
        (k as isize, 1),
        b,
        (n as isize, 1),
        dst,
    );
}

/// `dst (m × n) = [dst +] a · b` on row-major buffers, with `a` read as `m × k` through
/// its strides `(row, column)` and `b` as `k × n`, on the calling thread: gemm's own
/// threading splits inside one product and, at these sizes (k and n of 2 to 300), was
/// slower on 2 threads than on 1; the MLP kernels split whole passes by rows instead.
#[allow(clippy::too_many_arguments)]
fn matmul(
    (m, k, n): (usize, usize, usize),
    accumulate: bool,
    a: &[f32],
    a_strides: (isize, isize),
    b: &[f32],
    b_strides: (isize, isize),
    dst: &mut [f32],
) {
    assert!(dst.len() >= m * n, "matmul: destination smaller than m × n");
    check_operand("a", (m, k), a_strides, a.len());
    check_operand("b", (k, n), b_strides, b.len());
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: `dst` holds at least m × n initialised elements.
    unsafe {
        matmul_raw(
            (m, k, n),
            accumulate,
            a,
            a_strides,
            b,
            b_strides,
            dst.as_mut_ptr(),
        )
    }
}

/// `a · b` into a new `m × n` buffer, which gemm writes without reading: no zero-fill
/// first (that memset was 10% of a GCD iteration).
fn matmul_new(
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    a_strides: (isize, isize),
    b: &[f32],
    b_strides: (isize, isize),
) -> Vec<f32> {
    let len = m * n;
    check_operand("a", (m, k), a_strides, a.len());
    check_operand("b", (k, n), b_strides, b.len());
    if k == 0 {
        return vec![0.0; len];
    }
    let mut out: Vec<f32> = Vec::with_capacity(len);
    // SAFETY: without `accumulate` gemm writes every element of the m × n destination
    // (and reads none), so all `len` elements are initialised before `set_len`.
    unsafe {
        matmul_raw(
            (m, k, n),
            false,
            a,
            a_strides,
            b,
            b_strides,
            out.as_mut_ptr(),
        );
        out.set_len(len);
    }
    out
}

/// Checks that a `rows × cols` operand read through non-negative `(row, column)` strides
/// stays inside a buffer of `len` elements, as [`matmul_raw`] requires; panics with the
/// shapes otherwise.
fn check_operand(name: &str, (rows, cols): (usize, usize), strides: (isize, isize), len: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        strides.0 >= 0 && strides.1 >= 0,
        "matmul: operand {name} has negative strides {strides:?}"
    );
    let last = operand_span((rows, cols), strides) - 1;
    assert!(
        last < len as u128,
        "matmul: operand {name} is {rows} × {cols} with strides {strides:?}, which reaches \
         element {last} of a buffer of {len}"
    );
}

/// How many elements of its buffer a `rows × cols` operand read through `(row, column)`
/// strides spans: one past the last it reaches, 0 when it is empty (negative strides
/// count as 0; [`check_operand`] refuses them).
fn operand_span((rows, cols): (usize, usize), strides: (isize, isize)) -> u128 {
    if rows == 0 || cols == 0 {
        return 0;
    }
    (rows - 1) as u128 * strides.0.max(0) as u128
        + (cols - 1) as u128 * strides.1.max(0) as u128
        + 1
}

/// The body of [`matmul`] on a raw destination.
///
/// # Safety
/// `dst` must be valid for writes (and, with `accumulate`, reads) of `m × n` elements,
/// and `a`, `b` must hold every element their shapes and strides reach.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_raw(
    (m, k, n): (usize, usize, usize),
    accumulate: bool,
    a: &[f32],
    a_strides: (isize, isize),
    b: &[f32],
    b_strides: (isize, isize),
    dst: *mut f32,
) {
    if m == 0 || n == 0 {
        return;
    }
    MULTIPLY_ADDS.fetch_add((m * n * k) as u64, std::sync::atomic::Ordering::Relaxed);
    if RECORDING.load(std::sync::atomic::Ordering::Relaxed) {
        record(MatmulCall {
            m,
            k,
            n,
            accumulate,
            a_strides,
            b_strides,
        });
    }
    let start = std::time::Instant::now();
    // SAFETY: as the function's contract says.
    unsafe { matmul_dispatch((m, k, n), accumulate, a, a_strides, b, b_strides, dst) };
    MATMUL_NANOS.fetch_add(
        start.elapsed().as_nanos() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// [`matmul_raw`] without the counters: the narrow kernel or gemm.
///
/// # Safety
/// As [`matmul_raw`].
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_dispatch(
    (m, k, n): (usize, usize, usize),
    accumulate: bool,
    a: &[f32],
    a_strides: (isize, isize),
    b: &[f32],
    b_strides: (isize, isize),
    dst: *mut f32,
) {
    if n <= NARROW_OUTPUT && k >= 16 && a_strides.1 == 1 && a_strides.0 >= k as isize {
        // SAFETY: as the function's contract says; rows of `a` are contiguous.
        unsafe {
            matmul_narrow(
                m,
                k,
                n,
                accumulate,
                a,
                a_strides.0 as usize,
                b,
                b_strides,
                dst,
            )
        };
        return;
    }
    // SAFETY: as the function's contract says.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_strides.1,
            a_strides.0,
            b.as_ptr(),
            b_strides.1,
            b_strides.0,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Products with at most this many output columns (the networks' 1-4-wide output layers)
/// are dot products of `a`'s rows with `b`'s columns: gemm ran them at 7-30 GFLOP/s (its
/// micro-kernel tiles are 6 columns wide and it packs both operands for them).
const NARROW_OUTPUT: usize = 4;

/// `dst = [dst +] a · b` for at most [`NARROW_OUTPUT`] columns, with `a`'s rows contiguous
/// (row stride `a_row_stride`).
///
/// # Safety
/// As [`matmul_raw`].
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_narrow(
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
    a: &[f32],
    a_row_stride: usize,
    b: &[f32],
    b_strides: (isize, isize),
    dst: *mut f32,
) {
    // b's columns, each contiguous.
    let mut columns = vec![0.0f32; n * k];
    for (j, column) in columns.chunks_exact_mut(k).enumerate() {
        for (p, c) in column.iter_mut().enumerate() {
            *c = b[(p as isize * b_strides.0 + j as isize * b_strides.1) as usize];
        }
    }
    let mut products = vec![0.0f32; m * n];
    narrow_dots(a, a_row_stride, k, &columns, &mut products);
    for (i, v) in products.into_iter().enumerate() {
        // SAFETY: `i < m × n`, inside the destination.
        unsafe {
            let d = dst.add(i);
            *d = if accumulate { *d + v } else { v };
        }
    }
}

multiversion! {
    /// `out[i·n + j] = a_i · column_j` for the rows `a_i` (length `k`, `stride` apart) and
    /// the `n` columns, in 16 lanes per dot product.
    fn narrow_dots(a: &[f32], stride: usize, k: usize, columns: &[f32], out: &mut [f32]) {
        const LANES: usize = 16;
        let n = columns.len() / k;
        for (i, out_row) in out.chunks_exact_mut(n).enumerate() {
            let row = &a[i * stride..i * stride + k];
            for (o, column) in out_row.iter_mut().zip(columns.chunks_exact(k)) {
                let mut lanes = [0.0f32; LANES];
                let (mut x, mut y) = (row.chunks_exact(LANES), column.chunks_exact(LANES));
                for (xs, ys) in (&mut x).zip(&mut y) {
                    for ((l, a), b) in lanes.iter_mut().zip(xs).zip(ys) {
                        *l += a * b;
                    }
                }
                let tail: f32 = x.remainder().iter().zip(y.remainder()).map(|(a, b)| a * b).sum();
                *o = lanes.iter().sum::<f32>() + tail;
            }
        }
    }
}

/// An MLP call with at least this many multiply-adds (rows × the network's weights) runs
/// as several row blocks on the pool's threads ([`super::fork`]), forward and backward:
/// one fork per pass rather than one per product. With `rayon::join` (a parked worker to
/// wake, 30-100 µs on this 2-core VM) the break-even was 2^23; with the spinning helpers
/// it is far lower. Measured with `dgym bench`, 4 interleaved runs each (best of 4): 2^19
/// against 2^23 took T = 4 sampling at batch 200 from 267k to 427k samples/s and GCD at
/// batch 200 from 238 to 272 it/s, and was within the noise elsewhere.
const PARALLEL_MLP_MIN_WORK: usize = 1 << 19;

/// A block has at least this many rows once a pass has four or more: a pass of up to 511
/// rows runs as two halves, a larger one as 4, 8 or 16 blocks of 128-255 rows, which gemm
/// still runs near its rate.
const ROWS_PER_BLOCK: usize = 128;

/// The most blocks a pass is cut into: the cores of the largest machine this was sized
/// for (a 16-core GPU host). More blocks than threads balance by themselves (each thread
/// claims the next block), and each costs one more partial weight gradient to add.
const MAX_BLOCKS: usize = 16;

/// The row blocks of a pass over `rows` rows that costs `work` multiply-adds: one block
/// below 2^19 multiply-adds, else a power of two of near-equal blocks: at least two, at
/// most 16, with at least 128 rows and 2^18 multiply-adds each once there are more than
/// two. It depends on the pass's
/// shape alone, never on the thread count, so 1, 2 or 16 threads add the same partial
/// gradients in the same order and give the same numbers.
pub fn row_blocks(rows: usize, work: usize) -> Vec<Range<usize>> {
    let count = if rows < 2 || work < PARALLEL_MLP_MIN_WORK {
        1
    } else {
        let by_rows = (rows / ROWS_PER_BLOCK).max(2);
        let by_work = work / (PARALLEL_MLP_MIN_WORK / 2);
        let most = by_rows.min(by_work).min(MAX_BLOCKS);
        // The largest power of two at or below `most` (which is at least 2).
        1 << most.ilog2()
    };
    (0..count)
        .map(|i| i * rows / count..(i + 1) * rows / count)
        .collect()
}

/// `f(block, block_rows)` over the row blocks of `x` (`inputs` wide, row-major) that
/// [`row_blocks`] cuts a pass of `work` multiply-adds into, on the pool's threads.
fn in_row_blocks<R: Send>(
    x: &[f32],
    inputs: usize,
    rows: usize,
    work: usize,
    f: impl Fn(&[f32], usize) -> R + Sync,
) -> Vec<R> {
    let blocks = row_blocks(rows, work);
    if let [only] = blocks.as_slice() {
        return vec![f(x, only.len())];
    }
    super::fork::for_each_index(blocks.len(), |i| {
        let rows = blocks[i].clone();
        f(&x[rows.start * inputs..rows.end * inputs], rows.len())
    })
}

/// `f(block, its rows of the batch)` for each row block a forward pass ran as (see
/// [`in_row_blocks`]), on the pool's threads: a backward pass follows its forward pass's
/// blocks.
fn over_row_blocks<B: Sync, R: Send>(
    blocks: &[B],
    rows_of: impl Fn(&B) -> usize,
    f: impl Fn(&B, Range<usize>) -> R + Sync,
) -> Vec<R> {
    let mut start = 0;
    let ranges: Vec<Range<usize>> = blocks
        .iter()
        .map(|block| {
            let rows = start..start + rows_of(block);
            start = rows.end;
            rows
        })
        .collect();
    if let ([block], [rows]) = (blocks, ranges.as_slice()) {
        return vec![f(block, rows.clone())];
    }
    super::fork::for_each_index(blocks.len(), |i| f(&blocks[i], ranges[i].clone()))
}

/// One layer's weights on the host: `(W, b, inputs, outputs)`.
type HostLayer<'a> = (Cow<'a, [f32]>, Cow<'a, [f32]>, usize, usize);

/// The layers' weights and biases on the host, after checking the shapes every fused
/// kernel relies on (the buffers go to gemm and to loops that fill uninitialised memory by
/// them): the first layer takes `inputs` columns, each bias is `1 × out`, and each
/// layer's output width is the next one's input width. Panics with the shapes otherwise.
fn host_layers(layers: &[crate::nn::Linear<Cpu>], inputs: usize) -> Vec<HostLayer<'_>> {
    let mut width = inputs;
    layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let (n_in, n_out) = *l.weight.shape();
            assert_eq!(
                n_in, width,
                "MLP layer {i}: its weight is {n_in} × {n_out}, but its input is {width} wide"
            );
            assert_eq!(
                *l.bias.shape(),
                (1, n_out),
                "MLP layer {i}: its bias is {:?}, its weight {n_in} × {n_out} needs 1 × {n_out}",
                l.bias.shape()
            );
            width = n_out;
            (host_data(&l.weight), host_data(&l.bias), n_in, n_out)
        })
        .collect()
}

/// A block of rows' forward pass: the output and what backward needs (each layer's
/// input after the first, and SiLU's sigmoids).
struct ForwardBlock {
    rows: usize,
    output: Vec<f32>,
    hidden_inputs: Vec<Vec<f32>>,
    sigmoids: Vec<Vec<f32>>,
}

/// The forward pass of `rows` rows of `x` (`rows × inputs`, row-major); `keep` keeps
/// what backward needs.
fn forward_block(
    layers: &[HostLayer<'_>],
    activation: Activation,
    x: &[f32],
    rows: usize,
    keep: bool,
) -> ForwardBlock {
    let mut hidden_inputs = Vec::new();
    let mut sigmoids = Vec::new();
    let mut current: Option<Vec<f32>> = None;
    for (l, (weight, bias, n_in, n_out)) in layers.iter().enumerate() {
        let (n_in, n_out) = (*n_in, *n_out);
        let input: &[f32] = current.as_deref().unwrap_or(x);
        // The bias is added in the activation's pass over the product, as dfdx adds it
        // after the matmul.
        let mut z = matmul_new(
            (rows, n_in, n_out),
            input,
            (n_in as isize, 1),
            weight,
            (n_out as isize, 1),
        );
        if let Some(previous) = current.take() {
            if keep {
                hidden_inputs.push(previous);
            }
        }
        let output = if l + 1 == layers.len() {
            add_bias(&mut z, bias);
            z
        } else {
            match activation {
                Activation::Relu => {
                    add_bias_relu(&mut z, bias);
                    z
                }
                Activation::Silu if keep => {
                    let len = z.len();
                    let mut h: Vec<f32> = Vec::with_capacity(len);
                    add_bias_silu_keep_sigmoid(&mut z, bias, &mut h.spare_capacity_mut()[..len]);
                    // SAFETY: the pass above wrote all `len` elements (z's length is a
                    // multiple of the bias length: rows × n_out).
                    unsafe { h.set_len(len) };
                    sigmoids.push(z);
                    h
                }
                Activation::Silu => {
                    add_bias_silu(&mut z, bias);
                    z
                }
            }
        };
        current = Some(output);
    }
    ForwardBlock {
        rows,
        output: current.unwrap_or_else(|| x.to_vec()),
        hidden_inputs,
        sigmoids,
    }
}

/// The gradients one block of rows contributes.
struct BlockGradients {
    weights: Vec<Vec<f32>>,
    biases: Vec<Vec<f32>>,
    input: Vec<f32>,
}

/// Back-propagates `upstream` (the block's `rows × outputs` output gradient) through the
/// layers: every weight's and bias's gradient over the block's rows, and the gradient of
/// its input (`rows × inputs`).
fn backward_block(
    layers: &[HostLayer<'_>],
    activation: Activation,
    x: &[f32],
    block: &ForwardBlock,
    upstream: &[f32],
    weight_gradients: bool,
) -> BlockGradients {
    let rows = block.rows;
    // Without weight gradients both stay empty, and `accumulate` adds nothing.
    let kept = if weight_gradients { layers.len() } else { 0 };
    let mut weights = vec![Vec::new(); kept];
    let mut biases = vec![Vec::new(); kept];
    let mut g = upstream.to_vec();
    for l in (0..layers.len()).rev() {
        let (weight, _, n_in, n_out) = &layers[l];
        let (n_in, n_out) = (*n_in, *n_out);
        if weight_gradients {
            let input: &[f32] = if l == 0 {
                x
            } else {
                &block.hidden_inputs[l - 1]
            };
            // dW = aᵀ g: aᵀ is `n_in × rows`, read through a's strides swapped.
            weights[l] = matmul_new(
                (n_in, rows, n_out),
                input,
                (1, n_in as isize),
                &g,
                (n_out as isize, 1),
            );
            let mut bias = vec![0.0; n_out];
            for row in g.chunks_exact(n_out) {
                add_into(&mut bias, row);
            }
            biases[l] = bias;
        }
        // g Wᵀ: Wᵀ is `n_out × n_in`, read through W's strides swapped.
        let mut below = matmul_new(
            (rows, n_out, n_in),
            &g,
            (n_out as isize, 1),
            weight,
            (1, n_out as isize),
        );
        if l > 0 {
            match activation {
                Activation::Relu => relu_mask(&mut below, &block.hidden_inputs[l - 1]),
                Activation::Silu => silu_backward(
                    &mut below,
                    &block.sigmoids[l - 1],
                    &block.hidden_inputs[l - 1],
                ),
            }
        }
        g = below;
    }
    BlockGradients {
        weights,
        biases,
        input: g,
    }
}

/// Adds the row blocks' weight, bias and input gradients into `grads` (the blocks in row
/// order: each one's input gradient goes to its rows of `x`).
fn add_block_gradients(
    grads: &mut Gradients<f32, Cpu>,
    layers: &[crate::nn::Linear<Cpu>],
    blocks: &[BlockGradients],
    x: &Matrix<Cpu>,
) -> Result<(), CpuError> {
    let mut offset = 0;
    for block in blocks {
        accumulate(grads, layers, block)?;
        let grad_x = grads.get_or_alloc_mut(x)?;
        add_into(
            &mut grad_x[offset..offset + block.input.len()],
            &block.input,
        );
        offset += block.input.len();
    }
    Ok(())
}

/// Adds a block's weight and bias gradients into `grads` (none for a frozen pass).
fn accumulate(
    grads: &mut Gradients<f32, Cpu>,
    layers: &[crate::nn::Linear<Cpu>],
    block: &BlockGradients,
) -> Result<(), CpuError> {
    for ((layer, weight), bias) in layers.iter().zip(&block.weights).zip(&block.biases) {
        add_into(grads.get_or_alloc_mut(&layer.weight)?, weight);
        add_into(grads.get_or_alloc_mut(&layer.bias)?, bias);
    }
    Ok(())
}

/// The MLP's forward pass on the CPU as one fused op; with a tape, one backward closure
/// computes every gradient (see the module doc). Large calls run in two row blocks, one
/// per core (above 2^19 multiply-adds; see `PARALLEL_MLP_MIN_WORK`).
pub fn mlp_forward<T: Tape<f32, Cpu> + Merge<T>>(
    mlp: &Mlp<Cpu>,
    x: Matrix<Cpu, T>,
) -> Matrix<Cpu, T> {
    mlp_forward_with(mlp, x, true)
}

/// [`crate::tensor::Backend::mlp_forward_frozen`] on the CPU: [`mlp_forward`] whose
/// backward computes the input's gradient only (no `aᵀ g` products, no bias sums).
pub fn mlp_forward_frozen<T: Tape<f32, Cpu> + Merge<T>>(
    mlp: &Mlp<Cpu>,
    x: Matrix<Cpu, T>,
) -> Matrix<Cpu, T> {
    mlp_forward_with(mlp, x, false)
}

fn mlp_forward_with<T: Tape<f32, Cpu> + Merge<T>>(
    mlp: &Mlp<Cpu>,
    x: Matrix<Cpu, T>,
    weight_gradients: bool,
) -> Matrix<Cpu, T> {
    let dev = x.device().clone();
    let (rows, inputs) = *x.shape();
    let (x, mut tape) = x.split_tape();
    let activation = mlp.activation;
    let n_out = mlp.layers.last().map_or(inputs, |l| l.outputs());
    let weights_per_row: usize = mlp.layers.iter().map(|l| l.inputs() * l.outputs()).sum();
    let mut blocks: Vec<ForwardBlock> = {
        let layers = host_layers(&mlp.layers, inputs);
        in_row_blocks(
            &host_data(&x),
            inputs,
            rows,
            rows * weights_per_row,
            |block, n| forward_block(&layers, activation, block, n, T::OWNS_TAPE),
        )
    };
    // Backward does not read the outputs: move them out rather than copy.
    let output_data: Vec<f32> = if blocks.len() == 1 {
        std::mem::take(&mut blocks[0].output)
    } else {
        blocks
            .iter_mut()
            .flat_map(|b| std::mem::take(&mut b.output))
            .collect()
    };
    let out = dev.tensor_from_vec(output_data, (rows, n_out));
    if !T::OWNS_TAPE {
        return out.put_tape(tape);
    }
    let linear_layers = mlp.layers.clone();
    let out_ghost = out.ghost();
    tape.add_backward_op(move |grads| {
        let upstream: Vec<f32> = grads.get_or_alloc_mut(&out_ghost)?.to_vec();
        let block_grads: Vec<BlockGradients> = {
            let layers = host_layers(&linear_layers, inputs);
            let x_host = host_data(&x);
            over_row_blocks(
                &blocks,
                |block| block.rows,
                |block, rows| {
                    backward_block(
                        &layers,
                        activation,
                        &x_host[rows.start * inputs..rows.end * inputs],
                        block,
                        &upstream[rows.start * n_out..rows.end * n_out],
                        weight_gradients,
                    )
                },
            )
        };
        add_block_gradients(grads, &linear_layers, &block_grads, &x)
    });
    out.put_tape(tape)
}

/// [`crate::tensor::Backend::mlp_forward_constant_suffix`] on the CPU: the suffix's part
/// of the first layer, `suffix · W_1[cols..] + b_1`, is one row for the whole batch, so
/// the first product shrinks to `x · W_1[..cols]` (k = 2 instead of 18 for the policy: the
/// k = 18 product ran at half gemm's rate), and no `[x, emb]` input is built.
pub fn mlp_forward_constant_suffix(mlp: &Mlp<Cpu>, x: &Matrix<Cpu>, suffix: &[f32]) -> Matrix<Cpu> {
    let dev = x.device().clone();
    let (rows, cols) = *x.shape();
    let mut layers = host_layers(&mlp.layers, cols + suffix.len());
    let Some(first) = layers.first_mut() else {
        return x.clone();
    };
    let (weight, bias, _, n_out) = first;
    let mut shifted_bias = bias.to_vec();
    for (s, row) in suffix
        .iter()
        .zip(weight[cols * *n_out..].chunks_exact(*n_out))
    {
        for (b, w) in shifted_bias.iter_mut().zip(row) {
            *b += s * w;
        }
    }
    *first = (
        match std::mem::take(weight) {
            Cow::Borrowed(w) => Cow::Borrowed(&w[..cols * *n_out]),
            Cow::Owned(mut w) => {
                w.truncate(cols * *n_out);
                Cow::Owned(w)
            }
        },
        Cow::Owned(shifted_bias),
        cols,
        *n_out,
    );
    let weights_per_row: usize = layers.iter().map(|(_, _, i, o)| i * o).sum();
    let activation = mlp.activation;
    let n_outputs = layers.last().map_or(cols, |l| l.3);
    let output: Vec<f32> = in_row_blocks(
        &host_data(x),
        cols,
        rows,
        rows * weights_per_row,
        |block, n| forward_block(&layers, activation, block, n, false).output,
    )
    .concat();
    dev.tensor_from_vec(output, (rows, n_outputs))
}

multiversion! {
    /// `dst += src`, element-wise.
    fn add_into(dst: &mut [f32], src: &[f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d += s;
        }
    }
}

multiversion! {
    /// `g ← g · [h > 0]`: ReLU's derivative read off its output (a select on every
    /// element: a conditional store kept the loop scalar, 29% of a DDAEBM step).
    fn relu_mask(g: &mut [f32], h: &[f32]) {
        for (g, &h) in g.iter_mut().zip(h) {
            *g = if h > 0.0 { *g } else { 0.0 };
        }
    }
}

/// For a ReLU MLP with one output, `D(x)` per row and its input gradient `∇_x D`
/// restricted to the first `dim` columns, both differentiable in the weights, as one op
/// (DDAEBM's R1 penalty needs `‖∇_x D‖²` as a function of φ; dfdx has no double
/// backward). The forward and the chain `g ← (g ⊙ [a_l > 0]) W_lᵀ` run on host buffers,
/// and the backward closure adds both paths into the weight gradients: the value's
/// (ordinary backprop) and the chain's (`dW_l += Pᵀ δ_l`, `P ← (P W_l) ⊙ [a_l > 0]`,
/// the top weight through the column sums of P). ReLU's masks are constant, so the
/// chain sends nothing into biases or the input, as double backward through a ReLU
/// does in PyTorch. The value carries an empty tape and the gradient the whole one, as
/// the composed version in `denoise-gym-agents` (`StepEnergy::value_and_input_gradient`).
pub fn relu_mlp_value_and_input_gradient<T: Tape<f32, Cpu> + Merge<T>>(
    mlp: &Mlp<Cpu>,
    x: Matrix<Cpu, T>,
    dim: usize,
) -> (Vector<Cpu, T>, Matrix<Cpu, T>) {
    assert_eq!(mlp.activation, Activation::Relu, "a ReLU network");
    assert_eq!(
        mlp.layers.last().map(|l| l.outputs()),
        Some(1),
        "one output"
    );
    let dev = x.device().clone();
    let (rows, inputs) = *x.shape();
    assert!(dim <= inputs, "dim within the input width");
    let (x, mut tape) = x.split_tape();
    let weights_per_row: usize = mlp.layers.iter().map(|l| l.inputs() * l.outputs()).sum();
    let mut blocks: Vec<InputGradientBlock> = {
        let host = host_layers(&mlp.layers, inputs);
        // Twice the work of a forward per row (the value and the chain).
        in_row_blocks(
            &host_data(&x),
            inputs,
            rows,
            2 * rows * weights_per_row,
            |block, n| input_gradient_block(&host, block, n, dim),
        )
    };
    let value_data: Vec<f32> = blocks
        .iter_mut()
        .flat_map(|b| std::mem::take(&mut b.forward.output))
        .collect();
    let gradient_data: Vec<f32> = blocks
        .iter_mut()
        .flat_map(|b| std::mem::take(&mut b.gradient))
        .collect();
    let value = dev.tensor_from_vec(value_data, (rows,));
    let gradient = dev.tensor_from_vec(gradient_data, (rows, dim));
    if !T::OWNS_TAPE {
        return (value.put_tape(T::default()), gradient.put_tape(tape));
    }
    let layers = mlp.layers.clone();
    let (value_ghost, gradient_ghost) = (value.ghost(), gradient.ghost());
    tape.add_backward_op(move |grads| {
        let grad_value: Vec<f32> = grads.get_or_alloc_mut(&value_ghost)?.to_vec();
        let grad_gradient: Vec<f32> = grads.get_or_alloc_mut(&gradient_ghost)?.to_vec();
        let block_grads: Vec<BlockGradients> = {
            let x_host: Cow<[f32]> = host_data(&x);
            let host = host_layers(&layers, inputs);
            over_row_blocks(
                &blocks,
                |block| block.forward.rows,
                |block, rows| {
                    input_gradient_backward(
                        &host,
                        &x_host[rows.start * inputs..rows.end * inputs],
                        block,
                        &grad_value[rows.clone()],
                        &grad_gradient[rows.start * dim..rows.end * dim],
                        dim,
                    )
                },
            )
        };
        add_block_gradients(grads, &layers, &block_grads, &x)
    });
    (value.put_tape(T::default()), gradient.put_tape(tape))
}

/// A block of rows' forward pass for [`relu_mlp_value_and_input_gradient`]: the value
/// (in `forward.output`), the chain's `δ_l` per hidden layer, and `∇_x D` (`rows × dim`).
struct InputGradientBlock {
    forward: ForwardBlock,
    deltas: Vec<Vec<f32>>,
    gradient: Vec<f32>,
}

fn input_gradient_block(
    host: &[HostLayer<'_>],
    x: &[f32],
    rows: usize,
    dim: usize,
) -> InputGradientBlock {
    let n_layers = host.len();
    let inputs = host[0].2;
    let forward = forward_block(host, Activation::Relu, x, rows, true);
    // ∂D/∂a_{L-1} = W_Lᵀ for every row, then down the hidden layers.
    let top = &host[n_layers - 1].0;
    let mut g: Vec<f32> = Vec::with_capacity(rows * top.len());
    for _ in 0..rows {
        g.extend_from_slice(top);
    }
    let mut deltas: Vec<Vec<f32>> = Vec::with_capacity(n_layers - 1);
    for l in (0..n_layers - 1).rev() {
        let (weight, _, n_in, n_out) = &host[l];
        let (n_in, n_out) = (*n_in, *n_out);
        relu_mask(&mut g, &forward.hidden_inputs[l]);
        let below = matmul_new(
            (rows, n_out, n_in),
            &g,
            (n_out as isize, 1),
            weight,
            (1, n_out as isize),
        );
        deltas.push(std::mem::replace(&mut g, below));
    }
    deltas.reverse();
    let gradient: Vec<f32> = g
        .chunks_exact(inputs)
        .flat_map(|row| row[..dim].iter().copied())
        .collect();
    InputGradientBlock {
        forward,
        deltas,
        gradient,
    }
}

/// One block's share of the gradients of [`relu_mlp_value_and_input_gradient`]: the
/// value's path (ordinary backprop, with the input gradient) plus the chain's path added
/// into the weight gradients.
fn input_gradient_backward(
    host: &[HostLayer<'_>],
    x: &[f32],
    block: &InputGradientBlock,
    grad_value: &[f32],
    grad_gradient: &[f32],
    dim: usize,
) -> BlockGradients {
    let n_layers = host.len();
    let inputs = host[0].2;
    let rows = block.forward.rows;
    let mut grads = backward_block(host, Activation::Relu, x, &block.forward, grad_value, true);
    let activations = &block.forward.hidden_inputs;
    // The chain's path, from the input side up: P = ∂L/∂g_l.
    let mut p = vec![0.0f32; rows * inputs];
    for (row, upstream) in p
        .chunks_exact_mut(inputs)
        .zip(grad_gradient.chunks_exact(dim))
    {
        row[..dim].copy_from_slice(upstream);
    }
    for l in 0..n_layers - 1 {
        let (weight, _, n_in, n_out) = &host[l];
        let (n_in, n_out) = (*n_in, *n_out);
        // g_l = δ_l W_lᵀ: dW_l += Pᵀ δ_l, ∂L/∂δ_l = P W_l.
        matmul(
            (n_in, rows, n_out),
            true,
            &p,
            (1, n_in as isize),
            &block.deltas[l],
            (n_out as isize, 1),
            &mut grads.weights[l],
        );
        let mut above = matmul_new(
            (rows, n_in, n_out),
            &p,
            (n_in as isize, 1),
            weight,
            (n_out as isize, 1),
        );
        relu_mask(&mut above, &activations[l]);
        p = above;
    }
    // The chain started from W_Lᵀ broadcast over rows: its gradient is P's column sums.
    let top = &mut grads.weights[n_layers - 1];
    for row in p.chunks_exact(top.len()) {
        add_into(top, row);
    }
    grads
}

/// One Adam step on one parameter, in place: the same f32 operations, in the same order,
/// as [`crate::optim::Adam::update`]'s composed path. Returns `false` (and does nothing)
/// when a buffer is not dense, so the caller can fall back.
pub fn adam_step(
    param: &mut Matrix<Cpu>,
    grad: &Matrix<Cpu>,
    moments: (&mut Matrix<Cpu>, &mut Matrix<Cpu>),
    betas: [f64; 2],
    lr_t: f32,
    eps_t: f32,
) -> bool {
    let (moment1, moment2) = moments;
    let shapes = [
        param.shape(),
        grad.shape(),
        moment1.shape(),
        moment2.shape(),
    ];
    assert!(
        shapes.iter().all(|s| *s == shapes[0]),
        "adam_step: parameter, gradient and moments must have one shape, got {shapes:?}"
    );
    let Some(g) = host_view(grad) else {
        return false;
    };
    let (Some(m), Some(v), Some(p)) = (
        host_view_mut(moment1),
        host_view_mut(moment2),
        host_view_mut(param),
    ) else {
        return false;
    };
    // The coefficients are rounded to f32 from f64, as dfdx's `axpy` does.
    let [beta1, beta2] = betas;
    let (one_minus_beta1, one_minus_beta2) = ((1.0 - beta1) as f32, (1.0 - beta2) as f32);
    let (beta1, beta2) = (beta1 as f32, beta2 as f32);
    let coefficients = [beta1, beta2, one_minus_beta1, one_minus_beta2];
    // Element-wise: any cut gives the same numbers, so this one may follow the threads.
    let pieces = (p.len() / PARALLEL_ELEMENTWISE_MIN).clamp(1, super::fork::threads());
    if pieces == 1 {
        adam_elementwise(p, (m, v), g, coefficients, lr_t, eps_t);
    } else {
        let chunk = p.len().div_ceil(pieces);
        let parts: Vec<std::sync::Mutex<_>> = p
            .chunks_mut(chunk)
            .zip(m.chunks_mut(chunk))
            .zip(v.chunks_mut(chunk))
            .zip(g.chunks(chunk))
            .map(|parts| std::sync::Mutex::new(Some(parts)))
            .collect();
        super::fork::for_each_index(parts.len(), |i| {
            // Each index takes its own part, once.
            let part = parts[i].lock().ok().and_then(|mut part| part.take());
            if let Some((((p, m), v), g)) = part {
                adam_elementwise(p, (m, v), g, coefficients, lr_t, eps_t);
            }
        });
    }
    true
}

/// A parameter with at least this many elements per thread takes its Adam step in pieces
/// on the pool's threads: the step streams four buffers that a training iteration has mostly evicted
/// from cache, and each core brings its own bandwidth (DDAEBM's 300 × 300 weights).
const PARALLEL_ELEMENTWISE_MIN: usize = 1 << 15;

multiversion! {
    /// Adam's element-wise update, `coefficients = [β1, β2, 1-β1, 1-β2]` (16 lanes of
    /// `sqrt` and division instead of the baseline's 4 took a 29k-parameter step from
    /// 53 to 40 µs, measured in `dgym bench`).
    fn adam_elementwise(
        p: &mut [f32],
        moments: (&mut [f32], &mut [f32]),
        g: &[f32],
        coefficients: [f32; 4],
        lr_t: f32,
        eps_t: f32
    ) {
        let (m, v) = moments;
        let [beta1, beta2, one_minus_beta1, one_minus_beta2] = coefficients;
        for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
            *m = *m * beta1 + g * one_minus_beta1;
            *v = *v * beta2 + (g * g) * one_minus_beta2;
            let direction = *m / (v.sqrt() + eps_t);
            *p += direction * -lr_t;
        }
    }
}

/// `Σ x²` of a CPU matrix in one pass: f32 partial sums over blocks of 1024 elements (in
/// 16 interleaved lanes, so that the loop vectorises; one running f32 sum was bound by
/// the latency of its additions), added up in f64.
pub fn squared_norm(x: &Matrix<Cpu>) -> f64 {
    match host_view(x) {
        Some(data) => {
            let mut total = 0.0;
            sum_of_squares(data, &mut total);
            total
        }
        None => x.as_vec().iter().map(|&v| (v as f64) * (v as f64)).sum(),
    }
}

multiversion! {
    /// `total ← Σ data²` as [`squared_norm`] describes.
    fn sum_of_squares(data: &[f32], total: &mut f64) {
        const LANES: usize = 16;
        let mut sum = 0.0f64;
        for block in data.chunks(1024) {
            let mut lanes = [0.0f32; LANES];
            let mut groups = block.chunks_exact(LANES);
            for group in &mut groups {
                for (lane, v) in lanes.iter_mut().zip(group) {
                    *lane += v * v;
                }
            }
            let tail: f32 = groups.remainder().iter().map(|v| v * v).sum();
            sum += (lanes.iter().sum::<f32>() + tail) as f64;
        }
        *total = sum;
    }
}
