//! Hostile and extreme peer input: every message here is one no correct
//! replica sends. Each must be refused (and counted), never panic, allocate
//! beyond the bounds in `limits`, or wedge the replica; and the bounds must
//! leave legitimate catch-up and takeover working.

use std::sync::Arc;
use synod_paxos::{
    Ballot, Config, Configuration, Durable, Envelope, Membership, Message, NodeId, Replica,
    RoleKind, Slot, SlotRecord, Time, Value, CANDIDATE_LAG_MAX, MESSAGE_SLOTS_MAX, ROUND_MAX,
};

type R = Replica<u32>;

fn ids(n: u64) -> Vec<NodeId> {
    (1..=n).map(NodeId).collect()
}

fn replica(id: u64) -> R {
    replica_of(id, 3)
}

fn replica_of(id: u64, voters: u64) -> R {
    Replica::new(Config::majority(NodeId(id), &ids(voters)), Time(0)).unwrap()
}

fn b(round: u64, node: u64) -> Ballot {
    Ballot {
        round,
        node: NodeId(node),
    }
}

fn cmd(x: u32) -> Value<u32> {
    Value::Batch(Arc::from(vec![x]))
}

fn accept(ballot: Ballot, first: u64, values: Vec<Value<u32>>, commit: u64) -> Message<u32> {
    Message::Accept {
        ballot,
        first: Slot(first),
        values,
        commit: Slot(commit),
        seq: 1,
        sent_at: Time(0),
    }
}

fn learn(first: u64, values: Vec<Value<u32>>) -> Message<u32> {
    Message::Learn {
        ballot: b(1, 2),
        first: Slot(first),
        values,
    }
}

/// Persists (nothing to do: no restarts here) and returns what `r` sends.
fn drain(r: &mut R) -> Vec<Envelope<u32>> {
    let mut out = Vec::new();
    for _ in 0..10 {
        let ready = r.ready();
        out.extend(ready.messages);
        r.on_persisted(ready.token);
        if !r.has_ready() {
            break;
        }
    }
    out
}

#[test]
fn accept_or_learn_far_beyond_the_log_allocates_nothing() {
    let mut r = replica(1);
    r.step(
        NodeId(2),
        accept(b(1, 2), 1 << 63, vec![cmd(1)], 0),
        Time(0),
    );
    assert_eq!(r.log().last(), Slot(0));
    r.step(NodeId(2), learn(1 << 63, vec![cmd(2), cmd(3)]), Time(0));
    assert_eq!(r.log().last(), Slot(0));
    // A commit hint far ahead only marks what is stored.
    r.step(NodeId(2), accept(b(1, 2), 1, vec![], u64::MAX), Time(0));
    assert_eq!(r.log().last(), Slot(0));
    assert_eq!(r.refused().slots_ahead, 3);
    // The acknowledgement says nothing was accepted, and asks to catch up.
    let acks: Vec<_> = drain(&mut r)
        .into_iter()
        .filter_map(|e| match e.message {
            Message::Accepted { count, behind, .. } => Some((count, behind)),
            _ => None,
        })
        .collect();
    assert_eq!(acks, vec![(0, false), (0, true)]);
}

#[test]
fn a_far_behind_voter_stores_only_a_bounded_prefix() {
    let mut r = replica(1);
    let ahead = r.config().slots_ahead_max();
    let values = (0..5).map(cmd).collect();
    r.step(NodeId(2), accept(b(1, 2), ahead - 1, values, 0), Time(0));
    assert_eq!(r.log().last(), Slot(ahead));
    assert_eq!(r.refused().slots_ahead, 3);
    let counts: Vec<u64> = drain(&mut r)
        .into_iter()
        .filter_map(|e| match e.message {
            Message::Accepted { count, .. } => Some(count),
            _ => None,
        })
        .collect();
    assert_eq!(counts, vec![2]);
}

