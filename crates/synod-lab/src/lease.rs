//! Leader leases and clock drift.
//!
//! A leader that holds a lease answers reads from its own copy without a
//! quorum round: the acceptors that acknowledged the lease promised not to
//! join another ballot until it ends, so no other leader can commit a write
//! meanwhile. Both sides measure the lease on their own clocks. Seed 004
//! ("Lease 机制") names the catch: if the holder's clock runs slow, it still
//! believes in a lease the grantors consider over, and the fix: the
//! grantors keep their promise longer than the holder's lease by more than
//! the clock error. This is what DESIGN.md's leader lease does ("with a
//! clock-drift margin").

use crate::check::Goal;
use crate::engine::{Action, Ballot, Cx, Message, Node, Played, Sim, World};
use crate::Def;
use std::collections::{BTreeMap, BTreeSet};

const LATENCY: u64 = 10;
/// The lease the leader asks for, on its own clock.
const LEASE_MS: u64 = 1000;
/// How long a leader waits for a quorum to confirm it before failing a read.
const CONFIRM_TIMEOUT_MS: u64 = 100;
/// S1's clock rate in the scenarios, per mille of real time: 10% slow.
const SLOW_CLOCK: u64 = 900;
/// The drift margin of the safe scenario: more than 10% of the lease.
const MARGIN_MS: u64 = 250;

pub(crate) const SCENARIOS: &[Def] = &[
    Def {
        name: "no-margin",
        title: "A partitioned leader on a slow clock, no drift margin: two leaders serve at once",
        about: "S1 leads at 1.1 and holds a 1000 ms lease from S2 and S3; its clock runs 10% slow. x = 1 is written, then a partition cuts S1 (and client C1) off. S2 and S3 keep their lease promise for exactly 1000 ms on their own clocks, then S2 takes over at 2.2 and C2's write x = 2 is acknowledged. S1's slow clock still shows time left on its lease, so it serves C1's read from its own copy: x = 1, older than the acknowledged x = 2. Seed 004: a grantor whose clock runs ahead of the holder's breaks the lease's promise.",
        goal: Goal::Safety,
        play: no_margin,
    },
    Def {
        name: "margin",
        title: "The same partition with a 250 ms drift margin: the old lease ends first",
        about: "The same run, but S2 and S3 keep their promise for the lease plus a 250 ms margin, more than the 10% clock error (seed 004: the grantor's term is set longer than the holder's by more than the clock error). S1's lease runs out on its slow clock before S2 can take over; C1's read while the lease is valid returns x = 1 before x = 2 exists, and its later read finds the lease over, cannot confirm leadership across the partition and fails instead of answering stale data.",
        goal: Goal::Safety,
        play: margin,
    },
];

type Slot = u64;

