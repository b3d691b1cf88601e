//! `core-bench`: how fast the pure consensus core commits, with persistence
//! and the network taken out (zero-latency delivery, instant "fsync"), and
//! how many simulator seeds run per second. Rerun to compare changes:
//! `cargo run --release -p synod-sim --bin core-bench`.

use clap::Parser;
use std::time::{Duration, Instant};
use synod_paxos::{Config, Envelope, NodeId, Replica, Time};
use synod_sim::runner::run_seeds;
use synod_sim::SimOptions;

/// Benchmark of the Multi-Paxos core and the simulator.
#[derive(Parser, Debug)]
#[command(name = "core-bench")]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Simulator seeds to time (single thread).
    #[arg(long, default_value_t = 200)]
    sim_seeds: u64,
    /// Repetitions per measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
}

/// One in-memory group driven as fast as the CPU allows.
struct Group {
    replicas: Vec<Replica<u64>>,
    mail: Vec<Envelope<u64>>,
}

impl Group {
    fn new(n: u64, batch: usize) -> Group {
        let ids: Vec<NodeId> = (1..=n).map(NodeId).collect();
        let replicas = ids
            .iter()
            .map(|&id| {
                let mut c = Config::majority(id, &ids);
                c.batch_commands_max = batch;
                c.window_slots_max = 256;
                Replica::new(c, Time(0)).expect("config")
            })
            .collect();
        let mut g = Group {
            replicas,
            mail: Vec::new(),
        };
        g.replicas[0].campaign_now();
        for _ in 0..10 {
            g.pump();
        }
        g
    }

    /// One round: every replica hands out its work ("persists" at once),
    /// then all messages are delivered. Returns commands applied at the leader.
    fn pump(&mut self) -> u64 {
        let mut applied = 0;
        for (i, r) in self.replicas.iter_mut().enumerate() {
            let ready = r.ready();
            if i == 0 {
                applied += ready
                    .apply
                    .iter()
                    .map(|a| a.value.len() as u64)
                    .sum::<u64>();
            }
            self.mail.extend(ready.messages);
            r.on_persisted(ready.token);
        }
        for m in self.mail.drain(..) {
            self.replicas[(m.to.0 - 1) as usize].step(m.from, m.message, Time(0));
        }
        applied
    }
}

/// Commands committed per second with `n` replicas and `batch` commands per slot.
fn commits_per_second(n: u64, batch: usize, seconds: f64) -> f64 {
    let mut group = Group::new(n, batch);
    let outstanding_max = (256 * batch) as u64;
    let (mut proposed, mut committed) = (0u64, 0u64);
    let started = Instant::now();
    let budget = Duration::from_secs_f64(seconds);
    while started.elapsed() < budget {
        while proposed - committed < outstanding_max {
            group.replicas[0].propose(proposed).expect("leader");
            proposed += 1;
        }
        committed += group.pump();
    }
    committed as f64 / started.elapsed().as_secs_f64()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    xs[xs.len() / 2]
}

fn main() {
    let args = Args::parse();
    println!(
        "core commits/s (in-memory, zero-latency network, median of {}):",
        args.repeat
    );
    println!("{:>9} {:>7} {:>14}", "replicas", "batch", "commands/s");
    for n in [3, 5] {
        for batch in [1, 16, 256] {
            let runs = (0..args.repeat)
                .map(|_| commits_per_second(n, batch, args.seconds))
                .collect();
            println!("{n:>9} {batch:>7} {:>14.0}", median(runs));
        }
    }
    println!(
        "simulator (one thread, {} seeds, median of {}):",
        args.sim_seeds, args.repeat
    );
    for voters in [3, 5] {
        let options = SimOptions::new(voters);
        let mut rates = Vec::new();
        let mut events = 0.0;
        for _ in 0..args.repeat {
            let s = run_seeds(0, args.sim_seeds, &options, 1, usize::MAX, &|_| {});
            assert!(s.violations.is_empty(), "violations while benchmarking");
            rates.push(s.runs as f64 / s.elapsed.as_secs_f64());
            events = s.events as f64 / s.elapsed.as_secs_f64();
        }
        println!(
            "  voters={voters}: {:.1} seeds/s ({events:.0} events/s)",
            median(rates)
        );
    }
}
