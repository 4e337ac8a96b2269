//! Supervised restart latency against a bare ractor respawn, in the same run.
//!
//! One cycle is "the child fails → a new incarnation is running". The child fails by returning
//! `Err` from `handle` (no panic, so the panic hook's printing is not measured) and reports
//! each incarnation from `post_start` on a channel, which is what "running again" means here.
//!
//! - **bare respawn** (baseline): spawn the named actor unsupervised, make it fail, await its
//!   join handle (how a hand-written restart loop learns of the exit), spawn it again under the
//!   same name, wait for its `post_start`.
//! - **supervised**: a [`Supervisor`] (one_for_one, zero backoff, unbounded intensity) with one
//!   `ChildSpec::actor` child; make it fail, wait for the new incarnation's `post_start`. This
//!   adds the supervision event, the restart bookkeeping (intensity, StatusBoard, metrics
//!   counter, log) and the link to the supervisor.
//!
//! Both run on one current-thread tokio runtime, in alternating rounds; the table reports the
//! median round. Target: supervised within 3x of bare respawn.
//!
//! Run: `cargo bench -p millwright-benches --bench supervisor_restart` (release profile).

use std::time::{Duration, Instant};

use millwright_kernel::lifecycle::StatusBoard;
use millwright_kernel::supervisor::{
    self, BackoffPolicy, ChildSpec, RestartIntensity, Strategy, Supervisor, SupervisorSpec,
};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;

const CYCLES: usize = 2_000;
const ROUNDS: usize = 5;

/// A child that reports every incarnation and fails when told to.
struct Flaky;

struct Fail;

impl Actor for Flaky {
    type Msg = Fail;
    type State = mpsc::UnboundedSender<ActorCell>;
    type Arguments = mpsc::UnboundedSender<ActorCell>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Fail>,
        started: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(started)
    }

    async fn post_start(
        &self,
        myself: ActorRef<Fail>,
        started: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _ = started.send(myself.get_cell());
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Fail>,
        _msg: Fail,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        Err("failing on purpose".into())
    }
}

async fn bare_respawn() -> Duration {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let name = "bench/bare".to_owned();
    let (_, mut handle) = Actor::spawn(Some(name.clone()), Flaky, tx.clone())
        .await
        .expect("spawn");
    let mut current = rx.recv().await.expect("first incarnation");
    let start = Instant::now();
    for _ in 0..CYCLES {
        current.send_message(Fail).expect("running");
        handle.await.expect("actor task");
        let (_, next) = Actor::spawn(Some(name.clone()), Flaky, tx.clone())
            .await
            .expect("respawn");
        handle = next;
        current = rx.recv().await.expect("next incarnation");
    }
    let took = start.elapsed();
    current.stop(None);
    handle.await.expect("actor task");
    took
}

async fn supervised() -> Duration {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .backoff(BackoffPolicy::none())
        .intensity(RestartIntensity::new(u32::MAX, Duration::from_secs(1)))
        .child(ChildSpec::actor("flaky", move || (Flaky, tx.clone())));
    let (sup, handle) = Supervisor::spawn("bench".to_owned(), spec, StatusBoard::new())
        .await
        .expect("supervisor");
    let mut current = rx.recv().await.expect("first incarnation");
    let start = Instant::now();
    for _ in 0..CYCLES {
        current.send_message(Fail).expect("running");
        current = rx.recv().await.expect("restarted");
    }
    let took = start.elapsed();
    let infos = supervisor::children(&sup, None).await.expect("children");
    assert_eq!(
        infos[0].restarts as usize, CYCLES,
        "every cycle was a restart"
    );
    supervisor::shutdown(&sup).await.expect("shutdown");
    handle.await.expect("supervisor task");
    took
}

fn per_cycle(d: Duration) -> Duration {
    d / CYCLES as u32
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (bare, sup) = rt.block_on(async {
        // Warm up both paths (allocator, registry, lazy statics).
        bare_respawn().await;
        supervised().await;
        let mut bare = Vec::new();
        let mut sup = Vec::new();
        for _ in 0..ROUNDS {
            bare.push(per_cycle(bare_respawn().await));
            sup.push(per_cycle(supervised().await));
        }
        (bare, sup)
    });
    let (bare_med, sup_med) = (median(bare.clone()), median(sup.clone()));
    let ratio = sup_med.as_secs_f64() / bare_med.as_secs_f64();
    println!("## supervisor restart ({CYCLES} cycles x {ROUNDS} rounds, current-thread runtime)\n");
    println!("| path | per cycle (median) | fastest round | slowest round | vs bare |");
    println!("|---|---:|---:|---:|---:|");
    for (label, rounds, med) in [
        ("bare ractor respawn (baseline)", &bare, bare_med),
        (
            "supervised restart (one_for_one, no backoff)",
            &sup,
            sup_med,
        ),
    ] {
        let min = rounds.iter().min().copied().unwrap_or_default();
        let max = rounds.iter().max().copied().unwrap_or_default();
        println!(
            "| {label} | {med:.2?} | {min:.2?} | {max:.2?} | {:.2}x |",
            med.as_secs_f64() / bare_med.as_secs_f64()
        );
    }
    println!(
        "\nsupervised / bare = {ratio:.2}x (target: within 3x) -> {}",
        if ratio <= 3.0 { "ok" } else { "over target" }
    );
}
