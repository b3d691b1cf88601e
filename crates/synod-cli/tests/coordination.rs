//! What applications build on etcd — watches, leases, locks, elections —
//! through the `etcd-client` crate against three `synod server` processes,
//! including the faults they must survive: a watcher across a leader kill
//! and across the restart of the node it is connected to, a lease kept
//! alive through a leader change, a lock holder whose session dies.

mod common;

use common::{bounded, connect, Cluster};
use etcd_client::{
    Client, EventType, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, LockOptions,
    PutOptions, WatchOptions, WatchResponse,
};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A watcher's view: every event as (revision, key, type), in arrival order.
#[derive(Default)]
struct Seen {
    events: Vec<(i64, String, EventType)>,
}

impl Seen {
    fn take(&mut self, r: &WatchResponse) {
        for e in r.events() {
            let kv = e.kv().expect("event kv");
            self.events.push((
                kv.mod_revision(),
                kv.key_str().expect("utf-8").to_string(),
                e.event_type(),
            ));
        }
    }

    fn last_revision(&self) -> i64 {
        self.events.last().map_or(0, |e| e.0)
    }

    /// Each (revision, key) once, revisions never going back.
    fn assert_ordered_once(&self, who: &str) {
        let mut seen = BTreeSet::new();
        let mut last = 0;
        for (rev, key, _) in &self.events {
            assert!(*rev >= last, "{who}: revision {rev} after {last}");
            assert!(seen.insert((*rev, key.clone())), "{who}: {key}@{rev} twice");
            last = *rev;
        }
    }

    fn revisions(&self) -> BTreeSet<i64> {
        self.events.iter().map(|e| e.0).collect()
    }
}

/// Reads a watch stream until `done` says enough or `limit` passes.
async fn collect(
    stream: &mut etcd_client::WatchStream,
    seen: &mut Seen,
    limit: Duration,
    done: impl Fn(&Seen) -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.message()).await {
            Err(_) => return Err("timed out".into()),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(None)) => return Err("stream ended".into()),
            Ok(Ok(Some(r))) => {
                if r.canceled() {
                    return Err(format!("canceled: {}", r.cancel_reason()));
                }
                seen.take(&r);
            }
        }
    }
    Ok(())
}

