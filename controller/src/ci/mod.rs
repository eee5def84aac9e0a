//! Deploying from CI by MQTT publish (`topics.md`, "CI requests"). A CI job with only
//! `mosquitto_pub`/`mosquitto_sub` publishes a JSON (or CBOR) [`CiRequest`] on
//! `fleet/_ci/requests`, carrying a deploy-scoped API token; fleetd answers under
//! `fleet/_ci/replies/_token-<token id>/<request id>/`: `accepted` (the deployment id),
//! `progress` on every change, and the verdict on `result`.
//!
//! - [`parse`] reads a request (pure) and derives its reply address;
//! - [`handle`] authenticates, answers repeated ids from the [`ledger`] (durable in redb),
//!   registers an artifact given by URL ([`fetch`]) and creates the deployment;
//! - [`follow`] sends progress and the verdict.
//!
//! The bridge's poll task only forwards payloads here (it never waits on this work).
//!
//! [`CiRequest`]: fleet_schema::ci::CiRequest

pub mod fetch;
pub mod follow;
pub mod handle;
pub mod ledger;
pub mod parse;

use crate::db::Db;
use crate::metrics::Metrics;
use crate::mqtt::PublishQueue;
use crate::store::ArtifactStore;
use crate::trust::Trust;
use axum::body::Bytes;
use fleet_schema::ci::CiReply;
use fleet_schema::topic::CiReplyPart;
use fleet_schema::Topic;
use parse::{Format, ReplyTo};
use rumqttc::AsyncClient;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A message on a CI request topic: the topic (plain or signed) and its payload.
pub type CiMessage = (fleet_schema::Topic, Bytes);

/// Requests queued between the poll task and the CI worker.
pub const QUEUE: usize = 1000;

/// How long a finished request's id is remembered (and its retained answers kept on the
/// broker): 30 days.
pub const RETENTION_MS: u64 = 30 * 24 * 3600 * 1000;

/// How often expired requests are forgotten.
const SWEEP: std::time::Duration = std::time::Duration::from_secs(3600);

/// What carrying out CI requests needs.
pub struct CiContext {
    /// Database (deployments and the request ledger).
    pub db: Db,
    /// Artifact store, for artifacts given by URL.
    pub store: Arc<dyn ArtifactStore>,
    /// Publishing desired states.
    pub queue: Arc<PublishQueue>,
    /// Counters (refused requests count as rejected payloads on topic `ci-requests`).
    pub metrics: Arc<Metrics>,
    /// Base URL devices download from.
    pub public_url: Arc<str>,
    /// Tokens and identities.
    pub trust: Arc<Trust>,
    /// The bridge's client, for the answers.
    pub client: AsyncClient,
    /// Whether the broker keeps `fleet/_ci/requests` private (an external broker held to
    /// fleetd's ACL): only then may a request carry its token instead of being signed.
    pub requests_private: bool,
    /// Largest artifact fetched from a URL.
    pub max_upload_bytes: u64,
    /// The staging quota shared with uploads.
    pub uploads: Arc<crate::http::upload_gate::UploadGate>,
    /// Request keys being carried out right now.
    pub busy: Mutex<HashSet<String>>,
    /// Cancelled at shutdown.
    pub shutdown: CancellationToken,
}

/// Takes requests from the bridge until shutdown; first resumes following the deployments of
/// requests whose verdict was not sent before the last stop.
pub async fn run(ctx: Arc<CiContext>, mut requests: mpsc::Receiver<CiMessage>) {
    match ctx.db.call(ledger::unfinished).await {
        Ok(open) => {
            for (key, rec) in open {
                follow::spawn(ctx.clone(), key, rec);
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot read the CI request ledger"),
    }
    let mut sweep = tokio::time::interval(SWEEP);
    loop {
        tokio::select! {
            msg = requests.recv() => match msg {
                Some((topic, payload)) => {
                    tokio::spawn(handle::handle(ctx.clone(), topic, payload));
                }
                None => return,
            },
            _ = sweep.tick() => forget_expired(&ctx).await,
            _ = ctx.shutdown.cancelled() => return,
        }
    }
}

/// Forgets finished requests older than [`RETENTION_MS`] and clears their retained answers
/// (an empty retained message deletes one), so the broker does not collect them forever.
async fn forget_expired(ctx: &CiContext) {
    let before = crate::clock::now_ms().saturating_sub(RETENTION_MS);
    let expired = match ctx
        .db
        .call(move |db| ledger::finished_before(db, before))
        .await
    {
        Ok(e) => e,
        Err(e) => return tracing::warn!(error = %e, "cannot read the CI request ledger"),
    };
    for (key, _) in expired {
        let Some((owner, id)) = key.split_once('/') else {
            continue;
        };
        for part in [CiReplyPart::Accepted, CiReplyPart::Result] {
            let topic = Topic::ci_reply(owner, id, part);
            if let Err(e) = crate::mqtt::wire::clear_retained(&ctx.client, &topic).await {
                tracing::warn!(error = %e, %topic, "cannot clear a CI answer");
            }
        }
        let k = key.clone();
        if let Err(e) = ctx.db.call(move |db| ledger::remove(db, &k)).await {
            tracing::warn!(error = %e, request = %key, "cannot forget a CI request");
        }
    }
}

/// Publishes `answer` under the reply topic, as the topic's contract says.
pub async fn publish(ctx: &CiContext, reply: &ReplyTo, format: Format, answer: &CiReply) {
    publish_as(ctx, reply, format, answer, Retain::AsContracted).await
}

/// Whether an answer may become the reply topic's retained message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retain {
    /// As the topic's contract says (`accepted` and `result` retained).
    AsContracted,
    /// Never: the answer must not stand in for the retained verdict of the id's rightful
    /// request (a refusal of a forged or conflicting request).
    Never,
}

/// Publishes `answer` under the reply topic, retained per `retain`.
pub async fn publish_as(
    ctx: &CiContext,
    reply: &ReplyTo,
    format: Format,
    answer: &CiReply,
    retain: Retain,
) {
    let topic = Topic::ci_reply(&reply.owner, &reply.id, answer.part());
    let bytes = match format {
        Format::Json => serde_json::to_vec(answer).map_err(|e| e.to_string()),
        Format::Cbor => fleet_schema::encode(answer).map_err(|e| e.to_string()),
    };
    match bytes {
        Ok(b) => {
            let sent = match retain {
                Retain::AsContracted => crate::mqtt::wire::publish(&ctx.client, &topic, b).await,
                Retain::Never => {
                    crate::mqtt::wire::publish_unretained(&ctx.client, &topic, b).await
                }
            };
            if let Err(e) = sent {
                tracing::warn!(error = %e, %topic, "cannot publish a CI answer");
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot encode a CI answer"),
    }
}
