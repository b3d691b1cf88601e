//! A node's report of itself (roles, ballots and slots per group, recent
//! events), and the cluster's: every member asked over the peer service.
//! This is what a member's dashboard shows; any member's page shows the
//! whole cluster, so a person watching keeps the view when a node dies.

use crate::metrics::Metrics;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use synod_group::GroupStatus;
use synod_paxos::{NodeId, RoleKind};
use synod_proto::peerpb::{peer_client::PeerClient, GroupReport, NodeReport, ReportRequest};
use synod_storage::GroupId;
use tonic::transport::Channel;

/// Every group's line, refreshed by the core loop with the metrics.
pub type Reports = Arc<Mutex<Vec<GroupReport>>>;

/// How long a member has to answer a report question before it is shown
/// as unreachable.
pub const REPORT_TIMEOUT: Duration = Duration::from_millis(800);

/// What a person calls this replica's part in its group.
fn role(status: &GroupStatus, replica: &synod_paxos::Status) -> &'static str {
    match &status.membership {
        None => "joining",
        Some(c) if !c.is_member(replica.id) => "removed",
        Some(c) if !c.is_voter(replica.id) => "observer",
        Some(_) => match replica.role {
            RoleKind::Leader => "leader",
            RoleKind::Candidate => "candidate",
            RoleKind::Prober => "prober",
            RoleKind::Follower => "follower",
        },
    }
}

/// One group's line of the report.
pub(crate) fn group_report(
    id: GroupId,
    status: &GroupStatus,
    replica: &synod_paxos::Status,
) -> GroupReport {
    let (voters, observers) = match &status.membership {
        Some(c) => {
            let voters = c.voters();
            let observers = c
                .members()
                .into_iter()
                .filter(|m| !voters.contains(m))
                .map(|m| m.0)
                .collect();
            (voters.into_iter().map(|v| v.0).collect(), observers)
        }
        None => (Vec::new(), Vec::new()),
    };
    GroupReport {
        group: id.0,
        role: role(status, replica).to_string(),
        leader: status.leader.map_or(0, |l| l.0),
        ballot_round: replica.promised.round,
        ballot_node: replica.promised.node.0,
        commit: status.commit,
        applied: status.applied,
        revision: status.revision,
        log_start: status.snapshot_slot,
        voters,
        observers,
        data_bytes: status.data_bytes,
        shard_epoch: status.shard_epoch,
    }
}

/// Builds this node's report; shared by the facade and the peer service.
#[derive(Clone)]
pub struct Reporter {
    pub(crate) id: NodeId,
    pub(crate) client_addr: SocketAddr,
    pub(crate) http_addr: Arc<Mutex<Option<SocketAddr>>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) reports: Reports,
}

impl Reporter {
    /// This node's report now.
    pub fn report(&self) -> NodeReport {
        let (requests, request_seconds) = self.metrics.request_totals();
        NodeReport {
            id: self.id.0,
            client_addr: self.client_addr.to_string(),
            http_addr: self
                .http_addr
                .lock()
                .expect("http addr lock")
                .map(|a| a.to_string())
                .unwrap_or_default(),
            groups: self.reports.lock().expect("reports lock").clone(),
            db_size_bytes: self.metrics.db_size.get(),
            requests,
            request_seconds,
            events: self.metrics.events(),
            uptime_ms: self.metrics.uptime().as_millis() as u64,
        }
    }
}

/// Connections to the members' peer services for report questions, made
/// lazily and kept.
#[derive(Default)]
pub(crate) struct ReportClients {
    channels: Mutex<BTreeMap<SocketAddr, Channel>>,
}

impl ReportClients {
    /// Asks the member at `addr` for its report; `Err` says why it did not
    /// answer in time.
    pub(crate) async fn ask(
        &self,
        addr: SocketAddr,
        cluster_id: u64,
        auth: &crate::peer_auth::PeerAuth,
    ) -> Result<NodeReport, String> {
        let channel = {
            let mut channels = self.channels.lock().expect("channels lock");
            match channels.get(&addr) {
                Some(c) => c.clone(),
                None => {
                    let endpoint = auth.endpoint(addr)?.connect_timeout(REPORT_TIMEOUT);
                    let c = endpoint.connect_lazy();
                    channels.insert(addr, c.clone());
                    c
                }
            }
        };
        let mut client = PeerClient::new(channel);
        let mut request = tonic::Request::new(ReportRequest { cluster_id });
        auth.sign(&mut request);
        let call = client.report(request);
        match tokio::time::timeout(REPORT_TIMEOUT, call).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => Err(status.message().to_string()),
            Err(_) => Err(format!(
                "no answer within {} ms",
                REPORT_TIMEOUT.as_millis()
            )),
        }
    }
}
