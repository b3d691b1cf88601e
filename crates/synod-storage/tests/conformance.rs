//! The disk conformance suite, run against the reference model (so the suite
//! itself is known to describe a consistent disk) and against redb storage.

mod common;

use common::StorageDisk;
use synod_storage::conformance::{self, MemDisk};

#[test]
fn reference_model_passes_the_suite() {
    conformance::run_all(MemDisk::default);
}

#[test]
fn redb_storage_passes_the_suite() {
    conformance::run_all(StorageDisk::new);
}

#[test]
fn redb_storage_matches_the_model_on_more_seeds() {
    for seed in 1..=4u64 {
        conformance::random_batches_match_the_model(&mut StorageDisk::new(), seed);
    }
}
