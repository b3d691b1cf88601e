//! Field numbers are the wire: these encodings were worked out by hand from
//! etcd's API reference, so a renumbered field fails here, not in a client.

use bytes::Bytes;
use prost::Message;
use synod_proto::etcdserverpb::compare::{CompareTarget, TargetUnion};
use synod_proto::etcdserverpb::{Compare, PutRequest, StatusResponse, WatchResponse};
use synod_proto::mvccpb::{Event, KeyValue};

#[test]
fn put_request_fields() {
    let put = PutRequest {
        key: Bytes::from_static(b"a"),
        value: Bytes::from_static(b"b"),
        lease: 5,
        prev_kv: true,
        ignore_value: false,
        ignore_lease: true,
    };
    let expected = [0x0a, 1, b'a', 0x12, 1, b'b', 0x18, 5, 0x20, 1, 0x30, 1];
    assert_eq!(put.encode_to_vec(), expected);
    assert_eq!(PutRequest::decode(&expected[..]).unwrap(), put);
}

#[test]
fn compare_oneof_and_range_end_64() {
    let c = Compare {
        result: 0,
        target: CompareTarget::Mod as i32,
        key: Bytes::from_static(b"k"),
        target_union: Some(TargetUnion::ModRevision(7)),
        range_end: Bytes::from_static(b"z"),
    };
    // target=2 (field 2), key (field 3), mod_revision (field 6), range_end (field 64: tag 514).
    let expected = [0x10, 2, 0x1a, 1, b'k', 0x30, 7, 0x82, 0x04, 1, b'z'];
    assert_eq!(c.encode_to_vec(), expected);
}

#[test]
fn watch_events_are_field_11_and_key_value_fields() {
    let w = WatchResponse {
        events: vec![Event {
            r#type: 1,
            kv: Some(KeyValue {
                key: Bytes::from_static(b"k"),
                create_revision: 2,
                mod_revision: 3,
                version: 4,
                value: Bytes::new(),
                lease: 6,
            }),
            prev_kv: None,
        }],
        ..Default::default()
    };
    let kv = [0x0a, 1, b'k', 0x10, 2, 0x18, 3, 0x20, 4, 0x30, 6];
    let mut event = vec![0x08, 1, 0x12, kv.len() as u8];
    event.extend_from_slice(&kv);
    let mut expected = vec![0x5a, event.len() as u8];
    expected.extend_from_slice(&event);
    assert_eq!(w.encode_to_vec(), expected);
}

#[test]
fn status_response_numbers() {
    let s = StatusResponse {
        leader: 1,
        raft_index: 2,
        raft_term: 3,
        raft_applied_index: 4,
        is_learner: true,
        ..Default::default()
    };
    assert_eq!(
        s.encode_to_vec(),
        [0x20, 1, 0x28, 2, 0x30, 3, 0x38, 4, 0x50, 1]
    );
}
