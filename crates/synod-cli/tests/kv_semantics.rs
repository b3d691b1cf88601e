//! etcd's KV API as the `etcd-client` crate sees it, against three `synod
//! server` processes. Each expectation is what etcd documents (the v3 API
//! reference, api.proto's comments, and etcd's own behaviour where the
//! documentation is silent, noted as such).

mod common;

use common::{bounded, connect, Cluster};
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, Error, GetOptions, KeyValue, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse,
};
use std::time::Duration;

fn key_values(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key_str().expect("utf-8").to_string(),
                kv.value_str().expect("utf-8").to_string(),
            )
        })
        .collect()
}

fn keys(kvs: &[KeyValue]) -> Vec<&str> {
    kvs.iter().map(|kv| kv.key_str().expect("utf-8")).collect()
}

/// The gRPC code and message of a failed request.
fn grpc(e: Error) -> (tonic::Code, String) {
    match e {
        Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("expected a gRPC status, got {other}"),
    }
}

async fn put(c: &mut Client, k: &str, v: &str) -> i64 {
    let r = c.put(k, v, None).await.expect("put");
    r.header().expect("header").revision()
}

async fn get(c: &mut Client, k: &str, options: Option<GetOptions>) -> etcd_client::GetResponse {
    c.get(k, options).await.expect("get")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_client_kv_semantics() {
    let mut cluster = Cluster::start(3);
    let leader = bounded("ready", Duration::from_secs(20), cluster.wait_ready()).await;
    let follower = if leader == 1 { 2 } else { 1 };
    // Writes through a follower (forwarded), reads through the leader and
    // through a client that balances over every node.
    let mut c = cluster.client(follower).await;
    let mut lead = cluster.client(leader).await;
    let mut any = connect(&cluster.endpoints()).await;
    bounded("kv semantics", Duration::from_secs(40), async {
        // --- Put, prev_kv. A new store is at revision 1; each put adds one.
        let r = c
            .put("a", "1", Some(PutOptions::new().with_prev_key()))
            .await
            .expect("put");
        assert!(r.prev_key().is_none(), "no previous value for a new key");
        let rev_a1 = r.header().expect("header").revision();
        assert_eq!(rev_a1, 2, "first write of a new cluster is revision 2");
        let r = c
            .put("a", "2", Some(PutOptions::new().with_prev_key()))
            .await
            .expect("put");
        let prev = r.prev_key().expect("prev_kv");
        assert_eq!((prev.value_str().unwrap(), prev.version()), ("1", 1));
        assert_eq!(
            (prev.create_revision(), prev.mod_revision()),
            (rev_a1, rev_a1)
        );
        let rev_a2 = r.header().expect("header").revision();
        assert_eq!(rev_a2, rev_a1 + 1);
        // Without prev_kv nothing comes back.
        let r = c.put("b", "x", None).await.expect("put");
        assert!(r.prev_key().is_none());
        let rev_b = r.header().unwrap().revision();
        let rev_c = put(&mut c, "c", "z").await;
        let rev_d = put(&mut c, "d", "y").await;
        let rev_other = put(&mut c, "other", "o").await;
        assert_eq!(
            [rev_b, rev_c, rev_d, rev_other],
            [rev_a2 + 1, rev_a2 + 2, rev_a2 + 3, rev_a2 + 4]
        );
        // etcd refuses an empty key and ignore_value on a missing key.
        let e = c.put("", "v", None).await.unwrap_err();
        assert_eq!(
            grpc(e),
            (
                tonic::Code::InvalidArgument,
                "etcdserver: key is not provided".into()
            )
        );
        let e = c
            .put("missing", "", Some(PutOptions::new().with_ignore_value()))
            .await
            .unwrap_err();
        assert_eq!(
            grpc(e),
            (
                tonic::Code::InvalidArgument,
                "etcdserver: key not found".into()
            )
        );

        // --- Get: a key's metadata (create/mod revision, version).
        let r = get(&mut lead, "a", None).await;
        let kv = &r.kvs()[0];
        assert_eq!((kv.value_str().unwrap(), kv.version()), ("2", 2));
        assert_eq!((kv.create_revision(), kv.mod_revision()), (rev_a1, rev_a2));
        assert_eq!(r.count(), 1);
        assert!(!r.more());
        assert_eq!(
            r.header().unwrap().revision(),
            rev_other,
            "header: current revision"
        );
        // A missing key: no kvs, count 0.
        let r = get(&mut any, "nope", None).await;
        assert!(r.kvs().is_empty());
        assert_eq!(r.count(), 0);

        // --- Prefix and range: [key, range_end), sorted by key.
        let r = get(&mut any, "", Some(GetOptions::new().with_all_keys())).await;
        assert_eq!(keys(r.kvs()), ["a", "b", "c", "d", "other"]);
        let r = get(&mut any, "b", Some(GetOptions::new().with_range("d"))).await;
        assert_eq!(keys(r.kvs()), ["b", "c"], "range_end is exclusive");
        let r = get(&mut any, "c", Some(GetOptions::new().with_from_key())).await;
        assert_eq!(keys(r.kvs()), ["c", "d", "other"]);
        let r = get(&mut any, "o", Some(GetOptions::new().with_prefix())).await;
        assert_eq!(key_values(r.kvs()), [("other".into(), "o".into())]);

        // --- Limit: `count` is every key in the range, `more` says that
        // some were left out.
        let r = get(
            &mut any,
            "",
            Some(GetOptions::new().with_all_keys().with_limit(2)),
        )
        .await;
        assert_eq!(keys(r.kvs()), ["a", "b"]);
        assert_eq!(r.count(), 5);
        assert!(r.more());
        let r = get(
            &mut any,
            "",
            Some(GetOptions::new().with_all_keys().with_limit(5)),
        )
        .await;
        assert!(!r.more(), "limit equal to the count leaves nothing out");

        // --- Sort: by value descending, by create revision ascending, by
        // key descending, then limited after sorting.
        let prefix = GetOptions::new().with_range("e"); // a..d
        let r = get(
            &mut any,
            "a",
            Some(
                prefix
                    .clone()
                    .with_sort(SortTarget::Value, SortOrder::Descend),
            ),
        )
        .await;
        assert_eq!(keys(r.kvs()), ["c", "d", "b", "a"], "values z > y > x > 2");
        let r = get(
            &mut any,
            "a",
            Some(
                prefix
                    .clone()
                    .with_sort(SortTarget::Key, SortOrder::Descend),
            ),
        )
        .await;
        assert_eq!(keys(r.kvs()), ["d", "c", "b", "a"]);
        let r = get(
            &mut any,
            "a",
            Some(
                prefix
                    .clone()
                    .with_sort(SortTarget::Mod, SortOrder::Descend)
                    .with_limit(2),
            ),
        )
        .await;
        assert_eq!(keys(r.kvs()), ["d", "c"], "sorted, then limited");
        assert_eq!((r.count(), r.more()), (4, true));
        let r = get(
            &mut any,
            "a",
            Some(
                prefix
                    .clone()
                    .with_sort(SortTarget::Version, SortOrder::Descend),
            ),
        )
        .await;
        assert_eq!(keys(r.kvs())[0], "a", "a is the only key at version 2");

        // --- keys_only: keys and metadata, no values. count_only: only the
        // count.
        let r = get(&mut any, "a", Some(prefix.clone().with_keys_only())).await;
        assert_eq!(keys(r.kvs()), ["a", "b", "c", "d"]);
        assert!(r.kvs().iter().all(|kv| kv.value().is_empty()));
        assert_eq!(r.kvs()[0].mod_revision(), rev_a2);
        let r = get(&mut any, "a", Some(prefix.clone().with_count_only())).await;
        assert!(r.kvs().is_empty());
        assert_eq!(r.count(), 4);

        // --- min/max mod revision filters.
        let r = get(
            &mut any,
            "",
            Some(
                GetOptions::new()
                    .with_all_keys()
                    .with_min_mod_revision(rev_c),
            ),
        )
        .await;
        assert_eq!(keys(r.kvs()), ["c", "d", "other"]);
        let r = get(
            &mut any,
            "",
            Some(
                GetOptions::new()
                    .with_all_keys()
                    .with_max_create_revision(rev_b),
            ),
        )
        .await;
        assert_eq!(keys(r.kvs()), ["a", "b"]);

        // --- Reads at a past revision see the store as it was; the header
        // still carries the current revision.
        let r = get(&mut any, "a", Some(GetOptions::new().with_revision(rev_a1))).await;
        assert_eq!(key_values(r.kvs()), [("a".into(), "1".into())]);
        assert_eq!(r.header().unwrap().revision(), rev_other);
        let r = get(
            &mut any,
            "",
            Some(GetOptions::new().with_all_keys().with_revision(rev_b)),
        )
        .await;
        assert_eq!(keys(r.kvs()), ["a", "b"]);
        let e = any
            .get("a", Some(GetOptions::new().with_revision(rev_other + 100)))
            .await
            .unwrap_err();
        assert_eq!(
            grpc(e),
            (
                tonic::Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision".into()
            )
        );
        // Serializable reads are served by the node itself.
        let r = get(&mut c, "a", Some(GetOptions::new().with_serializable())).await;
        assert_eq!(r.kvs()[0].value_str().unwrap(), "2");

        // --- Delete with prev_kv: the deleted pairs come back; deleting a
        // missing key deletes nothing and does not add a revision.
        let r = c
            .delete(
                "c",
                Some(DeleteOptions::new().with_range("e").with_prev_key()),
            )
            .await
            .expect("delete");
        assert_eq!(r.deleted(), 2);
        assert_eq!(
            key_values(r.prev_kvs()),
            [("c".into(), "z".into()), ("d".into(), "y".into())]
        );
        let rev_del = r.header().unwrap().revision();
        assert_eq!(
            rev_del,
            rev_other + 1,
            "one delete of two keys, one revision"
        );
        let r = c.delete("c", None).await.expect("delete");
        assert_eq!(r.deleted(), 0);
        assert_eq!(
            r.header().unwrap().revision(),
            rev_del,
            "nothing deleted, no revision"
        );
        // A deleted key that is put again starts over: version 1, new
        // create revision.
        let rev_c2 = put(&mut c, "c", "again").await;
        let kv = get(&mut lead, "c", None).await.kvs()[0].clone();
        assert_eq!((kv.version(), kv.create_revision()), (1, rev_c2));

        // --- Txn: compares on value, version, create and mod revision.
        let r = c
            .txn(
                Txn::new()
                    .when([
                        Compare::value("a", CompareOp::Equal, "2"),
                        Compare::version("a", CompareOp::Equal, 2),
                        Compare::create_revision("a", CompareOp::Equal, rev_a1),
                        Compare::mod_revision("a", CompareOp::Less, rev_a2 + 1),
                        Compare::version("missing", CompareOp::Equal, 0),
                    ])
                    .and_then([
                        TxnOp::put("a", "3", Some(PutOptions::new().with_prev_key())),
                        TxnOp::put("t", "new", None),
                        // A read in a txn sees the txn's earlier writes.
                        TxnOp::get("a", None),
                    ])
                    .or_else([TxnOp::put("failed", "1", None)]),
            )
            .await
            .expect("txn");
        assert!(r.succeeded());
        let rev_txn = r.header().unwrap().revision();
        assert_eq!(rev_txn, rev_c2 + 1, "one txn, one revision");
        let ops = r.op_responses();
        assert_eq!(ops.len(), 3);
        match &ops[0] {
            TxnOpResponse::Put(p) => {
                assert_eq!(p.prev_key().map(|kv| kv.value_str().unwrap()), Some("2"))
            }
            other => panic!("expected a put response, got {other:?}"),
        }
        match &ops[2] {
            TxnOpResponse::Get(g) => {
                let kv = &g.kvs()[0];
                assert_eq!((kv.value_str().unwrap(), kv.mod_revision()), ("3", rev_txn));
            }
            other => panic!("expected a get response, got {other:?}"),
        }
        let r = get(&mut any, "t", None).await;
        assert_eq!(
            r.kvs()[0].mod_revision(),
            rev_txn,
            "every write of a txn shares its revision"
        );

        // A compare that fails runs the failure branch only.
        let r = c
            .txn(
                Txn::new()
                    .when([Compare::value("a", CompareOp::Equal, "2")])
                    .and_then([TxnOp::put("a", "wrong", None)])
                    .or_else([TxnOp::get("a", None)]),
            )
            .await
            .expect("txn");
        assert!(!r.succeeded());
        assert_eq!(
            r.header().unwrap().revision(),
            rev_txn,
            "a read-only branch adds no revision"
        );
        match &r.op_responses()[0] {
            TxnOpResponse::Get(g) => assert_eq!(g.kvs()[0].value_str().unwrap(), "3"),
            other => panic!("expected a get response, got {other:?}"),
        }
        // Compares on a range: every key in it must match.
        let r = c
            .txn(
                Txn::new()
                    .when([Compare::version("a", CompareOp::Greater, 0).with_range("c")])
                    .and_then([TxnOp::put("range-ok", "1", None)]),
            )
            .await
            .expect("txn");
        assert!(r.succeeded(), "a and b both exist");

        // Nested txn (etcd 3.3+): the inner compare decides the inner branch.
        let r = c
            .txn(
                Txn::new()
                    .when([Compare::value("a", CompareOp::Equal, "3")])
                    .and_then([
                        TxnOp::put("outer", "1", None),
                        TxnOp::txn(
                            Txn::new()
                                .when([Compare::value("b", CompareOp::Equal, "no")])
                                .and_then([TxnOp::put("inner", "then", None)])
                                .or_else([TxnOp::put("inner", "else", None)]),
                        ),
                    ]),
            )
            .await
            .expect("nested txn");
        assert!(r.succeeded());
        match &r.op_responses()[1] {
            TxnOpResponse::Txn(t) => assert!(!t.succeeded()),
            other => panic!("expected a txn response, got {other:?}"),
        }
        let r = get(&mut any, "inner", None).await;
        assert_eq!(r.kvs()[0].value_str().unwrap(), "else");
        // Two puts of one key in a txn are refused, nested ones too.
        let e = c
            .txn(Txn::new().and_then([
                TxnOp::put("dup", "1", None),
                TxnOp::txn(Txn::new().and_then([TxnOp::put("dup", "2", None)])),
            ]))
            .await
            .unwrap_err();
        assert_eq!(
            grpc(e),
            (
                tonic::Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request".into()
            )
        );

        // --- Compaction: reads below the compacted revision fail with
        // ErrCompacted (OutOfRange); at it and above they succeed.
        let before = get(&mut any, "a", None).await.header().unwrap().revision();
        let r = c.compact(rev_txn, None).await.expect("compact");
        assert!(r.header().unwrap().revision() >= before);
        let compacted = (
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted".to_string(),
        );
        for reader in [&mut c, &mut lead, &mut any] {
            let e = reader
                .get("a", Some(GetOptions::new().with_revision(rev_a1)))
                .await
                .unwrap_err();
            assert_eq!(grpc(e), compacted);
        }
        let e = c
            .get(
                "a",
                Some(
                    GetOptions::new()
                        .with_revision(rev_txn - 1)
                        .with_serializable(),
                ),
            )
            .await
            .unwrap_err();
        assert_eq!(grpc(e), compacted, "a serializable read on a follower too");
        let r = get(
            &mut any,
            "a",
            Some(GetOptions::new().with_revision(rev_txn)),
        )
        .await;
        assert_eq!(r.kvs()[0].value_str().unwrap(), "3");
        // Compacting again at or below the compacted revision is refused;
        // beyond the current revision too.
        let e = c.compact(rev_txn, None).await.unwrap_err();
        assert_eq!(grpc(e), compacted);
        let e = c.compact(rev_txn + 1000, None).await.unwrap_err();
        assert_eq!(
            grpc(e),
            (
                tonic::Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision".into()
            )
        );
        // etcd's request limit (--max-request-bytes, 1.5 MiB): refused with
        // etcd's error and nothing written, whether alone or in a Txn; a
        // value just under it is stored.
        let too_large = (
            tonic::Code::InvalidArgument,
            "etcdserver: request is too large".to_string(),
        );
        let big = "x".repeat(1_600_000);
        let e = c.put("big", big.as_str(), None).await.unwrap_err();
        assert_eq!(grpc(e), too_large);
        let txn = Txn::new().and_then([TxnOp::put("big", big.as_str(), None)]);
        let e = c.txn(txn).await.unwrap_err();
        assert_eq!(grpc(e), too_large);
        let e = c.put("big", "x".repeat(3_000_000), None).await.unwrap_err();
        // Past the limit + 512 KiB, gRPC's own limit refuses the message
        // before it is decoded, as in etcd (tonic says OutOfRange where
        // grpc-go says ResourceExhausted).
        assert_eq!(grpc(e).0, tonic::Code::OutOfRange);
        assert_eq!(get(&mut any, "big", None).await.kvs().len(), 0);
        let under = "y".repeat(1_500_000);
        c.put("under", under.as_str(), None)
            .await
            .expect("1.5 MB put");
        let r = get(&mut any, "under", None).await;
        assert_eq!(r.kvs()[0].value().len(), 1_500_000);
        c.delete("under", None).await.unwrap();
        // Maintenance as etcd answers it: a defragment has no header, and
        // MoveLeader sent to a follower is refused as etcd refuses it.
        let d = c.defragment().await.expect("defragment");
        assert!(d.header().is_none(), "{d:?}");
        let e = c.move_leader(leader).await.unwrap_err();
        assert_eq!(
            grpc(e),
            (
                tonic::Code::FailedPrecondition,
                "etcdserver: not leader".to_string()
            )
        );
        // Compaction keeps the latest version of every live key.
        let r = get(&mut any, "", Some(GetOptions::new().with_all_keys())).await;
        assert_eq!(
            keys(r.kvs()),
            ["a", "b", "c", "inner", "other", "outer", "range-ok", "t"]
        );
    })
    .await;
    cluster.assert_alive();
}
