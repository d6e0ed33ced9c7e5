//! The step-level scheduler: one thread owns the network and every running request's
//! [`Run`]; each round it puts the pending evaluations of runs that can share a call (same
//! image shape; the same time too when the network takes one time per call) into one batched
//! call, advances each run, admits waiting requests and answers finished ones at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use mrsampler::schedule::IrSdeSchedule;
use mrsampler::{PhiloxNoise, Run, Sampler, SamplerSpec, ScoreModel};
use mrsampler_models::Contexts;
use tokio::sync::{mpsc, oneshot};

use super::metrics::Metrics;
use crate::images::Picture;
use crate::sampling::Model;
use crate::spec::ToolSpec;

/// Why a request failed once it was admitted.
#[derive(Debug)]
pub enum Failure {
    /// Past its deadline (answered 504).
    Timeout,
    /// The network or the sampler failed (answered 500).
    Internal(String),
}

/// A restore request, validated by the HTTP layer.
pub struct Job {
    pub picture: Picture,
    pub spec: SamplerSpec,
    pub nfe: usize,
    /// The noise seed (the request's seed and name, as `restore` keys an image's noise).
    pub seed: u64,
    pub deadline: Instant,
    pub reply: oneshot::Sender<Result<Vec<u8>, Failure>>,
}

/// A request being sampled.
struct Active {
    picture: Picture,
    mu: Tensor,
    run: Run<Tensor>,
    noise: PhiloxNoise,
    contexts: Option<Contexts>,
    deadline: Instant,
    reply: oneshot::Sender<Result<Vec<u8>, Failure>>,
}

/// The scheduler's fixed settings.
pub struct Settings {
    pub schedule: IrSdeSchedule,
    pub device: Device,
    /// Most samples in one network call, and most requests running at once.
    pub max_batch: usize,
    /// Most pixels (over all running requests) sampled at once, the memory budget: a request
    /// that would pass it waits (first in line) until enough running ones finish; one request
    /// alone is always admitted.
    pub max_running_pixels: usize,
}

/// Runs until `jobs` is closed and every admitted request is answered.
pub fn run(
    mut model: Model,
    settings: Settings,
    mut jobs: mpsc::Receiver<Job>,
    metrics: Arc<Metrics>,
) {
    let mut active: Vec<Active> = Vec::new();
    // A request taken from the queue that does not fit the pixel budget yet.
    let mut waiting: Option<Job> = None;
    let per_sample = model.takes_per_sample_times();
    let pixels = |p: &Picture| p.width * p.height;
    loop {
        // Admit: wait for work when idle, else take what is waiting, up to the batch size and
        // the pixel budget.
        if active.is_empty() && waiting.is_none() {
            match jobs.blocking_recv() {
                Some(job) => waiting = Some(job),
                None => return,
            }
        }
        while active.len() < settings.max_batch {
            let Some(job) = waiting.take().or_else(|| jobs.try_recv().ok()) else {
                break;
            };
            let running: usize = active.iter().map(|a| pixels(&a.picture)).sum();
            if !active.is_empty() && running + pixels(&job.picture) > settings.max_running_pixels {
                waiting = Some(job);
                break;
            }
            admit(job, &mut model, &settings, &mut active, &metrics);
        }
        metrics.queued.set(jobs.len() as i64);
        // Drop the requests whose client went away or whose time is up.
        let now = Instant::now();
        let mut i = 0;
        while i < active.len() {
            let gone = active[i].reply.is_closed();
            if gone || now > active[i].deadline {
                let a = active.swap_remove(i);
                if gone {
                    metrics.finished("cancelled");
                } else {
                    metrics.finished("timeout");
                    let _ = a.reply.send(Err(Failure::Timeout));
                }
            } else {
                i += 1;
            }
        }
        metrics.running.set(active.len() as i64);
        if active.is_empty() {
            continue;
        }
        step(&mut model, &mut active, per_sample, &metrics);
        // Answer the finished requests.
        let mut i = 0;
        while i < active.len() {
            if active[i].run.pending().is_none() {
                let done = active.swap_remove(i);
                let result = finish(done.run, &done.picture);
                metrics.finished(if result.is_ok() { "ok" } else { "error" });
                let _ = done.reply.send(result.map_err(Failure::Internal));
            } else {
                i += 1;
            }
        }
        metrics.running.set(active.len() as i64);
    }
}

