//! `synod-sim`: run thousands of seeds of the deterministic simulation, or
//! replay one with a trace.

use clap::Parser;
use std::io::Write;
use std::process::ExitCode;
use synod_paxos::Mutation;
use synod_sim::runner::{run_seed, run_seeds, SeedOutcome, Summary};
use synod_sim::SimOptions;

/// Deterministic fault simulation of synod's Multi-Paxos core.
///
/// Every seed builds a cluster (voters, maybe an observer, quorums, timings),
/// runs clients against it under network and process faults, heals, and
/// checks safety after every event and linearizability at the end.
#[derive(Parser, Debug)]
#[command(name = "synod-sim", version)]
struct Args {
    /// Voters per cluster (an observer is added in some seeds).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Number of seeds to run.
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Replay exactly one seed and print its trace.
    #[arg(long)]
    replay: Option<u64>,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Run without faults (clean-network baseline).
    #[arg(long)]
    no_faults: bool,
    /// Run a deliberately broken core: accept-below-promise,
    /// ignore-accepted-values, lease-not-binding, choose-without-quorum,
    /// read-without-confirmation, no-joint-consensus.
    #[arg(long, value_parser = parse_mutation)]
    mutation: Option<Mutation>,
    /// Let clocks drift forty times beyond the configured tolerance (a fault
    /// outside the model: lease violations are expected).
    #[arg(long)]
    excess_drift: bool,
    /// Keep membership fixed (no spare nodes, no membership changes, no
    /// leadership transfers).
    #[arg(long)]
    no_membership: bool,
    /// No lease agent (no leases granted, kept alive or expired).
    #[arg(long)]
    no_leases: bool,
    /// Cut the clients' keys into N shards, each its own group on every
    /// node stamped by the meta group's oracle; the checkers add "revisions
    /// follow real time across shards"; membership changes of the meta
    /// group are followed by every shard.
    #[arg(long, default_value_t = 0)]
    shards: usize,
    /// Negative control (with --shards): shard leaders stamp later writes
    /// from stamps left over; the revision order check must catch it.
    #[arg(long)]
    stamps_from_leftovers: bool,
    /// With --shards: split shards at random keys while faults run.
    #[arg(long)]
    splits: bool,
    /// Negative control (with --splits): shards keep applying writes of
    /// keys they split off; lost writes must be caught.
    #[arg(long)]
    split_unfenced: bool,
    /// Negative control (with --shards): shard leaders attach keys to
    /// leases without asking the oracle whether they are live; keys of
    /// revoked leases must be caught.
    #[arg(long)]
    leases_unchecked: bool,
    /// Negative control (with --shards): shards apply writes whatever the
    /// auth store did since their node judged them; a put allowed before
    /// a permission was revoked and ordered after it must be caught.
    #[arg(long)]
    auth_unfenced: bool,
    /// Negative control: groups compact their log without writing their
    /// rows first; writes lost in a crash must be caught.
    #[arg(long)]
    rows_unwritten_at_compaction: bool,
    /// Negative control: leaders renew leases without confirming they
    /// still lead; early expiries must be caught.
    #[arg(long)]
    unconfirmed_keepalives: bool,
    /// Negative control: followers serve linearizable reads without asking
    /// the leader for a read index; stale reads must be caught.
    #[arg(long)]
    follower_reads_unconfirmed: bool,
    /// No timestamp oracle agent.
    #[arg(long)]
    no_timestamps: bool,
    /// No ZooKeeper agent.
    #[arg(long)]
    no_zk: bool,
    /// No auth agent (no users, roles or permission flips).
    #[arg(long)]
    no_auth: bool,
    /// Negative control: the auth store's row is never written, so
    /// restarts and snapshots lose it; must be caught.
    #[arg(long)]
    lose_auth_row: bool,
    /// Negative control: leaders hand out timestamps without confirming
    /// they still lead; real-time order must be caught broken.
    #[arg(long)]
    unconfirmed_timestamps: bool,
    /// Negative control: snapshots written apart from the log compaction
    /// they imply (an old runtime bug); the checkers must catch it.
    #[arg(long)]
    split_snapshot_compaction: bool,
    /// Negative control: writes acknowledged before their fsync (replies
    /// leave before the state they report is durable); must be caught.
    #[arg(long)]
    ack_before_fsync: bool,
    /// Stop after this many violations.
    #[arg(long, default_value_t = 5)]
    stop_after: usize,
}

