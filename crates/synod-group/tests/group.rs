//! The group driver as a node uses it: three groups wired by an in-memory
//! network that delivers at once (optionally cutting a node off), each
//! round's write taken as durable at once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use synod_group::{Answer, Group, GroupConfig, PeerItem, Request, Ticket, PENDING_WRITES_MAX};
use synod_kv::{outcome_error, KvError, KvStore};
use synod_paxos::{Config, NodeId, Replica, Time};
use synod_proto::etcdserverpb::{PutRequest, RangeRequest};
use synod_proto::synodpb::{command::Op, outcome, Outcome};

const TICK_MS: u64 = 10;

struct Cluster {
    groups: BTreeMap<NodeId, Group>,
    now: u64,
    /// Nodes whose messages (both ways) are dropped.
    cut: BTreeSet<NodeId>,
    answers: Vec<(NodeId, Ticket, Answer)>,
}

fn config(node: NodeId, session_idle_ms: u64) -> GroupConfig {
    GroupConfig {
        node,
        session: 100 + node.0,
        snapshot_every: 10_000,
        compact_keep: 0,
        session_idle_ms,
        initial_members: Vec::new(),
        record_applied: false,
        timestamp_oracle: true,
        stamped: false,
        state_flush_rounds: 4,
    }
}

impl Cluster {
    fn new(n: u64) -> Cluster {
        Cluster::with_session_idle(n, 0)
    }

    fn with_session_idle(n: u64, idle_ms: u64) -> Cluster {
        let ids: Vec<NodeId> = (1..=n).map(NodeId).collect();
        let groups = ids
            .iter()
            .map(|&id| {
                let replica = Replica::new(Config::majority(id, &ids), Time(0)).unwrap();
                let group = Group::new(config(id, idle_ms), replica, KvStore::default(), Time(0));
                (id, group)
            })
            .collect();
        Cluster {
            groups,
            now: 0,
            cut: BTreeSet::new(),
            answers: Vec::new(),
        }
    }

    /// Drives every group and delivers every message until all are quiet.
    fn settle(&mut self) {
        let mut wire: VecDeque<(NodeId, NodeId, PeerItem)> = VecDeque::new();
        for _ in 0..10_000 {
            for (&id, group) in self.groups.iter_mut() {
                while group.has_ready() {
                    let ready = group.ready();
                    for (to, item) in ready.sends {
                        wire.push_back((id, to, item));
                    }
                    for (ticket, answer) in ready.answers {
                        self.answers.push((id, ticket, answer));
                    }
                    group.on_written();
                    group.on_persisted(ready.token);
                }
                group.check_invariants();
            }
            let Some((from, to, item)) = wire.pop_front() else {
                return;
            };
            if !self.cut.contains(&from) && !self.cut.contains(&to) {
                let now = Time(self.now);
                self.groups.get_mut(&to).unwrap().step(from, item, now);
            }
        }
        panic!("the cluster did not settle");
    }

    fn run_ms(&mut self, ms: u64) {
        for _ in 0..ms / TICK_MS {
            self.now += TICK_MS;
            for group in self.groups.values_mut() {
                group.tick(Time(self.now));
            }
            self.settle();
        }
    }

    fn leader(&self) -> NodeId {
        let leaders: Vec<NodeId> = self
            .groups
            .iter()
            .filter(|(_, g)| g.status().is_leader)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(leaders.len(), 1, "leaders: {leaders:?}");
        leaders[0]
    }

    fn request(&mut self, at: NodeId, ticket: Ticket, request: Request) {
        let now = Time(self.now);
        self.groups
            .get_mut(&at)
            .unwrap()
            .request(ticket, request, now);
        self.settle();
    }

    fn answer(&self, at: NodeId, ticket: Ticket) -> Option<&Answer> {
        self.answers
            .iter()
            .find(|(n, t, _)| *n == at && *t == ticket)
            .map(|(_, _, a)| a)
    }
}

fn put(key: &str, value: &str) -> Request {
    Request::Write(Op::Put(PutRequest {
        key: key.to_string().into(),
        value: value.to_string().into(),
        ..Default::default()
    }))
}

fn read(key: &str) -> Request {
    Request::Read {
        request: RangeRequest {
            key: key.to_string().into(),
            ..Default::default()
        },
        serializable: false,
    }
}

fn error_of(outcome: &Outcome) -> Option<KvError> {
    match &outcome.result {
        Some(outcome::Result::Error(e)) => Some(outcome_error(e)),
        _ => None,
    }
}

fn elected() -> (Cluster, NodeId, NodeId) {
    let mut c = Cluster::new(3);
    c.run_ms(2_000);
    let leader = c.leader();
    let follower = NodeId(if leader == NodeId(1) { 2 } else { 1 });
    (c, leader, follower)
}