/// Starts a request's run (its start state drawn as `restore` draws it); a request that cannot
/// start is answered at once.
fn admit(
    job: Job,
    model: &mut Model,
    settings: &Settings,
    active: &mut Vec<Active>,
    metrics: &Metrics,
) {
    let Job {
        picture,
        spec,
        nfe,
        seed,
        deadline,
        reply,
    } = job;
    let started =
        (|| -> crate::error::Result<(Tensor, Run<Tensor>, PhiloxNoise, Option<Contexts>)> {
            let mu = picture.tensor(&settings.device, DType::F32)?;
            let sampler = spec.for_images(&settings.schedule, nfe)?;
            let mut noise = PhiloxNoise::new(seed);
            let run = sampler.start(model.fit_target(), &mu, None, &mut noise)?;
            let contexts = model.contexts(&mu)?;
            Ok((mu, run, noise, contexts))
        })();
    match started {
        Ok((mu, run, noise, contexts)) => active.push(Active {
            picture,
            mu,
            run,
            noise,
            contexts,
            deadline,
            reply,
        }),
        Err(e) => {
            metrics.finished("error");
            let _ = reply.send(Err(Failure::Internal(e.to_string())));
        }
    }
}

/// One round: every group of runs that can share a call gets one network call, then each
/// run advances.
fn step(model: &mut Model, active: &mut Vec<Active>, per_sample: bool, metrics: &Metrics) {
    // Groups: same shape, and the same time when the network takes one time per call.
    let mut groups: Vec<(Vec<usize>, u64, Vec<usize>)> = Vec::new();
    for (i, a) in active.iter().enumerate() {
        let shape = a.mu.dims().to_vec();
        let t = a.run.pending().map_or(0.0, |p| p.t);
        let key_t = if per_sample { 0 } else { t.to_bits() };
        match groups
            .iter_mut()
            .find(|(s, k, _)| *s == shape && *k == key_t)
        {
            Some((_, _, members)) => members.push(i),
            None => groups.push((shape, key_t, vec![i])),
        }
    }
    let mut failed: Vec<(usize, String)> = Vec::new();
    for (_, _, members) in groups {
        let started = Instant::now();
        match call(model, active, &members) {
            Ok((out, network)) => {
                metrics.batch_size.observe(members.len() as f64);
                metrics.network_seconds.inc_by(network.as_secs_f64());
                for (k, &i) in members.iter().enumerate() {
                    let a = &mut active[i];
                    let result = match out.narrow(0, k, 1) {
                        Ok(net) => a.run.advance(&net, &mut a.noise).map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    if let Err(e) = result {
                        failed.push((i, e));
                    }
                }
            }
            Err(e) => failed.extend(members.iter().map(|&i| (i, e.to_string()))),
        }
        metrics
            .step_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics.busy_seconds.inc_by(started.elapsed().as_secs_f64());
    }
    // Answer the failed ones (highest index first, so the others keep theirs).
    failed.sort_by_key(|f| std::cmp::Reverse(f.0));
    failed.dedup_by_key(|f| f.0);
    for (i, message) in failed {
        let a = active.swap_remove(i);
        metrics.finished("error");
        let _ = a.reply.send(Err(Failure::Internal(message)));
    }
}

/// The network on the pending states of `members` (in order), batched: its output (one row
/// per member) and its wall time.
fn call(
    model: &mut Model,
    active: &[Active],
    members: &[usize],
) -> crate::error::Result<(Tensor, Duration)> {
    let states: Vec<&Tensor> = members
        .iter()
        .map(|&i| active[i].run.eval_state())
        .collect();
    let mus: Vec<&Tensor> = members.iter().map(|&i| &active[i].mu).collect();
    let times: Vec<f64> = members
        .iter()
        .map(|&i| active[i].run.pending().map_or(0.0, |p| p.t))
        .collect();
    let (x, mu) = if members.len() == 1 {
        (states[0].clone(), mus[0].clone())
    } else {
        (Tensor::cat(&states, 0)?, Tensor::cat(&mus, 0)?)
    };
    if let Some(first) = &active[members[0]].contexts {
        let contexts = if members.len() == 1 {
            first.clone()
        } else {
            let rows = |f: fn(&Contexts) -> &Tensor| -> crate::error::Result<Tensor> {
                let parts: Vec<&Tensor> = members
                    .iter()
                    .filter_map(|&i| active[i].contexts.as_ref().map(f))
                    .collect();
                Ok(Tensor::cat(&parts, 0)?)
            };
            Contexts {
                image: rows(|c| &c.image)?,
                degradation: rows(|c| &c.degradation)?,
            }
        };
        model.pin_contexts(&contexts)?;
    }
    let started = Instant::now();
    let out = if members.len() == 1 {
        model.predict(&x, &mu, times[0])?
    } else {
        model.predict_per_sample(&x, &mu, &times)?
    };
    out.device().synchronize()?;
    Ok((out, started.elapsed()))
}

/// The finished run's PNG.
fn finish(run: Run<Tensor>, picture: &Picture) -> Result<Vec<u8>, String> {
    let sample = run.finish().map_err(|e| e.to_string())?;
    picture.encode_png(&sample.x).map_err(|e| e.to_string())
}