fn parse_mutation(s: &str) -> Result<Mutation, String> {
    match s {
        "accept-below-promise" => Ok(Mutation::AcceptBelowPromise),
        "ignore-accepted-values" => Ok(Mutation::IgnoreAcceptedValues),
        "lease-not-binding" => Ok(Mutation::LeaseNotBinding),
        "choose-without-quorum" => Ok(Mutation::ChooseWithoutQuorum),
        "read-without-confirmation" => Ok(Mutation::ReadWithoutConfirmation),
        "no-joint-consensus" => Ok(Mutation::NoJointConsensus),
        other => Err(format!("unknown mutation {other:?}")),
    }
}

fn print_violation(o: &SeedOutcome) {
    if let Err(v) = &o.result {
        println!("seed {} VIOLATION {v}", o.seed);
        println!("  shape: {}", o.shape);
        for line in &o.trace {
            println!("  | {line}");
        }
        println!("  replay: synod-sim --nodes <N> --replay {}", o.seed);
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(1..=9).contains(&args.nodes) {
        eprintln!("error: --nodes must be between 1 and 9");
        return ExitCode::from(2);
    }
    let mut options = SimOptions::new(args.nodes);
    options.faults = !args.no_faults;
    options.mutation = args.mutation;
    options.excess_drift = args.excess_drift;
    options.membership = !args.no_membership;
    options.leases = !args.no_leases;
    options.shards = args.shards;
    options.stamps_from_leftovers = args.stamps_from_leftovers;
    options.splits = args.splits || args.split_unfenced;
    options.split_unfenced = args.split_unfenced;
    options.leases_unchecked = args.leases_unchecked;
    options.auth_unfenced = args.auth_unfenced;
    options.rows_unwritten_at_compaction = args.rows_unwritten_at_compaction;
    options.unconfirmed_keepalives = args.unconfirmed_keepalives;
    options.follower_reads_unconfirmed = args.follower_reads_unconfirmed;
    options.timestamps = !args.no_timestamps;
    options.zk = !args.no_zk;
    options.auth = !args.no_auth;
    options.lose_auth_row = args.lose_auth_row;
    options.unconfirmed_timestamps = args.unconfirmed_timestamps;
    options.split_snapshot_compaction = args.split_snapshot_compaction;
    options.ack_before_fsync = args.ack_before_fsync;
    if let Some(seed) = args.replay {
        options.trace = true;
        let outcome = run_seed(seed, &options);
        for line in &outcome.trace {
            println!("| {line}");
        }
        println!("shape: {}", outcome.shape);
        return match &outcome.result {
            Ok(r) => {
                println!("seed {seed} ok: {r:?}");
                ExitCode::SUCCESS
            }
            Err(v) => {
                println!("seed {seed} VIOLATION {v}");
                ExitCode::FAILURE
            }
        };
    }
    let progress = |s: &Summary| {
        if s.runs.is_multiple_of(500) {
            eprint!(
                "\r{} seeds, {} violations, {:.0} seeds/s   ",
                s.runs,
                s.violations.len(),
                s.runs as f64 / s.elapsed.as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        }
    };
    let summary = run_seeds(
        args.start,
        args.seeds,
        &options,
        args.jobs,
        args.stop_after,
        &progress,
    );
    eprintln!();
    for o in &summary.violations {
        print_violation(o);
    }
    if !summary.undecided_seeds.is_empty() {
        println!(
            "undecided (the linearizability search ran out of budget; replay with --replay): seeds {:?}",
            summary.undecided_seeds
        );
    }
    let secs = summary.elapsed.as_secs_f64();
    println!(
        "nodes={} seeds={} violations={} undecided={} events={} ops={} crashes={} membership_changes={} shard_membership_changes={} transfers={} snapshots={} sessions_expired={} leases={} lease_keys={} expired={} timestamps={} zk_creates={} zk_sessions={} zk_ephemerals={} auth_flips={} auth_ok={} auth_denied={} auth_old_revision={} stamped_writes={} splits={} splits_learned={} detaches={} slots={} time={:.1}s seeds/s={:.1} events/s={:.0}",
        args.nodes,
        summary.runs,
        summary.violations.len(),
        summary.undecided,
        summary.events,
        summary.ops_ok,
        summary.crashes,
        summary.membership_changes,
        summary.shard_membership_changes,
        summary.transfers,
        summary.snapshots,
        summary.sessions_expired,
        summary.leases_granted,
        summary.lease_keys,
        summary.leases_expired,
        summary.timestamps,
        summary.zk_creates,
        summary.zk_sessions,
        summary.zk_ephemerals,
        summary.auth_flips,
        summary.auth_puts_ok,
        summary.auth_denied,
        summary.auth_old_revision,
        summary.stamped_writes,
        summary.splits,
        summary.splits_learned,
        summary.detaches,
        summary.slots,
        secs,
        summary.runs as f64 / secs,
        summary.events as f64 / secs
    );
    if summary.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
