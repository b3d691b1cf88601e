//! Running seeds: one at a time (with panics turned into violations, so a
//! core assertion failure is reported with its seed), or many in parallel.

use crate::checker::Violation;
use crate::config::SimOptions;
use crate::world::{Report, World};
use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

thread_local! {
    /// Set while a seed runs on this thread: the panic hook stores the
    /// message here instead of printing it.
    static CAPTURED: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

fn install_panic_hook() {
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let captured = CAPTURED.with(|c| {
                let mut c = c.borrow_mut();
                if let Some(slot) = c.as_mut() {
                    *slot = info.to_string();
                    true
                } else {
                    false
                }
            });
            if !captured {
                default(info);
            }
        }));
    });
}

/// The result of one seed.
#[derive(Debug)]
pub struct SeedOutcome {
    /// The seed.
    pub seed: u64,
    /// The run's counts, or the first broken invariant.
    pub result: Result<Report, Violation>,
    /// The last events before the violation (replayed with tracing on).
    pub trace: Vec<String>,
    /// A one-line description of the run's configuration.
    pub shape: String,
}

fn run_once(seed: u64, options: &SimOptions) -> (Result<Report, Violation>, Vec<String>, String) {
    install_panic_hook();
    CAPTURED.with(|c| *c.borrow_mut() = Some(String::new()));
    let world = World::new(seed, options);
    let c = world.config();
    let shape = format!(
        "nodes={} observers={} spares={} Q1={} Q2={} lease={}ms window={} batch={} clients={} keys={} snapshot_every={}",
        c.paxos.voters.len(),
        c.paxos.observers.len(),
        c.spares.len(),
        c.paxos.phase1_quorum,
        c.paxos.phase2_quorum,
        c.paxos.lease_duration_ms,
        c.paxos.window_slots_max,
        c.paxos.batch_commands_max,
        c.clients,
        c.keys,
        c.snapshot_every
    );
    let world = RefCell::new(Some(world));
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        let w = world.borrow_mut().take().expect("world");
        let (result, w) = w.run();
        let trace = w.trace();
        (result, trace)
    }));
    let message = CAPTURED.with(|c| c.borrow_mut().take()).unwrap_or_default();
    match outcome {
        Ok((result, trace)) => (result, trace, shape),
        Err(_) => {
            let violation = Violation {
                invariant: "no assertion fails",
                detail: message,
            };
            (Err(violation), Vec::new(), shape)
        }
    }
}

/// Runs one seed. On a violation, replays it with tracing on to collect the
/// last events; the replay must fail the same way, or the run was not
/// deterministic, which is itself reported.
pub fn run_seed(seed: u64, options: &SimOptions) -> SeedOutcome {
    let (result, mut trace, shape) = run_once(seed, options);
    if let Err(v) = &result {
        if !options.trace {
            let traced = SimOptions {
                trace: true,
                ..options.clone()
            };
            let (again, t, _) = run_once(seed, &traced);
            trace = t;
            if again.as_ref().err().map(|v| v.invariant) != Some(v.invariant) {
                trace.push(format!("replay diverged: {again:?}"));
            }
        }
    }
    SeedOutcome {
        seed,
        result,
        trace,
        shape,
    }
}