#[test]
fn impossible_slot_ranges_are_malformed() {
    let mut r = replica(1);
    r.step(
        NodeId(2),
        accept(b(1, 2), u64::MAX, vec![cmd(1), cmd(2)], 0),
        Time(0),
    );
    r.step(NodeId(2), accept(b(1, 2), 0, vec![cmd(1)], 0), Time(0));
    r.step(NodeId(2), learn(u64::MAX - 1, vec![cmd(1); 3]), Time(0));
    let too_many = vec![Value::Noop; MESSAGE_SLOTS_MAX as usize + 1];
    r.step(NodeId(2), learn(1, too_many), Time(0));
    r.step(
        NodeId(2),
        Message::Accepted {
            ballot: b(1, 1),
            first: Slot(u64::MAX - 1),
            count: 5,
            commit: Slot(0),
            behind: false,
            seq: 0,
            sent_at: Time(0),
        },
        Time(0),
    );
    assert_eq!(r.refused().malformed, 5);
    assert_eq!(r.log().last(), Slot(0));
    assert_eq!(r.status().promised, Ballot::ZERO);
}

#[test]
fn invalid_membership_entries_are_refused() {
    let mut r = replica(1);
    let mut bad = Membership::new(&ids(3), &[]);
    bad.phase1_quorum = 7;
    let entry = Value::Membership(Configuration::Stable(bad));
    r.step(
        NodeId(2),
        accept(b(1, 2), 1, vec![entry.clone()], 1),
        Time(0),
    );
    r.step(NodeId(2), learn(1, vec![entry]), Time(0));
    assert_eq!(r.refused().malformed, 2);
    assert_eq!(r.log().last(), Slot(0));
    assert_eq!(r.status().commit, Slot(0));
}

#[test]
fn absurd_rounds_are_refused_and_do_not_wedge_campaigns() {
    let mut r = replica(1);
    let huge = b(u64::MAX, 2);
    r.step(
        NodeId(2),
        Message::Prepare {
            ballot: huge,
            commit: Slot(0),
        },
        Time(0),
    );
    r.step(
        NodeId(2),
        Message::Reject {
            ballot: b(1, 1),
            promised: huge,
        },
        Time(0),
    );
    r.step(
        NodeId(2),
        Message::ProbeReply {
            ballot: b(1, 1),
            ok: false,
            promised: b(ROUND_MAX + 1, 2),
        },
        Time(0),
    );
    assert_eq!(r.refused().absurd_round, 3);
    assert_eq!(r.status().promised, Ballot::ZERO);
    r.campaign_now();
    assert_eq!(r.status().role, RoleKind::Candidate);
    assert_eq!(r.status().promised, b(1, 1));

    // A replica that saw the highest admitted round does not campaign past
    // it (peers would refuse its ballot, and it would refuse every leader
    // below): it stays a follower and still accepts from a leader.
    let mut r = replica(1);
    r.step(
        NodeId(2),
        Message::Reject {
            ballot: b(1, 1),
            promised: b(ROUND_MAX, 2),
        },
        Time(0),
    );
    r.campaign_now();
    assert_eq!(r.status().role, RoleKind::Follower);
    assert_eq!(r.status().promised, Ballot::ZERO);
    r.step(NodeId(2), accept(b(3, 2), 1, vec![cmd(1)], 0), Time(0));
    assert_eq!(r.status().promised, b(3, 2), "still accepts from a leader");
    assert_eq!(b(u64::MAX, 1).next_for(NodeId(2)).round, u64::MAX);
}

