//! After warm-up, a sampling step allocates nothing: outputs, noise and history live in
//! recycled buffers. Checked with a counting global allocator around the step-level API.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use mrsampler::schedule::{IrSdeSchedule, TimeGrid};
use mrsampler::solver::SolverType;
use mrsampler::{
    FitTarget, MrSampler, Parallelism, Parameterization, PhiloxNoise, Sampler, Stepping,
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
    solver: SolverType,
    order: usize,
    param: Parameterization,
    par: Parallelism,
    shape: &[usize],
) -> usize {
    allocations_with(
        solver,
        order,
        param,
        par,
        shape,
        Stepping::Multistep,
        &mut PhiloxNoise::new(1),
    )
}

fn allocations_with<N: mrsampler::NoiseSource<ArrayD<f32>>>(
    solver: SolverType,
    order: usize,
    param: Parameterization,
    par: Parallelism,
    shape: &[usize],
    stepping: Stepping,
    noise: &mut N,
) -> usize {
    let s = MrSampler::new(IrSdeSchedule::da_clip(), 12)
        .unwrap()
        .with_solver(solver, order)
        .unwrap()
        .with_parameterization(param)
        .with_grid(TimeGrid::UniformLambda)
        .unwrap()
        .with_stepping(stepping)
        .with_parallelism(par);
    let mu = ArrayD::<f32>::from_elem(IxDyn(shape), 0.4);
    let net = ArrayD::<f32>::from_elem(IxDyn(shape), 0.1); // a zero-cost "network" output
    COUNTED.with(|c| c.set(true));
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
    COUNTED.with(|c| c.set(false));
    counted
}

#[test]
fn steps_do_not_allocate_after_warm_up() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (solver, order) in [
        (SolverType::Ode, 1),
        (SolverType::Ode, 2),
        (SolverType::Ode, 3),
        (SolverType::Sde, 1),
        (SolverType::Sde, 2),
    ] {
        for param in [Parameterization::Data, Parameterization::Noise] {
            let n = allocations_after_warm_up(
                solver,
                order,
                param,
                Parallelism::Sequential,
                &[2, 3, 16, 16],
            );
            assert_eq!(n, 0, "{solver:?}-{order} {param:?}: {n} allocations");
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
                SolverType::Ode,
                order,
                param,
                Parallelism::Sequential,
                &[2, 3, 16, 16],
                Stepping::Singlestep,
                &mut PhiloxNoise::new(1),
            );
            assert_eq!(n, 0, "singlestep-{order} {param:?}: {n} allocations");
        }
    }
}

/// With rayon splitting the kernels (tensors above the 32 768-element threshold).
#[test]
fn threaded_steps_do_not_allocate_after_warm_up() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Warm rayon's pool up first: its threads allocate their own state once.
    let _ = allocations_after_warm_up(
        SolverType::Sde,
        2,
        Parameterization::Data,
        Parallelism::Rayon(2),
        &[2, 3, 128, 128],
    );
    let n = allocations_after_warm_up(
        SolverType::Sde,
        2,
        Parameterization::Data,
        Parallelism::Rayon(2),
        &[2, 3, 128, 128],
    );
    assert_eq!(n, 0, "{n} allocations");
}

/// The counter does see allocations: the host-side seeded generator allocates per draw.
#[test]
fn counter_sees_allocating_noise() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = allocations_with(
        SolverType::Sde,
        1,
        Parameterization::Data,
        Parallelism::Sequential,
        &[1, 8],
        Stepping::Multistep,
        &mut mrsampler::SeededNoise::new(0),
    );
    assert!(n >= 8, "{n}");
}