/// Totals over many seeds.
#[derive(Debug, Default)]
pub struct Summary {
    /// Seeds run.
    pub runs: u64,
    /// Seeds that broke an invariant.
    pub violations: Vec<SeedOutcome>,
    /// Seeds whose linearizability search hit its budget.
    pub undecided: u64,
    /// Those seeds, in order, to replay and look at.
    pub undecided_seeds: Vec<u64>,
    /// Events processed in all runs.
    pub events: u64,
    /// Client operations completed in all runs.
    pub ops_ok: u64,
    /// Crashes injected in all runs.
    pub crashes: u64,
    /// Membership changes the leaders accepted in all runs.
    pub membership_changes: u64,
    /// Membership changes shards proposed to follow the meta group.
    pub shard_membership_changes: u64,
    /// Leadership transfers the leaders accepted in all runs.
    pub transfers: u64,
    /// Snapshots streamed and installed in all runs.
    pub snapshots: u64,
    /// Sessions expired through the log in all runs.
    pub sessions_expired: u64,
    /// Leases granted by the lease agents in all runs.
    pub leases_granted: u64,
    /// Leases expired by a leader after being kept alive, in all runs.
    pub leases_expired: u64,
    /// Timestamps the oracle agents received in all runs.
    pub timestamps: u64,
    /// ZooKeeper creates acknowledged.
    pub zk_creates: u64,
    /// ZooKeeper sessions opened.
    pub zk_sessions: u64,
    /// Ephemeral creates acknowledged.
    pub zk_ephemerals: u64,
    /// Changes of the auth agents' permission, in log order.
    pub auth_flips: u64,
    /// The auth agents' puts acknowledged OK.
    pub auth_puts_ok: u64,
    /// The auth agents' puts refused with PermissionDenied.
    pub auth_denied: u64,
    /// The auth agents' puts refused with AuthOldRevision.
    pub auth_old_revision: u64,
    /// Writes the cross-shard revision order checked, in all runs.
    pub stamped_writes: u64,
    /// Shards made by splits, summed over runs.
    pub splits: u64,
    /// Shards hosted empty because a snapshot named them, summed.
    pub splits_learned: u64,
    /// Shards' deletions of revoked leases' keys, summed over runs.
    pub detaches: u64,
    /// Keys attached to leases, summed over runs.
    pub lease_keys: u64,
    /// Slots chosen in all runs (highest applied slot per run).
    pub slots: u64,
    /// Wall-clock time.
    pub elapsed: Duration,
}

/// Runs seeds `first .. first + count` on `jobs` threads; stops early after
/// `stop_after` violations. `progress` is called after each seed.
pub fn run_seeds(
    first: u64,
    count: u64,
    options: &SimOptions,
    jobs: usize,
    stop_after: usize,
    progress: &(dyn Fn(&Summary) + Sync),
) -> Summary {
    let next = AtomicU64::new(first);
    let summary = Mutex::new(Summary::default());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= first + count {
                    return;
                }
                if summary.lock().expect("summary").violations.len() >= stop_after {
                    return;
                }
                let outcome = run_seed(seed, options);
                let mut sum = summary.lock().expect("summary");
                sum.runs += 1;
                match &outcome.result {
                    Ok(r) => {
                        sum.events += r.events;
                        sum.ops_ok += r.ops_ok;
                        sum.crashes += r.crashes;
                        sum.membership_changes += r.membership_changes;
                        sum.shard_membership_changes += r.shard_membership_changes;
                        sum.transfers += r.transfers;
                        sum.snapshots += r.snapshots;
                        sum.sessions_expired += r.sessions_expired;
                        sum.leases_granted += r.leases_granted;
                        sum.leases_expired += r.leases_expired;
                        sum.timestamps += r.timestamps;
                        sum.zk_creates += r.zk_creates;
                        sum.zk_sessions += r.zk_sessions;
                        sum.zk_ephemerals += r.zk_ephemerals;
                        sum.auth_flips += r.auth_flips;
                        sum.auth_puts_ok += r.auth_puts_ok;
                        sum.auth_denied += r.auth_denied;
                        sum.auth_old_revision += r.auth_old_revision;
                        sum.slots += r.slots;
                        sum.stamped_writes += r.stamped_writes;
                        sum.splits += r.splits;
                        sum.splits_learned += r.splits_learned;
                        sum.detaches += r.detaches;
                        sum.lease_keys += r.lease_keys;
                        sum.undecided += r.lin_undecided as u64;
                        if r.lin_undecided {
                            sum.undecided_seeds.push(seed);
                        }
                    }
                    Err(_) => sum.violations.push(outcome),
                }
                sum.elapsed = started.elapsed();
                progress(&sum);
            });
        }
    });
    let mut summary = summary.into_inner().expect("summary");
    summary.violations.sort_by_key(|o| o.seed);
    summary.undecided_seeds.sort_unstable();
    summary.elapsed = started.elapsed();
    summary
}
