//! etcd's Watch service: one bidirectional stream carries many watchers.
//! Requests (create, cancel, progress) go to the node; every response —
//! `created`, events, progress, `canceled` — comes back through the node's
//! watch hub in order, and gets its header here.

use crate::EtcdApi;
use std::pin::Pin;
use synod_kv::{Access, KeyRange};
use synod_proto::etcdserverpb::watch_create_request::FilterType;
use synod_proto::etcdserverpb::watch_request::RequestUnion;
use synod_proto::etcdserverpb::watch_server::Watch;
use synod_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use synod_server::WatchSpec;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// The response stream of one Watch call.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

/// A create request as the hub wants it.
pub(crate) fn spec(c: &WatchCreateRequest) -> WatchSpec {
    let filtered = |f: FilterType| c.filters.contains(&(f as i32));
    WatchSpec {
        // etcd's AutoWatchID is 0: the server picks.
        watch_id: (c.watch_id != 0).then_some(c.watch_id),
        range: KeyRange::from_etcd(&c.key, &c.range_end),
        start_revision: c.start_revision,
        prev_kv: c.prev_kv,
        no_put: filtered(FilterType::Noput),
        no_delete: filtered(FilterType::Nodelete),
        progress_notify: c.progress_notify,
        fragment: c.fragment,
        user: None,
        // The node routes it.
        groups: Vec::new(),
    }
}

#[tonic::async_trait]
impl Watch for EtcdApi {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = self.caller(&request)?;
        let mut inbound = request.into_inner();
        let node = self.node.clone();
        let (stream, receiver) = node.watch_open();
        // Refusals answered here, not by the hub.
        let (refused, refusals) = tokio::sync::mpsc::unbounded_channel();
        let api = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(request)) = inbound.message().await {
                let sent = match request.request_union {
                    Some(RequestUnion::CreateRequest(c)) => {
                        let mut spec = spec(&c);
                        let range = spec.range.clone();
                        let user = caller.user.clone();
                        let allowed = api
                            .authorize(|auth| auth.check_range(&user, Access::Read, &range))
                            .await;
                        match allowed {
                            Ok(()) => {
                                // Judged again whenever roles change.
                                spec.user = Some(caller.user.clone());
                                node.watch_create(stream, spec)
                            }
                            Err(e) => {
                                // etcd's answer: created and cancelled at
                                // once, with the reason.
                                let _ = refused.send(WatchResponse {
                                    watch_id: -1,
                                    created: true,
                                    canceled: true,
                                    cancel_reason: e.message().to_string(),
                                    ..WatchResponse::default()
                                });
                                Ok(())
                            }
                        }
                    }
                    Some(RequestUnion::CancelRequest(c)) => node.watch_cancel(stream, c.watch_id),
                    Some(RequestUnion::ProgressRequest(_)) => {
                        node.watch_progress(stream);
                        Ok(())
                    }
                    None => Ok(()),
                };
                if sent.is_err() {
                    break;
                }
            }
            node.watch_close(stream);
        });
        let api = self.clone();
        let refusals = tokio_stream::wrappers::UnboundedReceiverStream::new(refusals);
        let out = receiver.merge(refusals).map(move |mut r| {
            r.header = api.header(r.header.map_or(0, |h| h.revision));
            Ok(r)
        });
        Ok(Response::new(Box::pin(out)))
    }
}
