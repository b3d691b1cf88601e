//! The `watch` workload: every client is a watcher of one key, writers put
//! to those keys in a closed loop, and what is measured is events
//! delivered. A put's value carries the time it was sent, so each watcher
//! records the delay from put to event.
//!
//! ```text
//!   writers (closed loop) ── put bench/k, value = send time ──► cluster
//!   watchers 0..clients   ◄── event on bench/(i mod keys) ──── cluster
//! ```

use super::Channel;
use super::{describe, ClientReport, Plan, Rng, SEED};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use synod_proto::etcdserverpb::kv_client::KvClient;
use synod_proto::etcdserverpb::watch_client::WatchClient;
use synod_proto::etcdserverpb::watch_request::RequestUnion;
use synod_proto::etcdserverpb::{PutRequest, WatchCreateRequest, WatchRequest, WatchResponse};
use tokio::task::JoinSet;
use tonic::Streaming;

/// Watchers opened at once while setting up.
const OPENING_AT_ONCE: usize = 64;

/// A put's value: microseconds from its sending to the window's end (so
/// any watcher can tell when it was sent), padded to the value size.
fn stamp(plan: &Plan, sent: Instant) -> Bytes {
    let mut v = (plan.end.saturating_duration_since(sent).as_micros() as u64)
        .to_le_bytes()
        .to_vec();
    v.resize(plan.value.len().max(8), b'v');
    Bytes::from(v)
}

fn sent_at(plan: &Plan, value: &[u8]) -> Option<Instant> {
    let micros = u64::from_le_bytes(value.get(..8)?.try_into().ok()?);
    plan.end.checked_sub(Duration::from_micros(micros))
}

type Opened = (
    Streaming<WatchResponse>,
    tokio::sync::mpsc::Sender<WatchRequest>,
);

async fn open(channel: Channel, key: Bytes) -> Result<Opened> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key,
            ..WatchCreateRequest::default()
        })),
    };
    tx.send(create).await.context("watch request")?;
    let mut stream = WatchClient::new(channel)
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| anyhow::anyhow!(describe(&s)))?
        .into_inner();
    match stream.message().await {
        Ok(Some(r)) if r.created && !r.canceled => Ok((stream, tx)),
        Ok(other) => bail!("watch not created: {other:?}"),
        Err(s) => bail!("watch: {}", describe(&s)),
    }
}

/// Opens every watcher (all confirmed before anything is written), then
/// spawns watchers and writers into `tasks`.
pub(super) async fn spawn(
    tasks: &mut JoinSet<ClientReport>,
    channels: &[Channel],
    plan: &Arc<Plan>,
    watchers: u32,
    writers: u32,
) -> Result<()> {
    let started = Instant::now();
    let mut opened = Vec::with_capacity(watchers as usize);
    for chunk in (0..watchers as usize)
        .collect::<Vec<_>>()
        .chunks(OPENING_AT_ONCE)
    {
        let mut opening = JoinSet::new();
        for &i in chunk {
            let channel = channels[i % channels.len()].clone();
            opening.spawn(open(channel, plan.key(i as u64 % plan.keys)));
        }
        while let Some(r) = opening.join_next().await {
            opened.push(r.context("watcher setup panicked")??);
        }
    }
    eprintln!(
        "opened {watchers} watchers in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    for (stream, requests) in opened {
        tasks.spawn(watch(stream, requests, plan.clone()));
    }
    for w in 0..writers {
        let kv = KvClient::new(channels[w as usize % channels.len()].clone());
        tasks.spawn(write(kv, plan.clone(), w));
    }
    Ok(())
}

async fn watch(
    mut stream: Streaming<WatchResponse>,
    _requests: tokio::sync::mpsc::Sender<WatchRequest>,
    plan: Arc<Plan>,
) -> ClientReport {
    let mut report = ClientReport::new();
    loop {
        let message = tokio::time::timeout_at(plan.end.into(), stream.message()).await;
        let response = match message {
            Err(_) => return report,
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => {
                report.errors.note("watch stream ended".into());
                return report;
            }
            Ok(Err(s)) => {
                report.errors.note(describe(&s));
                return report;
            }
        };
        let received = Instant::now();
        for e in &response.events {
            let Some(sent) = e.kv.as_ref().and_then(|kv| sent_at(&plan, &kv.value)) else {
                report.errors.note("event without a send time".into());
                continue;
            };
            if sent < plan.measure_from {
                report.warmup_ops += 1;
            } else {
                let us = received.saturating_duration_since(sent).as_micros() as u64;
                report.latency_us.saturating_record(us.max(1));
            }
        }
    }
}

async fn write(mut kv: KvClient<Channel>, plan: Arc<Plan>, index: u32) -> ClientReport {
    let mut rng = Rng(SEED ^ 0x77 ^ u64::from(index).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut report = ClientReport::new();
    // Writers' puts are counted apart: the histogram holds event delivery.
    loop {
        let sent = Instant::now();
        if sent >= plan.end {
            return report;
        }
        let put = PutRequest {
            key: plan.key(rng.below(plan.keys)),
            value: stamp(&plan, sent),
            ..PutRequest::default()
        };
        match kv.put(put).await {
            Ok(_) if sent >= plan.measure_from && Instant::now() <= plan.end => report.writes += 1,
            Ok(_) => {}
            Err(s) => {
                report.errors.note(format!("put: {}", describe(&s)));
                tokio::time::sleep(super::ERROR_BACKOFF).await;
            }
        }
    }
}
