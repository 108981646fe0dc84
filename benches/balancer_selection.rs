//! Why upstream selection does not go through the balancer actor's mailbox.
//!
//! Measures, from 1, 2 and 4 threads at once, the cost of choosing servers for a
//! request (a) the way HTTP workers do it — loading the pool's published snapshot and
//! asking its selector, lock-free — and (b) as it would cost if every selection were a
//! message to one actor that runs the same selection. Run with
//! `cargo bench --bench balancer_selection`; it prints nanoseconds per selection and
//! selections per second in total.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Context, Handler, Message};
use gatehouse::actors::balancer::{Pool, Upstreams};
use gatehouse::config::UpstreamSettings;

const SELECTIONS_PER_THREAD: usize = 200_000;

/// The strawman: one actor that answers every selection.
struct Selector {
    pool: Arc<Pool>,
}

impl Actor for Selector {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "usize")]
struct Pick(u64);

impl Handler<Pick> for Selector {
    type Result = usize;

    fn handle(&mut self, msg: Pick, _: &mut Context<Self>) -> usize {
        self.pool.candidates(msg.0)[0]
    }
}

fn pools() -> Arc<Upstreams> {
    let mut settings = BTreeMap::new();
    for strategy in [
        "round_robin",
        "weighted",
        "least_connections",
        "ip_hash",
        "random_two_choices",
    ] {
        let servers: Vec<String> = (0..8)
            .map(|i| {
                format!(
                    "{{ url = \"http://10.0.0.{i}:80\", weight = {} }}",
                    i % 3 + 1
                )
            })
            .collect();
        let pool: UpstreamSettings = toml::from_str(&format!(
            "servers = [{}]\nstrategy = \"{strategy}\"",
            servers.join(", ")
        ))
        .expect("valid pool");
        settings.insert(strategy.to_string(), pool);
    }
    Arc::new(Upstreams::new(&settings, &BTreeMap::new()).expect("valid pools"))
}

fn report(label: &str, threads: usize, elapsed: Duration) {
    let total = (threads * SELECTIONS_PER_THREAD) as f64;
    println!(
        "{label:<40} {threads} thread(s): {:>8.0} ns/selection, {:>11.0} selections/s in total",
        elapsed.as_nanos() as f64 * threads as f64 / total,
        total / elapsed.as_secs_f64(),
    );
}

fn lock_free(upstreams: &Arc<Upstreams>, strategy: &str, threads: usize) -> Duration {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let pool = upstreams.get(strategy).expect("pool exists").clone();
            scope.spawn(move || {
                let mut sink = 0usize;
                for i in 0..SELECTIONS_PER_THREAD {
                    let key = (thread * SELECTIONS_PER_THREAD + i) as u64;
                    sink = sink.wrapping_add(pool.candidates(key.wrapping_mul(0x9e37_79b9))[0]);
                }
                std::hint::black_box(sink);
            });
        }
    });
    started.elapsed()
}

fn through_one_mailbox(upstreams: &Arc<Upstreams>, strategy: &str, threads: usize) -> Duration {
    let pool = upstreams.get(strategy).expect("pool exists").clone();
    let arbiter = actix::Arbiter::new();
    let addr = actix::Actor::start_in_arbiter(&arbiter.handle(), move |_| Selector { pool });
    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let addr = addr.clone();
            scope.spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    let mut sink = 0usize;
                    for i in 0..SELECTIONS_PER_THREAD {
                        let key = (thread * SELECTIONS_PER_THREAD + i) as u64;
                        sink = sink.wrapping_add(addr.send(Pick(key)).await.expect("actor runs"));
                    }
                    std::hint::black_box(sink);
                });
            });
        }
    });
    let elapsed = started.elapsed();
    arbiter.stop();
    arbiter.join().expect("arbiter stops");
    elapsed
}

fn main() {
    // Arbiters belong to a system; this one only has to exist.
    let _system = actix::System::new();
    let upstreams = pools();
    for strategy in [
        "round_robin",
        "weighted",
        "least_connections",
        "ip_hash",
        "random_two_choices",
    ] {
        for threads in [1, 2, 4] {
            report(
                &format!("{strategy}: snapshot (lock-free)"),
                threads,
                lock_free(&upstreams, strategy, threads),
            );
        }
    }
    for threads in [1, 2, 4] {
        report(
            "round_robin: one actor mailbox",
            threads,
            through_one_mailbox(&upstreams, "round_robin", threads),
        );
    }
}