#[test]
fn conflicting_chosen_values_are_refused() {
    let mut r = replica(1);
    r.step(NodeId(2), learn(1, vec![cmd(1)]), Time(0));
    r.step(NodeId(3), learn(1, vec![cmd(2)]), Time(0));
    assert_eq!(r.refused().conflicting_chosen, 1);
    assert_eq!(r.log().get(Slot(1)).unwrap().value, cmd(1));

    // Promises that report two chosen values for one slot (five voters, so
    // both count before the candidate leads).
    let mut r = replica_of(1, 5);
    r.campaign_now();
    drain(&mut r);
    let ballot = r.status().promised;
    let chosen = |x| SlotRecord {
        slot: Slot(1),
        ballot: b(0, 2),
        value: cmd(x),
        chosen: true,
    };
    for (from, x) in [(2, 1), (3, 2)] {
        let promise = Message::Promise {
            ballot,
            accepted: vec![chosen(x)],
            snapshot: Slot(0),
        };
        r.step(NodeId(from), promise, Time(0));
    }
    assert_eq!(r.refused().conflicting_chosen, 1);
    assert_eq!(r.status().role, RoleKind::Leader);
}

#[test]
fn a_promise_reporting_slots_far_ahead_is_not_counted() {
    let mut r = replica(1);
    r.campaign_now();
    drain(&mut r);
    let ballot = r.status().promised;
    let far = SlotRecord {
        slot: Slot(1 << 40),
        ballot: b(0, 2),
        value: cmd(1),
        chosen: false,
    };
    let promise = Message::Promise {
        ballot,
        accepted: vec![far],
        snapshot: Slot(0),
    };
    r.step(NodeId(2), promise, Time(0));
    assert_eq!(r.refused().promise_range, 1);
    assert_eq!(r.status().role, RoleKind::Candidate);
}