async fn watch_from(client: &mut Client, prefix: &str, start: i64) -> etcd_client::WatchStream {
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(start)
        .with_prev_key();
    let mut w = client.watch(prefix, Some(options)).await.expect("watch");
    let created = w.message().await.expect("created").expect("created");
    assert!(created.created(), "first response announces the watcher");
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_every_write_once_across_leader_kill_and_node_restart() {
    let mut cluster = Cluster::start(3);
    let leader = bounded("ready", Duration::from_secs(20), cluster.wait_ready()).await;
    let follower = cluster.ids().into_iter().find(|i| *i != leader).unwrap();
    let mut any = connect(&cluster.endpoints()).await;
    for i in 0..5 {
        any.put(format!("w/{i}"), "before", None)
            .await
            .expect("put");
    }
    // Watcher A on a follower that survives; B on the leader, to be killed.
    let mut a = watch_from(&mut cluster.client(follower).await, "w/", 1).await;
    let mut b = watch_from(&mut cluster.client(leader).await, "w/", 1).await;
    let (mut seen_a, mut seen_b) = (Seen::default(), Seen::default());
    for (w, seen) in [(&mut a, &mut seen_a), (&mut b, &mut seen_b)] {
        collect(w, seen, Duration::from_secs(5), |s| s.events.len() >= 5)
            .await
            .expect("history from revision 1");
        assert_eq!(
            seen.revisions(),
            (2..=6).collect(),
            "history is the five puts"
        );
    }
    // Writes keep coming through the other nodes while the leader dies.
    let writer_endpoints: Vec<String> = cluster
        .ids()
        .into_iter()
        .filter(|i| *i != leader)
        .map(|i| cluster.endpoint(i))
        .collect();
    let acked = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut c = connect(&writer_endpoints).await;
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                if let Ok(r) = c.put(format!("w/live{i}"), "v", None).await {
                    acked.lock().unwrap().insert(r.header().unwrap().revision());
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.kill(leader);
    bounded("new leader", Duration::from_secs(20), cluster.wait_ready()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "writes acknowledged: {}", acked.len());
    let last = *acked.iter().last().unwrap();
    // A, on a live node, sees everything.
    collect(&mut a, &mut seen_a, Duration::from_secs(10), |s| {
        s.last_revision() >= last
    })
    .await
    .expect("watcher A follows the new leader");
    // B's node died: its stream broke. The client resumes elsewhere from
    // the revision after the last one it saw, as etcd clients do.
    let broken = collect(&mut b, &mut seen_b, Duration::from_secs(10), |_| false).await;
    assert!(broken.is_err(), "B's stream must end when its node dies");
    let resume = seen_b.last_revision() + 1;
    let mut b2 = watch_from(&mut cluster.client(follower).await, "w/", resume).await;
    collect(&mut b2, &mut seen_b, Duration::from_secs(10), |s| {
        s.last_revision() >= last
    })
    .await
    .expect("watcher B resumes");
    // The killed node comes back and serves a watcher from the past too.
    cluster.spawn(leader);
    cluster
        .wait_caught_up(leader, Duration::from_secs(20))
        .await;
    let mut c = watch_from(&mut cluster.client(leader).await, "w/", 1).await;
    let mut seen_c = Seen::default();
    collect(&mut c, &mut seen_c, Duration::from_secs(10), |s| {
        s.last_revision() >= last
    })
    .await
    .expect("restarted node serves history");
    for (who, seen) in [("A", &seen_a), ("B", &seen_b), ("C", &seen_c)] {
        seen.assert_ordered_once(who);
        let revisions = seen.revisions();
        let missing: Vec<&i64> = acked.difference(&revisions).collect();
        assert!(
            missing.is_empty(),
            "{who} missed acknowledged writes {missing:?}"
        );
    }
    assert_eq!(
        seen_a.events, seen_c.events,
        "every watcher saw one history"
    );
    assert_eq!(seen_a.events, seen_b.events, "the resumed watcher too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_keys_unless_kept_alive_even_across_a_leader_change() {
    let mut cluster = Cluster::start(3);
    let leader = bounded("ready", Duration::from_secs(20), cluster.wait_ready()).await;
    let follower = cluster.ids().into_iter().find(|i| *i != leader).unwrap();
    let mut c = cluster.client(follower).await;
    bounded("leases", Duration::from_secs(60), async {
        // Grant, attach, time-to-live with keys, list.
        let g = c.lease_grant(2, None).await.expect("grant");
        let id = g.id();
        assert_eq!(g.ttl(), 2);
        let opts = Some(PutOptions::new().with_lease(id));
        c.put("l/a", "1", opts.clone()).await.unwrap();
        c.put("l/b", "2", opts).await.unwrap();
        let t = c
            .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .unwrap();
        assert_eq!(t.granted_ttl(), 2);
        assert!(t.ttl() > 0 && t.ttl() <= 2, "ttl {}", t.ttl());
        assert_eq!(t.keys(), [b"l/a".to_vec(), b"l/b".to_vec()]);
        let listed: Vec<i64> = c
            .leases()
            .await
            .unwrap()
            .leases()
            .iter()
            .map(|l| l.id())
            .collect();
        assert!(listed.contains(&id));
        // Granting an id that exists fails as in etcd.
        let dup = c
            .lease_grant(5, Some(LeaseGrantOptions::new().with_id(id)))
            .await
            .unwrap_err();
        assert!(dup.to_string().contains("lease already exists"), "{dup}");
        let missing = c
            .put("l/x", "1", Some(PutOptions::new().with_lease(12345)))
            .await
            .unwrap_err();
        assert!(
            missing.to_string().contains("requested lease not found"),
            "{missing}"
        );

        // Kept alive for twice its TTL: the keys stay.
        let (mut keeper, mut responses) = c.lease_keep_alive(id).await.unwrap();
        for _ in 0..8 {
            keeper.keep_alive().await.unwrap();
            let r = responses
                .message()
                .await
                .unwrap()
                .expect("keep-alive answer");
            assert_eq!((r.id(), r.ttl()), (id, 2));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let r = c
            .get("l/", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(r.kvs().len(), 2, "kept-alive lease keeps its keys");

        // Left alone, it expires: both keys go at one revision.
        let rev = r.header().unwrap().revision();
        let mut w = watch_from(&mut c, "l/", rev + 1).await;
        let mut seen = Seen::default();
        collect(&mut w, &mut seen, Duration::from_secs(8), |s| {
            s.events.len() >= 2
        })
        .await
        .expect("expiry deletes the keys");
        assert!(seen.events.iter().all(|e| e.2 == EventType::Delete));
        assert_eq!(seen.events[0].0, seen.events[1].0, "one revision for both");
        let t = c.lease_time_to_live(id, None).await.unwrap();
        assert_eq!(t.ttl(), -1, "expired lease is gone");
        let k = keeper.keep_alive().await;
        if k.is_ok() {
            let r = responses.message().await.unwrap().expect("answer");
            assert_eq!(r.ttl(), 0, "keep-alive of an expired lease answers TTL 0");
        }

        // Revoke deletes at once.
        let id2 = c.lease_grant(60, None).await.unwrap().id();
        c.put("l/r", "1", Some(PutOptions::new().with_lease(id2)))
            .await
            .unwrap();
        c.lease_revoke(id2).await.unwrap();
        assert!(c.get("l/r", None).await.unwrap().kvs().is_empty());
        let again = c.lease_revoke(id2).await.unwrap_err();
        assert!(
            again.to_string().contains("requested lease not found"),
            "{again}"
        );
    })
    .await;

    // A lease kept alive through a follower survives the leader's death:
    // the new leader restarts every lease's TTL.
    let g = c.lease_grant(3, None).await.expect("grant");
    let id = g.id();
    c.put("k/alive", "1", Some(PutOptions::new().with_lease(id)))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let renewals = Arc::new(AtomicI64::new(0));
    let keeper = {
        let (stop, renewals) = (stop.clone(), renewals.clone());
        let mut c = cluster.client(follower).await;
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok((mut k, mut s)) = c.lease_keep_alive(id).await {
                    while !stop.load(Ordering::Relaxed) {
                        if k.keep_alive().await.is_err() {
                            break;
                        }
                        match tokio::time::timeout(Duration::from_secs(2), s.message()).await {
                            Ok(Ok(Some(r))) if r.ttl() > 0 => {
                                renewals.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(Ok(Some(_))) => panic!("lease {id:x} reported expired"),
                            _ => break,
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.kill(leader);
    bounded("new leader", Duration::from_secs(20), cluster.wait_ready()).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = renewals.load(Ordering::Relaxed);
    let r = c.get("k/alive", None).await.unwrap();
    assert_eq!(
        r.kvs().len(),
        1,
        "kept-alive lease survived the leader change"
    );
    stop.store(true, Ordering::Relaxed);
    keeper.await.unwrap();
    assert!(before >= 6, "renewals kept flowing: {before}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_exclude_and_elections_fail_over() {
    let mut cluster = Cluster::start(3);
    bounded("ready", Duration::from_secs(20), cluster.wait_ready()).await;
    let endpoints = cluster.endpoints();
    // Four contenders, each on its own node-balanced client and lease,
    // increment a counter inside the lock with a read then a write.
    let inside = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..4 {
        let (inside, endpoints) = (inside.clone(), endpoints.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = connect(&endpoints[t % endpoints.len()..t % endpoints.len() + 1]).await;
            let lease = c.lease_grant(30, None).await.unwrap().id();
            for _ in 0..5 {
                let l = c
                    .lock("mx", Some(LockOptions::new().with_lease(lease)))
                    .await
                    .expect("lock");
                assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                let n: i64 = match c.get("counter", None).await.unwrap().kvs().first() {
                    Some(kv) => kv.value_str().unwrap().parse().unwrap(),
                    None => 0,
                };
                tokio::time::sleep(Duration::from_millis(10)).await;
                c.put("counter", (n + 1).to_string(), None).await.unwrap();
                inside.store(false, Ordering::SeqCst);
                c.unlock(l.key()).await.expect("unlock");
            }
        }));
    }
    bounded("lock contention", Duration::from_secs(60), async {
        for t in tasks {
            t.await.expect("contender");
        }
    })
    .await;
    let mut c = connect(&endpoints).await;
    let n = c.get("counter", None).await.unwrap();
    assert_eq!(n.kvs()[0].value_str().unwrap(), "20", "no lost increment");

    // A holder whose lease dies releases the lock to the next waiter.
    let dead = c.lease_grant(60, None).await.unwrap().id();
    c.lock("crash", Some(LockOptions::new().with_lease(dead)))
        .await
        .unwrap();
    let live = c.lease_grant(60, None).await.unwrap().id();
    let mut waiter_client = connect(&endpoints).await;
    let waiter = tokio::spawn(async move {
        waiter_client
            .lock("crash", Some(LockOptions::new().with_lease(live)))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the lock is held");
    c.lease_revoke(dead).await.unwrap();
    let got = bounded("waiter gets the lock", Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .expect("lock after the holder's session died");
    assert!(got.key().starts_with(b"crash/"));

    // Election: A leads, B waits; A's session dies; B leads; an observer
    // sees A's values then B's.
    let la = c.lease_grant(60, None).await.unwrap().id();
    let lb = c.lease_grant(60, None).await.unwrap().id();
    let a = c.campaign("el", "A", la).await.expect("A campaigns");
    let a_key = a.leader().unwrap().clone();
    let mut observer = connect(&endpoints).await.observe("el").await.unwrap();
    let first = observer.message().await.unwrap().unwrap();
    assert_eq!(first.kv().unwrap().value(), b"A");
    let mut bc = connect(&endpoints).await;
    let b = tokio::spawn(async move { bc.campaign("el", "B", lb).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!b.is_finished(), "B waits while A leads");
    c.proclaim(
        "A2",
        Some(etcd_client::ProclaimOptions::new().with_leader(a_key.clone())),
    )
    .await
    .expect("A proclaims");
    let next = observer.message().await.unwrap().unwrap();
    assert_eq!(next.kv().unwrap().value(), b"A2");
    assert_eq!(c.leader("el").await.unwrap().kv().unwrap().value(), b"A2");
    c.lease_revoke(la).await.unwrap();
    let b = bounded("B takes over", Duration::from_secs(10), b)
        .await
        .unwrap()
        .expect("B campaign");
    assert_eq!(b.leader().unwrap().lease(), lb);
    let next = bounded(
        "observer sees B",
        Duration::from_secs(10),
        observer.message(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(next.kv().unwrap().value(), b"B");
    // The old leader can no longer proclaim.
    let stale = c
        .proclaim(
            "A3",
            Some(etcd_client::ProclaimOptions::new().with_leader(a_key)),
        )
        .await
        .unwrap_err();
    assert!(stale.to_string().contains("not leader"), "{stale}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_stream_controls_behave_as_etcd() {
    let mut cluster = Cluster::start(1);
    bounded("ready", Duration::from_secs(20), cluster.wait_ready()).await;
    let mut c = cluster.client(1).await;
    bounded("watch controls", Duration::from_secs(30), async {
        for i in 0..4 {
            c.put(format!("f/{i}"), "v", None).await.unwrap();
        }
        c.delete("f/0", None).await.unwrap();
        // Filters: deletes only.
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(1)
            .with_filters([etcd_client::WatchFilterType::NoPut]);
        let mut w = c.watch("f/", Some(opts)).await.unwrap();
        assert!(w.message().await.unwrap().unwrap().created());
        let r = w.message().await.unwrap().unwrap();
        assert_eq!(r.events().len(), 1);
        assert_eq!(r.events()[0].event_type(), EventType::Delete);
        // A second watcher on the same stream with a chosen id, then the
        // same id again: refused as etcd does.
        w.watch("g", Some(WatchOptions::new().with_watch_id(7)))
            .await
            .unwrap();
        let r = w.message().await.unwrap().unwrap();
        assert!(r.created() && r.watch_id() == 7);
        w.watch("g", Some(WatchOptions::new().with_watch_id(7)))
            .await
            .unwrap();
        let r = w.message().await.unwrap().unwrap();
        assert!(r.canceled() && r.watch_id() == 7, "duplicate id refused");
        // Progress: the current revision, watch id -1.
        w.request_progress().await.unwrap();
        let r = w.message().await.unwrap().unwrap();
        assert_eq!(r.watch_id(), -1);
        let rev = c
            .get("f/1", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        assert_eq!(r.header().unwrap().revision(), rev);
        // Cancel: acknowledged, and no more events for that id.
        w.cancel(7).await.unwrap();
        let r = w.message().await.unwrap().unwrap();
        assert!(r.canceled() && r.watch_id() == 7);
        c.put("g", "x", None).await.unwrap();
        c.put("f/9", "x", None).await.unwrap();
        c.delete("f/1", None).await.unwrap();
        let r = w.message().await.unwrap().unwrap();
        assert_eq!(r.watch_id(), 0, "the cancelled watcher got nothing");
        assert_eq!(r.events().len(), 1, "puts are filtered out: {r:?}");
        assert_eq!(r.events()[0].kv().unwrap().key(), b"f/1");
        let rev = r.header().unwrap().revision();
        // Compaction: a watcher from before the compaction point is
        // created, then cancelled with the compaction revision.
        c.compact(rev, None).await.unwrap();
        let opts = WatchOptions::new().with_start_revision(rev - 2);
        let mut old = c.watch("f/1", Some(opts)).await.unwrap();
        assert!(old.message().await.unwrap().unwrap().created());
        let r = old.message().await.unwrap().unwrap();
        assert!(r.canceled(), "compacted history cancels the watcher");
        assert_eq!(r.compact_revision(), rev);
    })
    .await;
}
