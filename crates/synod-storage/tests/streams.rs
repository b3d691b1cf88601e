//! Snapshot streams: a group's rows read in chunks from one node's storage
//! and received into another's stage come back as the same store; a
//! broken stream is refused; nothing is live before the install, and the
//! install is one switch; replaced rows are collected as garbage; a
//! stage does not survive a restart (T1–T3 in `synod_storage::stream`).

use bytes::Bytes;
use synod_kv::{KvStore, StateSource};
use synod_paxos::Slot;
use synod_proto::etcdserverpb::PutRequest;
use synod_proto::synodpb::{command::Op, Command};
use synod_storage::{GroupId, Identity, Received, Storage, StreamChunk};

const G: GroupId = GroupId(1);

fn open(dir: &std::path::Path, node: u64) -> Storage {
    Storage::open(
        dir,
        Identity {
            cluster_id: 9,
            node_id: node,
        },
    )
    .unwrap()
}

/// Writes `puts` puts (every other one with a long value) as the node
/// does, and returns a copy of the store in memory.
fn fill(storage: &Storage, puts: u64, salt: u8) -> KvStore {
    let mut kv = KvStore::default();
    kv.attach(storage.state(G).unwrap(), true);
    for seq in 1..=puts {
        let len = if seq % 2 == 0 { 1000 } else { 10 };
        let put = Command {
            client: 1,
            seq,
            op: Some(Op::Put(PutRequest {
                key: Bytes::from(format!("key{}", seq % 37)),
                value: Bytes::from(vec![salt.wrapping_add(seq as u8); len]),
                ..PutRequest::default()
            })),
            ..Command::default()
        };
        kv.apply(&put);
        let mut batch = storage.batch().unwrap();
        batch.write_state(G, &kv.take_changes()).unwrap();
        batch.set_applied(G, Slot(seq)).unwrap();
        batch.commit().unwrap();
        kv.changes_written();
    }
    KvStore::restore(kv.snapshot()).unwrap()
}

fn chunks(storage: &Storage, bytes: usize) -> (Slot, Vec<StreamChunk>) {
    let mut reader = storage.snapshot_reader(G).unwrap();
    let mut out = Vec::new();
    while let Some(c) = reader.next_chunk(bytes).unwrap() {
        out.push(c);
    }
    (reader.slot(), out)
}

fn rows(storage: &Storage) -> usize {
    let mut n = 0;
    storage.state(G).unwrap().scan(&[], &mut |_, _| n += 1);
    n
}

#[test]
fn a_streamed_store_installs_whole_and_the_old_rows_are_collected() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (leader, follower) = (open(a.path(), 1), open(b.path(), 2));
    let expected = fill(&leader, 200, 0);
    let stale = fill(&follower, 30, 99);
    let (slot, stream) = chunks(&leader, 700);
    assert_eq!(slot, Slot(200));
    assert!(stream.len() > 10, "{} chunks", stream.len());
    assert!(stream[..stream.len() - 1].iter().all(|c| !c.last));
    assert!(stream.last().unwrap().last);
    // The leader writes on while the stream is read: the reader does not see it.
    let mut stage = None;
    for chunk in &stream {
        // Until installed, the follower's own rows are what it loads.
        assert_eq!(follower.load_store(G).unwrap(), stale);
        match follower.receive_chunk(G, slot, chunk).unwrap() {
            Received::Partial => assert!(!chunk.last),
            Received::Complete { stage: s } => stage = Some(s),
            Received::Refused(why) => panic!("refused: {why}"),
        }
    }
    let stage = stage.expect("the last chunk completes the stage");
    let loaded = follower.load_staged(G, stage).unwrap();
    assert_eq!(loaded, expected);
    // T2: a complete stage is not replaced by a new stream.
    assert!(matches!(
        follower.receive_chunk(G, slot, &stream[0]).unwrap(),
        Received::Refused(_)
    ));
    let old_rows = rows(&follower);
    let mut batch = follower.batch().unwrap();
    batch.install_staged(G, stage).unwrap();
    batch.set_applied(G, slot).unwrap();
    batch.compact_to(G, slot, None).unwrap();
    batch.require_sync();
    batch.commit().unwrap();
    assert_eq!(follower.load_store(G).unwrap(), expected);
    // Long values are read from the live (former stage) rows.
    assert_eq!(loaded.hash_kv(0).unwrap(), expected.hash_kv(0).unwrap());
    let mut collected = 0;
    loop {
        let mut batch = follower.batch().unwrap();
        let n = batch.collect_garbage(7).unwrap();
        batch.commit().unwrap();
        if n == 0 {
            break;
        }
        assert!(n <= 7);
        collected += n;
    }
    assert_eq!(collected, old_rows, "every replaced row is deleted");
    drop((follower, loaded));
    let reopened = open(b.path(), 2);
    assert_eq!(reopened.load_store(G).unwrap(), expected);
    assert_eq!(reopened.load(G).unwrap().applied, slot);
}

#[test]
fn broken_streams_are_refused_and_stages_do_not_outlive_the_process() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (leader, follower) = (open(a.path(), 1), open(b.path(), 2));
    fill(&leader, 60, 0);
    let (slot, stream) = chunks(&leader, 300);
    assert!(stream.len() > 3);
    // A gap, a chunk of another snapshot, a chunk that does not parse.
    assert_eq!(
        follower.receive_chunk(G, slot, &stream[0]).unwrap(),
        Received::Partial
    );
    for (s, chunk) in [(slot, &stream[2]), (Slot(slot.0 + 1), &stream[1])] {
        assert!(matches!(
            follower.receive_chunk(G, s, chunk).unwrap(),
            Received::Refused(_)
        ));
    }
    let junk = StreamChunk {
        index: 1,
        last: false,
        data: Bytes::from_static(&[9, 0, 0, 0, 1]),
    };
    assert!(matches!(
        follower.receive_chunk(G, slot, &junk).unwrap(),
        Received::Refused(_)
    ));
    // The stream goes on where it was.
    assert_eq!(
        follower.receive_chunk(G, slot, &stream[1]).unwrap(),
        Received::Partial
    );
    let staged = follower.state_ids(G).unwrap().stage.expect("a stage");
    assert_eq!(
        (staged.slot, staged.next, staged.complete),
        (slot, 2, false)
    );
    // Installing an incomplete stage is refused (T1).
    let mut batch = follower.batch().unwrap();
    assert!(batch.install_staged(G, staged.id).is_err());
    drop(batch);
    // A restart drops the stage; its rows go as garbage.
    follower.discard_stages().unwrap();
    assert_eq!(follower.state_ids(G).unwrap().stage, None);
    let mut batch = follower.batch().unwrap();
    assert!(batch.collect_garbage(1_000_000).unwrap() > 0);
    batch.commit().unwrap();
    assert!(follower.load_store(G).unwrap() == KvStore::default());
}