#[test]
fn a_write_at_a_follower_is_forwarded_and_answered_where_it_was_asked() {
    let (mut c, _, follower) = elected();
    c.request(follower, 1, put("k", "v"));
    c.run_ms(100);
    match c.answer(follower, 1) {
        Some(Answer::Write(o)) => assert_eq!(error_of(o), None, "{o:?}"),
        other => panic!("no write answer at the follower: {other:?}"),
    }
    for g in c.groups.values() {
        assert_eq!(g.kv().revision(), 2, "every replica applied the put once");
    }
}

#[test]
fn a_linearizable_read_at_a_follower_sees_a_write_acknowledged_before_it() {
    let (mut c, leader, follower) = elected();
    c.request(leader, 1, put("k", "v1"));
    assert!(matches!(c.answer(leader, 1), Some(Answer::Write(_))));
    c.request(follower, 2, read("k"));
    c.run_ms(100);
    match c.answer(follower, 2) {
        Some(Answer::Read(Ok(r))) => assert_eq!(r.clone().fill().kvs[0].value, "v1".as_bytes()),
        other => panic!("no read answer: {other:?}"),
    }
}

/// Reads that arrive at a follower in one round share one read-index
/// question to the leader and take no slot in the log.
#[test]
fn follower_reads_in_one_round_share_one_question_and_take_no_slot() {
    let (mut c, leader, follower) = elected();
    c.request(leader, 1, put("k", "v1"));
    let commit = c.groups[&leader].status().commit;
    let now = Time(c.now);
    let f = c.groups.get_mut(&follower).unwrap();
    for ticket in 10..60 {
        f.request(ticket, read("k"), now);
    }
    let ready = f.ready();
    f.on_written();
    f.on_persisted(ready.token);
    let questions: Vec<&PeerItem> = ready
        .sends
        .iter()
        .filter(|(to, item)| *to == leader && matches!(item, PeerItem::ReadIndex { .. }))
        .map(|(_, item)| item)
        .collect();
    assert_eq!(questions.len(), 1, "sends: {:?}", ready.sends);
    let question = questions[0].clone();
    c.groups
        .get_mut(&leader)
        .unwrap()
        .step(follower, question, now);
    c.settle();
    for ticket in 10..60 {
        match c.answer(follower, ticket) {
            Some(Answer::Read(Ok(r))) => {
                assert_eq!(r.clone().fill().kvs[0].value, "v1".as_bytes())
            }
            other => panic!("read {ticket}: {other:?}"),
        }
    }
    assert_eq!(
        c.groups[&leader].status().commit,
        commit,
        "a read took a slot"
    );
}

/// A follower cut off from the leader cannot confirm anything: its read
/// waits (it would be stale) and is served, fresh, once it hears again.
#[test]
fn a_cut_off_follower_holds_its_read_until_it_can_serve_it_fresh() {
    let (mut c, leader, follower) = elected();
    c.request(leader, 1, put("k", "v1"));
    c.run_ms(100);
    c.cut.insert(follower);
    c.request(leader, 2, put("k", "v2"));
    c.request(follower, 3, read("k"));
    c.run_ms(150);
    assert!(c.answer(follower, 3).is_none(), "served while cut off");
    c.cut.clear();
    c.run_ms(1_000);
    match c.answer(follower, 3) {
        Some(Answer::Read(Ok(r))) => assert_eq!(r.clone().fill().kvs[0].value, "v2".as_bytes()),
        other => panic!("no read answer after healing: {other:?}"),
    }
}

fn timestamps(c: &mut Cluster, at: NodeId, ticket: Ticket, count: u32) -> (i64, i64) {
    c.request(
        at,
        ticket,
        Request::Timestamps {
            count,
            leases: Vec::new(),
        },
    );
    c.run_ms(50);
    match c.answer(at, ticket) {
        Some(Answer::Timestamps(Some(range), _)) => *range,
        other => panic!("no timestamps at {at}: {other:?}"),
    }
}

/// The oracle hands out unique timestamps that increase from one answer to
/// the next, asked at the leader or at a follower, and across a change of
/// leader: a new leader reserves above everything before it.
#[test]
fn timestamps_increase_across_members_and_leaders() {
    let (mut c, leader, follower) = elected();
    let a = timestamps(&mut c, leader, 1, 3);
    let b = timestamps(&mut c, follower, 2, 5);
    assert_eq!(a.1 - a.0, 2);
    assert_eq!(b.1 - b.0, 4);
    assert!(b.0 > a.1, "{a:?} then {b:?}");
    c.cut.insert(leader);
    c.run_ms(3_000);
    let new_leader = c
        .groups
        .iter()
        .find(|(id, g)| **id != leader && g.status().is_leader)
        .map(|(id, _)| *id)
        .expect("a new leader");
    let other = NodeId(6 - leader.0 - new_leader.0);
    let d = timestamps(&mut c, other, 3, 1);
    assert!(d.0 > b.1, "{b:?} then {d:?} from the new leader");
    let e = timestamps(&mut c, new_leader, 4, 2);
    assert!(e.0 > d.1, "{d:?} then {e:?}");
}

