//! Acknowledged puts, written down and checked later: `--ack-log` records
//! every put the server acknowledged (key number and the revision in the
//! response header); `--verify-acks` reads such logs back after a crash and
//! restart and checks that every one of those keys still holds that
//! revision or a later one. A write the cluster acknowledged and then lost
//! is reported by key; the run fails.
//!
//! The log is text, one `key_number revision` per line, so a person can read
//! it and a shell script can count it.

use super::Channel;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use synod_proto::etcdserverpb::kv_client::KvClient;
use synod_proto::etcdserverpb::RangeRequest;

/// Keys asked per range request while verifying.
const PAGE_KEYS: i64 = 10_000;
/// Lost keys named in the report; the rest are only counted.
const LOST_SHOWN_MAX: usize = 10;

/// Writes the acknowledged puts of a run, sorted by key then revision.
pub(super) fn write_log(path: &Path, acks: &mut [(u64, i64)]) -> Result<()> {
    acks.sort_unstable();
    let file = std::fs::File::create(path)
        .with_context(|| format!("--ack-log: cannot create {}", path.display()))?;
    let mut out = BufWriter::new(file);
    for (key, revision) in acks.iter() {
        writeln!(out, "{key} {revision}")?;
    }
    out.flush()
        .with_context(|| format!("--ack-log: cannot write {}", path.display()))?;
    Ok(())
}

/// The highest acknowledged revision of every key in the logs.
fn read_logs(paths: &[PathBuf]) -> Result<(BTreeMap<u64, i64>, u64)> {
    let mut highest: BTreeMap<u64, i64> = BTreeMap::new();
    let mut lines = 0u64;
    for path in paths {
        let file = std::fs::File::open(path)
            .with_context(|| format!("--verify-acks: cannot open {}", path.display()))?;
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("{}: unreadable", path.display()))?;
            let parsed = line
                .split_once(' ')
                .and_then(|(k, r)| Some((k.parse::<u64>().ok()?, r.parse::<i64>().ok()?)));
            let Some((key, revision)) = parsed.filter(|(_, r)| *r > 0) else {
                bail!(
                    "{}:{}: expected `key_number revision`, got {line:?}",
                    path.display(),
                    i + 1
                );
            };
            let entry = highest.entry(key).or_insert(revision);
            *entry = (*entry).max(revision);
            lines += 1;
        }
    }
    Ok((highest, lines))
}

/// Checks every acknowledged put against the cluster (linearizable reads of
/// the whole `bench/` prefix, keys only, page by page).
pub(super) async fn verify(
    channel: Channel,
    paths: &[PathBuf],
    key_of: impl Fn(u64) -> Bytes,
) -> Result<()> {
    let (highest, acks) = read_logs(paths)?;
    let mut kv = KvClient::new(channel);
    let mut found: BTreeMap<Bytes, i64> = BTreeMap::new();
    let mut from = Bytes::from_static(b"bench/");
    let end = Bytes::from_static(b"bench0");
    let mut revision = 0;
    loop {
        let request = RangeRequest {
            key: from.clone(),
            range_end: end.clone(),
            limit: PAGE_KEYS,
            keys_only: true,
            ..Default::default()
        };
        let page = kv
            .range(request)
            .await
            .map_err(|s| anyhow::anyhow!("range from {from:?}: {}", s.message()))?
            .into_inner();
        if let Some(h) = &page.header {
            // Later pages read later states: the first one is the floor.
            if revision == 0 {
                revision = h.revision;
            }
        }
        let Some(last) = page.kvs.last() else { break };
        let mut next = last.key.to_vec();
        next.push(0);
        for kv in page.kvs {
            found.insert(kv.key, kv.mod_revision);
        }
        if !page.more {
            break;
        }
        from = Bytes::from(next);
    }
    let newest = highest.values().copied().max().unwrap_or(0);
    let mut lost = Vec::new();
    for (&key, &acked) in &highest {
        let name = key_of(key);
        match found.get(&name) {
            Some(&now) if now >= acked => {}
            Some(&now) => lost.push(format!(
                "{}: acknowledged at revision {acked}, holds revision {now}",
                String::from_utf8_lossy(&name)
            )),
            None => lost.push(format!(
                "{}: acknowledged at revision {acked}, missing",
                String::from_utf8_lossy(&name)
            )),
        }
    }
    println!(
        "verified {acks} acknowledged puts over {} keys (newest at revision {newest}; \
         the cluster is at {revision}): {} lost",
        highest.len(),
        lost.len()
    );
    for line in lost.iter().take(LOST_SHOWN_MAX) {
        println!("  lost {line}");
    }
    if revision < newest {
        bail!("the cluster's revision {revision} is below an acknowledged put's {newest}");
    }
    if !lost.is_empty() {
        bail!("{} acknowledged puts were lost", lost.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_round_trip_and_keep_the_highest_revision_per_key() {
        let dir = std::env::temp_dir().join(format!("synod-acks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a");
        let b = dir.join("b");
        write_log(&a, &mut [(7, 30), (2, 5), (7, 12)]).unwrap();
        write_log(&b, &mut [(2, 9)]).unwrap();
        let (highest, lines) = read_logs(&[a.clone(), b]).unwrap();
        assert_eq!(lines, 4);
        assert_eq!(highest, BTreeMap::from([(2, 9), (7, 30)]));
        std::fs::write(&a, "7 30\nseven 3\n").unwrap();
        let err = read_logs(&[a]).unwrap_err().to_string();
        assert!(err.contains(":2: expected"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
