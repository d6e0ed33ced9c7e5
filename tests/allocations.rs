//! After warm-up, a sampling step allocates nothing: outputs, noise and history live in
//! recycled buffers. Checked with a counting global allocator around the step-level API.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use mrsampler::schedule::{IrSdeSchedule, TimeGrid};
use mrsampler::{
    FitTarget, MrSampler, Parallelism, Parameterization, PhiloxNoise, Sampler, Solver,
};
use ndarray::{ArrayD, IxDyn};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether allocations on this thread are counted: the measuring thread and the workers of
    /// the test's own rayon pool, not the test harness's other threads.
    static COUNTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTED.with(|c| c.get()) {
            ALLOCS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: forwards the caller's layout unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with this layout (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counter is process-wide: the tests of this file run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Allocations made by steps 4..M of one pass (the first three fill the history).
fn allocations_after_warm_up(
    solver: Solver,
    param: Parameterization,
    par: Parallelism,
    shape: &[usize],
) -> usize {
    allocations_with(solver, param, par, shape, &mut PhiloxNoise::new(1))
}

fn allocations_with<N: mrsampler::NoiseSource<ArrayD<f32>>>(
    solver: Solver,
    param: Parameterization,
    par: Parallelism,
    shape: &[usize],
    noise: &mut N,
) -> usize {
    let s = MrSampler::new(IrSdeSchedule::da_clip(), 12)
        .unwrap()
        .with_solver(solver)
        .unwrap()
        .with_parameterization(param)
        .unwrap()
        .with_grid(TimeGrid::UniformLambda)
        .unwrap()
        .with_parallelism(par)
        .unwrap();
    let mu = ArrayD::<f32>::from_elem(IxDyn(shape), 0.4);
    let net = ArrayD::<f32>::from_elem(IxDyn(shape), 0.1); // a zero-cost "network" output
    let was_counted = COUNTED.with(|c| c.replace(true));
    let mut run = s.start(FitTarget::Noise, &mu, None, noise).unwrap();
    let mut k = 0;
    let mut counted = 0;
    while run.pending().is_some() {
        let before = ALLOCS.load(Ordering::SeqCst);
        run.advance(&net, noise).unwrap();
        let after = ALLOCS.load(Ordering::SeqCst);
        k += 1;
        if k > 3 {
            counted += after - before;
        }
    }
    COUNTED.with(|c| c.set(was_counted));
    counted
}

#[test]
fn steps_do_not_allocate_after_warm_up() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for solver in [
        (Solver::ode(1)),
        (Solver::ode(2)),
        (Solver::ode(3)),
        (Solver::sde(1)),
        (Solver::sde(2)),
    ] {
        for param in [Parameterization::Data, Parameterization::Noise] {
            let n =
                allocations_after_warm_up(solver, param, Parallelism::Sequential, &[2, 3, 16, 16]);
            assert_eq!(n, 0, "{solver:?} {param:?}: {n} allocations");
        }
    }
}

/// Singlestep: the stages live in two recycled stage buffers (the first step of order 3 fills
/// the history and both).
#[test]
fn singlestep_steps_do_not_allocate_after_warm_up() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for order in 1..=3 {
        for param in [Parameterization::Data, Parameterization::Noise] {
            let n = allocations_with(
                Solver::ode_singlestep(order),
                param,
                Parallelism::Sequential,
                &[2, 3, 16, 16],
                &mut PhiloxNoise::new(1),
            );
            assert_eq!(n, 0, "singlestep-{order} {param:?}: {n} allocations");
        }
    }
}

/// With rayon splitting the kernels (tensors above the 32 768-element threshold), counting
/// the allocations of the pool's worker threads too.
#[test]
fn threaded_steps_do_not_allocate_after_warm_up() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .start_handler(|_| COUNTED.with(|c| c.set(true)))
        .build()
        .unwrap();
    let measure = || {
        allocations_after_warm_up(
            Solver::sde(2),
            Parameterization::Data,
            Parallelism::Rayon(2),
            &[2, 3, 128, 128],
        )
    };
    // The first pass warms the pool's threads up (their own state, allocated once).
    let _ = pool.install(measure);
    let n = pool.install(measure);
    assert_eq!(n, 0, "{n} allocations");
    // The workers are counted: work that allocates on them shows.
    let seen = pool.install(|| {
        let before = ALLOCS.load(Ordering::SeqCst);
        pool.broadcast(|ctx| {
            let v: Vec<u8> = Vec::with_capacity(std::hint::black_box(64 + ctx.index()));
            std::hint::black_box(&v);
            v.capacity()
        });
        ALLOCS.load(Ordering::SeqCst) - before
    });
    assert!(seen >= 2, "{seen}");
}

/// The counter does see allocations: the host-side seeded generator allocates per draw.
#[test]
fn counter_sees_allocating_noise() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = allocations_with(
        Solver::sde(1),
        Parameterization::Data,
        Parallelism::Sequential,
        &[1, 8],
        &mut mrsampler::SeededNoise::new(0),
    );
    assert!(n >= 8, "{n}");
}