#[test]
fn a_write_whose_client_gave_up_is_not_forwarded_again() {
    let mut c = Cluster::new(3);
    // No leader yet: the write waits to be forwarded.
    c.request(NodeId(2), 7, put("k", "v"));
    c.groups
        .get_mut(&NodeId(2))
        .unwrap()
        .abandon(&BTreeSet::from([7]));
    assert_eq!(c.groups[&NodeId(2)].waiting(), 0);
    c.run_ms(3_000);
    c.leader();
    assert!(c.answer(NodeId(2), 7).is_none());
    assert!(
        c.groups.values().all(|g| g.kv().revision() == 1),
        "the abandoned write applied"
    );
}

#[test]
fn writes_past_the_pending_bound_are_refused_with_too_many_requests() {
    let mut c = Cluster::new(3);
    c.cut.insert(NodeId(3));
    for ticket in 0..=PENDING_WRITES_MAX as u64 {
        let now = Time(c.now);
        let group = c.groups.get_mut(&NodeId(3)).unwrap();
        group.request(ticket, put("k", "v"), now);
    }
    c.settle();
    let last = PENDING_WRITES_MAX as u64;
    match c.answer(NodeId(3), last) {
        Some(Answer::Write(o)) => assert_eq!(error_of(o), Some(KvError::TooManyRequests)),
        other => panic!("the write past the bound was not refused: {other:?}"),
    }
    assert!(
        c.answer(NodeId(3), last - 1).is_none(),
        "only the excess is refused"
    );
}

#[test]
fn a_node_outside_its_configuration_refuses_with_no_leader() {
    // A node started to join, before it learned the configuration.
    let mut join = Config::majority(NodeId(4), &[NodeId(4)]);
    join.join = true;
    let replica = Replica::new(join, Time(0)).unwrap();
    let mut g = Group::new(config(NodeId(4), 0), replica, KvStore::default(), Time(0));
    g.request(1, put("k", "v"), Time(0));
    g.request(2, read("k"), Time(0));
    let ready = g.ready();
    match &ready.answers[..] {
        [(1, Answer::Write(o)), (2, Answer::Read(Err(KvError::NoLeader)))] => {
            assert_eq!(error_of(o), Some(KvError::NoLeader))
        }
        other => panic!("unexpected answers {other:?}"),
    }
}

/// A write stuck on a node cut off from the leader is answered "timed
/// out" at its deadline (a quarter of the session idle time) and never
/// sent again; the leader then sees that node's session idle and expires
/// it through the log, on every replica; the node writes again afterwards.
#[test]
fn idle_sessions_expire_through_the_log_after_stuck_writes_time_out() {
    let mut c = Cluster::with_session_idle(3, 4_000);
    c.run_ms(2_000);
    let leader = c.leader();
    let follower = NodeId(if leader.0 == 1 { 2 } else { 1 });
    c.request(follower, 1, put("k", "v1"));
    c.run_ms(100);
    assert!(matches!(c.answer(follower, 1), Some(Answer::Write(_))));
    c.cut.insert(follower);
    c.request(follower, 2, put("k", "v2"));
    c.run_ms(800);
    assert!(
        c.answer(follower, 2).is_none(),
        "answered before its deadline"
    );
    c.run_ms(400);
    match c.answer(follower, 2) {
        Some(Answer::Write(Outcome {
            result: Some(outcome::Result::Error(e)),
        })) => assert_eq!(outcome_error(e), KvError::TimedOut),
        other => panic!("no time-out: {other:?}"),
    }
    assert_eq!(c.groups[&leader].status().sessions_expired, 0);
    c.run_ms(4_000);
    for (id, g) in &c.groups {
        let expected = u64::from(*id != follower);
        assert_eq!(g.status().sessions_expired, expected, "{id}");
        assert!(g
            .kv()
            .sessions()
            .all(|(s, _)| s != 100 + follower.0 || *id == follower));
    }
    c.cut.clear();
    c.run_ms(2_000);
    c.request(follower, 3, put("k", "v3"));
    c.run_ms(200);
    assert!(matches!(
        c.answer(follower, 3),
        Some(Answer::Write(Outcome {
            result: Some(outcome::Result::Put(_))
        }))
    ));
}