#[derive(Clone, Debug)]
enum LMsg {
    Prepare(Ballot),
    Promise(Ballot, Vec<(Slot, Ballot, u64)>),
    Refuse(Ballot, Ballot, u64),
    Lease(Ballot, u64),
    LeaseAck(Ballot),
    Accept(Ballot, Slot, u64),
    Accepted(Ballot, Slot),
    Confirm(Ballot),
    Confirmed(Ballot),
    Put(u64),
    PutOk(Slot),
    Get,
    GetOk(u64, Slot),
    GetErr(&'static str),
}

impl Message for LMsg {
    fn label(&self) -> String {
        match self {
            LMsg::Prepare(b) => format!("prepare(b={b})"),
            LMsg::Promise(b, acc) if acc.is_empty() => format!("promise(b={b}, nothing accepted)"),
            LMsg::Promise(b, acc) => {
                let a: Vec<String> = acc
                    .iter()
                    .map(|(s, ab, v)| format!("#{s}=({ab}, x={v})"))
                    .collect();
                format!("promise(b={b}, {})", a.join(" "))
            }
            LMsg::Refuse(b, holder, until) => {
                format!("refuse(b={b}: lease of {holder} promised until {until} ms)")
            }
            LMsg::Lease(b, ms) => format!("lease(b={b}, {ms} ms)"),
            LMsg::LeaseAck(b) => format!("lease-ack(b={b})"),
            LMsg::Accept(b, s, v) => format!("accept(b={b}, #{s}, x={v})"),
            LMsg::Accepted(b, s) => format!("accepted(b={b}, #{s})"),
            LMsg::Confirm(b) => format!("confirm(b={b})"),
            LMsg::Confirmed(b) => format!("confirmed(b={b})"),
            LMsg::Put(v) => format!("put(x={v})"),
            LMsg::PutOk(s) => format!("put-ok(version {s})"),
            LMsg::Get => "get(x)".to_string(),
            LMsg::GetOk(v, s) => format!("value(x={v}, version {s})"),
            LMsg::GetErr(e) => format!("error({e})"),
        }
    }
}

#[derive(Clone, Debug)]
enum LTimer {
    Elect,
    RenewLease,
    ConfirmTimeout(u64),
    /// Client: put x = v through a node.
    Put(Node, u64),
    /// Client: get x through a node.
    Get(Node),
}

struct Read {
    client: Node,
    acks: BTreeSet<Node>,
}

enum Role {
    Follower,
    Electing {
        b: Ballot,
        promises: BTreeMap<Node, Vec<(Slot, Ballot, u64)>>,
        retry_set: bool,
    },
    Leading {
        b: Ballot,
        next: Slot,
        pending: BTreeMap<Slot, (u64, BTreeSet<Node>, Option<Node>)>,
        lease_until: Option<u64>,
        lease_req: Option<(u64, BTreeSet<Node>)>,
        reads: BTreeMap<u64, Read>,
    },
}

struct Replica {
    promised: Option<Ballot>,
    accepted: BTreeMap<Slot, (Ballot, u64)>,
    chosen: BTreeMap<Slot, u64>,
    /// The lease this acceptor granted: to whom, until when on its clock.
    granted: Option<(Ballot, u64)>,
    role: Role,
    queued: Vec<(Node, u64)>,
}

#[derive(Default)]
struct Client {
    start: u64,
    pending: Option<u64>,
    last: String,
}

struct Leases {
    replicas: Vec<Replica>,
    clients: Vec<Client>,
    margin: u64,
    next_read: u64,
}

impl Leases {
    fn new(replicas: usize, clients: usize, margin: u64) -> Leases {
        Leases {
            replicas: (0..replicas)
                .map(|_| Replica {
                    promised: None,
                    accepted: BTreeMap::new(),
                    chosen: BTreeMap::new(),
                    granted: None,
                    role: Role::Follower,
                    queued: Vec::new(),
                })
                .collect(),
            clients: (0..clients).map(|_| Client::default()).collect(),
            margin,
            next_read: 0,
        }
    }

    fn n(&self) -> usize {
        self.replicas.len()
    }

    fn majority(&self) -> usize {
        self.n() / 2 + 1
    }

    fn latest(&self, r: Node) -> (u64, Slot) {
        self.replicas[r]
            .chosen
            .iter()
            .next_back()
            .map_or((0, 0), |(&s, &v)| (v, s))
    }

    fn propose(
        &mut self,
        cx: &mut Cx<'_, Self>,
        leader: Node,
        v: u64,
        client: Option<Node>,
        slot: Option<Slot>,
    ) {
        let n = self.n();
        let Role::Leading {
            b, next, pending, ..
        } = &mut self.replicas[leader].role
        else {
            return;
        };
        let s = slot.unwrap_or(*next);
        *next = (*next).max(s + 1);
        pending.insert(s, (v, BTreeSet::new(), client));
        let b = *b;
        for r in 0..n {
            cx.send(leader, r, LMsg::Accept(b, s, v));
        }
    }

    fn request_lease(&mut self, cx: &mut Cx<'_, Self>, leader: Node) {
        let n = self.n();
        let now = cx.local_now(leader);
        let Role::Leading { b, lease_req, .. } = &mut self.replicas[leader].role else {
            return;
        };
        let b = *b;
        *lease_req = Some((now, BTreeSet::from([leader])));
        for r in (0..n).filter(|&r| r != leader) {
            cx.send(leader, r, LMsg::Lease(b, LEASE_MS));
        }
    }

    fn client_msg(&mut self, cx: &mut Cx<'_, Self>, to: Node, msg: LMsg) {
        let c = to - self.n();
        let start = self.clients[c].start;
        match msg {
            LMsg::PutOk(version) => {
                let v = self.clients[c].pending.take().unwrap_or(0);
                self.clients[c].last = format!("put x={v} ok (version {version})");
                cx.write_acked(to, "x", version, &v.to_string());
            }
            LMsg::GetOk(v, version) => {
                self.clients[c].last = format!("read x={v} (version {version})");
                cx.read(to, "x", version, &v.to_string(), start);
            }
            LMsg::GetErr(e) => {
                self.clients[c].last = format!("error: {e}");
                cx.note(to, format!("the read fails: {e}"));
            }
            _ => {}
        }
    }
}

impl World for Leases {
    type Msg = LMsg;
    type Timer = LTimer;