#[test]
fn a_candidate_too_far_behind_is_not_promised() {
    let lag = CANDIDATE_LAG_MAX + 10;
    let records = (1..=lag)
        .map(|s| SlotRecord {
            slot: Slot(s),
            ballot: b(1, 1),
            value: Value::Noop,
            chosen: true,
        })
        .collect();
    let durable = Durable {
        commit: Slot(lag),
        records,
        ..Durable::empty()
    };
    let mut r: R =
        Replica::restore(Config::majority(NodeId(1), &ids(3)), durable, Time(0)).unwrap();
    assert_eq!(r.status().commit, Slot(lag));
    drain(&mut r);
    let promises = |r: &mut R| {
        drain(r)
            .into_iter()
            .filter_map(|e| match e.message {
                Message::Promise { accepted, .. } => Some(accepted.len() as u64),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let prepare = |round, commit| Message::Prepare {
        ballot: b(round, 2),
        commit: Slot(commit),
    };
    r.step(NodeId(2), prepare(1, 5), Time(0));
    assert_eq!(promises(&mut r), Vec::<u64>::new());
    // Close enough: the promise reports what it misses, within the bound.
    r.step(NodeId(2), prepare(2, 10), Time(0));
    assert_eq!(promises(&mut r), vec![CANDIDATE_LAG_MAX]);
    // A prepare past the end of every log asks for nothing.
    r.step(NodeId(2), prepare(3, u64::MAX), Time(0));
    assert_eq!(promises(&mut r), vec![0]);
}

/// Three replicas on a network this test drives; replicas in `cut` hear
/// nothing and are heard by nobody. Checks after every step that no
/// replica stores more than its bound past its commit point, and that no
/// accept or learn carries more than a window or a catch-up batch.
struct Net {
    replicas: Vec<R>,
    now: Time,
    cut: Vec<NodeId>,
}

impl Net {
    fn new(config: impl Fn(NodeId) -> Config, durable: impl Fn(NodeId) -> Durable<u32>) -> Net {
        let replicas = ids(3)
            .into_iter()
            .map(|id| Replica::restore(config(id), durable(id), Time(0)).unwrap())
            .collect();
        Net {
            replicas,
            now: Time(0),
            cut: Vec::new(),
        }
    }

    fn at(&mut self, id: NodeId) -> &mut R {
        &mut self.replicas[(id.0 - 1) as usize]
    }

    fn check(&self, m: &Envelope<u32>) {
        let c = self.replicas[0].config();
        match &m.message {
            Message::Accept { values, .. } => {
                assert!(values.len() as u64 <= c.window_slots_max, "{m}")
            }
            Message::Learn { values, .. } => {
                assert!(values.len() as u64 <= c.catchup_slots_max, "{m}")
            }
            _ => {}
        }
        for r in &self.replicas {
            let st = r.status();
            assert!(st.last.0 <= st.commit.0 + r.config().slots_ahead_max());
        }
    }

    /// Runs `rounds` rounds of 10 ms: tick, ready, deliver.
    fn run(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.now = self.now.plus_ms(10);
            let mut mail = Vec::new();
            for r in &mut self.replicas {
                r.tick(self.now);
                mail.extend(drain(r));
            }
            for m in mail {
                self.check(&m);
                if self.cut.contains(&m.from) || self.cut.contains(&m.to) {
                    continue;
                }
                let now = self.now;
                self.at(m.to).step(m.from, m.message, now);
            }
        }
    }

    fn leader(&self) -> Option<NodeId> {
        self.replicas
            .iter()
            .find(|r| r.status().role == RoleKind::Leader)
            .map(|r| r.status().id)
    }
}

fn small_windows(id: NodeId) -> Config {
    let mut c = Config::majority(id, &ids(3));
    c.window_slots_max = 4;
    c.catchup_slots_max = 2;
    c.batch_commands_max = 1;
    c.rng_seed = 3;
    c
}

#[test]
fn a_far_behind_follower_catches_up_in_bounded_pieces() {
    let mut net = Net::new(small_windows, |_| Durable::empty());
    net.at(NodeId(1)).campaign_now();
    net.run(10);
    assert_eq!(net.leader(), Some(NodeId(1)));
    net.cut = vec![NodeId(3)];
    for x in 0..200 {
        net.at(NodeId(1)).propose(x).unwrap();
        net.run(1);
    }
    net.run(20);
    let commit = net.at(NodeId(1)).status().commit;
    assert!(commit.0 > 200, "{commit}");
    assert_eq!(net.at(NodeId(3)).status().commit, Slot(1));
    // The leader goes on proposing while n3 catches up.
    net.cut.clear();
    for x in 200..220 {
        net.at(NodeId(1)).propose(x).unwrap();
        net.run(1);
    }
    net.run(600);
    let commit = net.at(NodeId(1)).status().commit;
    assert!(commit.0 > 220, "{commit}");
    for r in &net.replicas {
        assert_eq!(r.status().commit, commit, "{}", r.status());
        assert_eq!(r.refused().malformed, 0);
    }
    // The follower dropped the accepts far past its commit point.
    assert!(net.at(NodeId(3)).refused().slots_ahead > 0);
}

#[test]
fn a_takeover_of_many_open_slots_goes_out_one_window_at_a_time() {
    // n1 accepted 15 slots in ballot 1.1 that nobody else has, and restarts
    // (15 is more than the window and within the bound on stored slots).
    let durable = |id: NodeId| {
        let mut d = Durable::empty();
        if id == NodeId(1) {
            d.promised = b(1, 1);
            d.records = (1..=15)
                .map(|s| SlotRecord {
                    slot: Slot(s),
                    ballot: b(1, 1),
                    value: cmd(s as u32),
                    chosen: false,
                })
                .collect();
        }
        d
    };
    // No leases, so the restarted n1 may campaign at once.
    let config = |id| Config {
        lease_duration_ms: 0,
        ..small_windows(id)
    };
    let mut net = Net::new(config, durable);
    net.at(NodeId(1)).campaign_now();
    net.run(100);
    assert_eq!(net.leader(), Some(NodeId(1)));
    for r in &net.replicas {
        assert_eq!(r.status().commit, Slot(15), "{}", r.status());
        for s in 1..=15 {
            assert_eq!(r.log().get(Slot(s)).unwrap().value, cmd(s as u32));
        }
    }
}