/// A group that is not the oracle (every group of a node today) refuses
/// timestamps and never reserves: its etcd revisions get no jumps.
#[test]
fn a_group_that_is_not_the_oracle_refuses_timestamps() {
    let me = NodeId(1);
    let replica = Replica::new(Config::majority(me, &[me]), Time(0)).unwrap();
    let config = GroupConfig {
        timestamp_oracle: false,
        stamped: false,
        state_flush_rounds: 4,
        ..config(me, 0)
    };
    let mut group = Group::new(config, replica, KvStore::default(), Time(0));
    let mut answers = Vec::new();
    for ms in (0..3_000).step_by(10) {
        if ms == 2_000 {
            group.request(
                1,
                Request::Timestamps {
                    count: 4,
                    leases: Vec::new(),
                },
                Time(ms),
            );
        }
        group.tick(Time(ms));
        while group.has_ready() {
            let ready = group.ready();
            answers.extend(ready.answers);
            group.on_written();
            group.on_persisted(ready.token);
        }
    }
    assert!(group.status().is_leader);
    assert_eq!(
        answers,
        vec![(1, Answer::Timestamps(None, Default::default()))]
    );
    assert_eq!(group.kv().revision(), 1, "a reservation applied");
}

/// A one-voter group whose state machine journals to `rows`, elected by
/// `now`.
fn alone_on_rows(rows: &std::sync::Arc<synod_kv::MemoryRows>, now: &mut u64) -> Group {
    let me = NodeId(1);
    let replica = Replica::new(Config::majority(me, &[me]), Time(0)).unwrap();
    let mut kv = KvStore::default();
    kv.attach(rows.clone(), true);
    let mut group = Group::new(config(me, 0), replica, kv, Time(0));
    for _ in 0..300 {
        *now += TICK_MS;
        group.tick(Time(*now));
        drain(&mut group, rows);
    }
    assert!(group.status().is_leader);
    group
}

/// Takes every ready as written at once; returns how many carried rows.
fn drain(group: &mut Group, rows: &synod_kv::MemoryRows) -> usize {
    let mut carried = 0;
    while group.has_ready() {
        let ready = group.ready();
        if !ready.state.is_empty() {
            rows.apply(&ready.state);
            carried += 1;
        }
        group.on_written();
        group.on_persisted(ready.token);
    }
    carried
}

/// The revision the rows hold.
fn rows_revision(rows: &std::sync::Arc<synod_kv::MemoryRows>) -> i64 {
    KvStore::load(rows.clone())
        .unwrap()
        .map_or(0, |kv| kv.revision())
}

/// Rows are written every `state_flush_rounds` rounds that applied
/// something, not every round: a round in between leaves them as they
/// were (the log above them is what a restart replays). Asked to, or
/// after a second idle, a group writes them at once.
#[test]
fn rows_are_written_every_few_rounds_and_when_asked() {
    let rows = std::sync::Arc::new(synod_kv::MemoryRows::default());
    let mut now = 0;
    let mut group = alone_on_rows(&rows, &mut now);
    let mut written_at = Vec::new();
    for i in 0..12u64 {
        group.request(1_000 + i, put(&format!("k{i}"), "v"), Time(now));
        now += TICK_MS;
        group.tick(Time(now));
        if drain(&mut group, &rows) > 0 {
            written_at.push(i);
            assert_eq!(rows_revision(&rows), group.kv().revision());
        } else {
            assert!(
                rows_revision(&rows) < group.kv().revision(),
                "put {i}: rows {} store {}",
                rows_revision(&rows),
                group.kv().revision()
            );
        }
    }
    // Four rounds that applied a put per write (the config's 4).
    assert_eq!(
        written_at,
        [3, 7, 11],
        "rows written after puts {written_at:?}"
    );
    group.request(2_000, put("late", "v"), Time(now));
    now += TICK_MS;
    group.tick(Time(now));
    assert_eq!(drain(&mut group, &rows), 0);
    group.write_rows_now();
    assert!(group.has_ready(), "asked to write, the group makes a ready");
    assert_eq!(drain(&mut group, &rows), 1);
    assert_eq!(rows_revision(&rows), group.kv().revision());
    // An idle group writes what waits after STATE_FLUSH_IDLE_MS.
    group.request(2_001, put("idle", "v"), Time(now));
    now += TICK_MS;
    group.tick(Time(now));
    assert_eq!(drain(&mut group, &rows), 0);
    now += synod_group::STATE_FLUSH_IDLE_MS;
    group.tick(Time(now));
    assert_eq!(drain(&mut group, &rows), 1);
    assert_eq!(rows_revision(&rows), group.kv().revision());
}