    fn on_message(&mut self, cx: &mut Cx<'_, Self>, to: Node, from: Node, msg: LMsg) {
        if to >= self.n() {
            self.client_msg(cx, to, msg);
            return;
        }
        let majority = self.majority();
        let n = self.n();
        let now = cx.local_now(to);
        match msg {
            LMsg::Prepare(b) => {
                let r = &mut self.replicas[to];
                if let Some((holder, until)) = r.granted {
                    if holder != b && now < until {
                        cx.send(to, from, LMsg::Refuse(b, holder, until));
                        return;
                    }
                }
                if r.promised.is_none_or(|p| b > p) {
                    r.promised = Some(b);
                    // Any lease granted to another ballot is over by now.
                    r.granted = None;
                    let acc = r.accepted.iter().map(|(&s, &(ab, v))| (s, ab, v)).collect();
                    cx.send(to, from, LMsg::Promise(b, acc));
                }
            }
            LMsg::Refuse(b, _, until) => {
                let Role::Electing {
                    b: mine, retry_set, ..
                } = &mut self.replicas[to].role
                else {
                    return;
                };
                if *mine == b && !*retry_set {
                    *retry_set = true;
                    let wait = until.saturating_sub(now) + 1;
                    cx.note(
                        to,
                        format!("waits for the old lease: campaigns again in {wait} ms"),
                    );
                    cx.timer(to, wait, LTimer::Elect);
                }
            }
            LMsg::Promise(b, acc) => {
                let Role::Electing {
                    b: mine, promises, ..
                } = &mut self.replicas[to].role
                else {
                    return;
                };
                if *mine != b {
                    return;
                }
                promises.insert(from, acc);
                if promises.len() < majority {
                    return;
                }
                let mut best: BTreeMap<Slot, (Ballot, u64)> = BTreeMap::new();
                for list in promises.values() {
                    for &(s, ab, v) in list {
                        if best.get(&s).is_none_or(|(bb, _)| ab > *bb) {
                            best.insert(s, (ab, v));
                        }
                    }
                }
                let next = best.keys().next_back().map_or(1, |s| s + 1);
                cx.note(to, format!("leads at {b}"));
                self.replicas[to].role = Role::Leading {
                    b,
                    next,
                    pending: BTreeMap::new(),
                    lease_until: None,
                    lease_req: None,
                    reads: BTreeMap::new(),
                };
                for (s, (_, v)) in best {
                    if !self.replicas[to].chosen.contains_key(&s) {
                        self.propose(cx, to, v, None, Some(s));
                    }
                }
                for (client, v) in std::mem::take(&mut self.replicas[to].queued) {
                    self.propose(cx, to, v, Some(client), None);
                }
                self.request_lease(cx, to);
            }
            LMsg::Lease(b, ms) => {
                let margin = self.margin;
                let r = &mut self.replicas[to];
                if r.promised.is_none_or(|p| b >= p) {
                    r.promised = Some(b);
                    let until = now + ms + margin;
                    r.granted = Some((b, until));
                    let how = if margin == 0 {
                        String::new()
                    } else {
                        format!(" ({ms} + {margin} ms margin)")
                    };
                    cx.note(to, format!("promises {b} to join no other ballot until {until} ms on its clock{how}"));
                    cx.send(to, from, LMsg::LeaseAck(b));
                }
            }
            LMsg::LeaseAck(b) => {
                let Role::Leading {
                    b: mine,
                    lease_req,
                    lease_until,
                    ..
                } = &mut self.replicas[to].role
                else {
                    return;
                };
                if *mine != b {
                    return;
                }
                if let Some((sent, acks)) = lease_req {
                    acks.insert(from);
                    if acks.len() >= majority {
                        let until = *sent + LEASE_MS;
                        *lease_until = Some(until);
                        *lease_req = None;
                        cx.note(
                            to,
                            format!("holds the lease until {until} ms on its own clock"),
                        );
                    }
                }
            }
            LMsg::Accept(b, s, v) => {
                let r = &mut self.replicas[to];
                if r.promised.is_none_or(|p| b >= p) {
                    r.promised = Some(b);
                    r.accepted.insert(s, (b, v));
                    cx.send(to, from, LMsg::Accepted(b, s));
                }
            }
            LMsg::Accepted(b, s) => {
                let Role::Leading {
                    b: mine, pending, ..
                } = &mut self.replicas[to].role
                else {
                    return;
                };
                if *mine != b {
                    return;
                }
                let Some((v, acks, client)) = pending.get_mut(&s) else {
                    return;
                };
                acks.insert(from);
                if acks.len() >= majority {
                    let (v, client) = (*v, *client);
                    pending.remove(&s);
                    self.replicas[to].chosen.insert(s, v);
                    cx.decide(
                        to,
                        &format!("slot {s}"),
                        &format!("x={v}"),
                        format!("#{s} (x = {v}) chosen at {b}"),
                    );
                    if let Some(c) = client {
                        cx.send(to, c, LMsg::PutOk(s));
                    }
                }
            }
            LMsg::Confirm(b) if self.replicas[to].promised.is_none_or(|p| b >= p) => {
                cx.send(to, from, LMsg::Confirmed(b));
            }
            LMsg::Confirmed(b) => {
                let (v, s) = self.latest(to);
                let Role::Leading { b: mine, reads, .. } = &mut self.replicas[to].role else {
                    return;
                };
                if *mine != b {
                    return;
                }
                let mut done = Vec::new();
                for (&id, read) in reads.iter_mut() {
                    read.acks.insert(from);
                    if read.acks.len() >= majority {
                        done.push((id, read.client));
                    }
                }
                for (id, client) in done {
                    reads.remove(&id);
                    cx.send(to, client, LMsg::GetOk(v, s));
                }
            }
            LMsg::Put(v) => match &self.replicas[to].role {
                Role::Leading { .. } => self.propose(cx, to, v, Some(from), None),
                _ => {
                    cx.note(
                        to,
                        format!("not leading yet: holds put(x={v}) until it leads"),
                    );
                    self.replicas[to].queued.push((from, v));
                }
            },
            LMsg::Get => {
                let (v, s) = self.latest(to);
                let id = self.next_read;
                let Role::Leading {
                    b,
                    lease_until,
                    reads,
                    ..
                } = &mut self.replicas[to].role
                else {
                    cx.send(to, from, LMsg::GetErr("not the leader"));
                    return;
                };
                let b = *b;
                match *lease_until {
                    Some(until) if now < until => {
                        cx.note(
                            to,
                            format!("its clock reads {now} ms < lease end {until} ms: serves x = {v} from its own copy"),
                        );
                        cx.send(to, from, LMsg::GetOk(v, s));
                    }
                    _ => {
                        let why = match *lease_until {
                            Some(until) => {
                                format!("its clock reads {now} ms: the lease ended at {until} ms")
                            }
                            None => "no lease".to_string(),
                        };
                        cx.note(
                            to,
                            format!("{why}; confirms leadership with a quorum first"),
                        );
                        reads.insert(
                            id,
                            Read {
                                client: from,
                                acks: BTreeSet::from([to]),
                            },
                        );
                        self.next_read += 1;
                        for r in (0..n).filter(|&r| r != to) {
                            cx.send(to, r, LMsg::Confirm(b));
                        }
                        cx.timer(to, CONFIRM_TIMEOUT_MS, LTimer::ConfirmTimeout(id));
                    }
                }
            }
            _ => {}
        }
    }

    fn on_timer(&mut self, cx: &mut Cx<'_, Self>, node: Node, timer: LTimer) {
        let n = self.n();
        match timer {
            LTimer::Elect => {
                let round = self.replicas[node].promised.map_or(1, |p| p.round + 1);
                let b = Ballot::new(round, node as u32 + 1);
                cx.note(node, format!("campaigns with ballot {b}"));
                self.replicas[node].role = Role::Electing {
                    b,
                    promises: BTreeMap::new(),
                    retry_set: false,
                };
                for r in 0..n {
                    cx.send(node, r, LMsg::Prepare(b));
                }
            }
            LTimer::RenewLease => {
                cx.note(node, "renews its lease");
                self.request_lease(cx, node);
            }
            LTimer::ConfirmTimeout(id) => {
                if let Role::Leading { reads, .. } = &mut self.replicas[node].role {
                    if let Some(read) = reads.remove(&id) {
                        cx.note(node, "no quorum confirmed it in time: fails the read");
                        cx.send(
                            node,
                            read.client,
                            LMsg::GetErr("leadership not confirmed: no quorum"),
                        );
                    }
                }
            }
            LTimer::Put(target, v) => {
                let c = &mut self.clients[node - n];
                c.start = cx.now();
                c.pending = Some(v);
                c.last = format!("put x={v} pending");
                cx.send(node, target, LMsg::Put(v));
            }
            LTimer::Get(target) => {
                let c = &mut self.clients[node - n];
                c.start = cx.now();
                c.last = "get x pending".into();
                cx.send(node, target, LMsg::Get);
            }
        }
    }

    fn state(&self, node: Node) -> String {
        if node >= self.n() {
            return self.clients[node - self.n()].last.clone();
        }
        let r = &self.replicas[node];
        let role = match &r.role {
            Role::Follower => "follower".to_string(),
            Role::Electing { b, .. } => format!("campaigning {b}"),
            Role::Leading { b, lease_until, .. } => match lease_until {
                Some(u) => format!("leader {b}, lease until {u} ms (own clock)"),
                None => format!("leader {b}, no lease"),
            },
        };
        let granted = match r.granted {
            Some((b, u)) => format!(", lease promised to {b} until {u} ms"),
            None => String::new(),
        };
        let (v, s) = self.latest(node);
        format!("{role}{granted}; x = {v} (version {s})")
    }
}

const NODES: &[&str] = &["S1", "S2", "S3", "C1", "C2"];
const S1: Node = 0;
const S2: Node = 1;
const S3: Node = 2;
const C1: Node = 3;
const C2: Node = 4;

fn play(margin: u64) -> Played {
    let mut sim = Sim::new(Leases::new(3, 2, margin), NODES, LATENCY, 3000);
    sim.at(0, Action::Drift(S1, SLOW_CLOCK))
        .at(0, Action::Fire(S1, LTimer::Elect))
        .at(50, Action::Fire(C1, LTimer::Put(S1, 1)))
        .at(100, Action::Partition(vec![vec![S1, C1], vec![S2, S3, C2]]))
        .at(500, Action::Fire(S1, LTimer::RenewLease))
        .at(
            600,
            Action::Note(
                "S2: no word from S1 since the partition, its election timeout fires".into(),
            ),
        )
        .at(600, Action::Fire(S2, LTimer::Elect))
        .at(1040, Action::Fire(C2, LTimer::Put(S2, 2)))
        .at(1100, Action::Fire(C1, LTimer::Get(S1)))
        .at(1200, Action::Fire(C1, LTimer::Get(S1)));
    sim.run()
}

fn no_margin() -> Played {
    play(0)
}

fn margin() -> Played {
    play(MARGIN_MS)
}

#[cfg(test)]
mod tests {
    use crate::{run, VerdictKind};

    #[test]
    fn without_the_margin_a_slow_clock_serves_a_stale_read() {
        let r = run("lease", "no-margin").unwrap();
        assert_eq!(
            r.verdict.kind,
            VerdictKind::StaleRead,
            "{}",
            r.verdict.summary
        );
        assert!(
            r.verdict.summary.contains("C1 read x = 1"),
            "{}",
            r.verdict.summary
        );
        // Two leaders at once: S2 leads while S1 still serves from its lease.
        assert!(r
            .steps
            .iter()
            .any(|s| s.from.as_deref() == Some("S2") && s.what == "leads at 2.2"));
        assert!(r
            .steps
            .iter()
            .any(|s| s.from.as_deref() == Some("S1") && s.what.contains("serves x = 1")));
    }

    #[test]
    fn with_the_margin_the_old_lease_ends_first() {
        let r = run("lease", "margin").unwrap();
        assert_eq!(r.verdict.kind, VerdictKind::Safe, "{}", r.verdict.summary);
        let lead = r
            .steps
            .iter()
            .find(|s| s.what == "leads at 2.2")
            .unwrap()
            .at;
        let ended = r
            .steps
            .iter()
            .find(|s| s.what.contains("the lease ended"))
            .unwrap();
        assert!(r.steps.iter().any(|s| s.what.contains("the read fails")));
        // S1's lease (1000 ms on a clock 10% slow) ends at 1131 ms real time.
        assert!(
            lead > 1131 && ended.at > 1131,
            "lead {lead}, ended {}",
            ended.at
        );
    }
}
