//! Carrying out one CI request: authenticate its token, answer a repeated id from the ledger,
//! register the artifact from its URL, create the deployment, then follow it ([`super::follow`]).
//! A refused request changes nothing and is answered on `<reply>/result` with the reason.

use super::ledger::{self, CiRecord};
use super::parse::{self, Format, ReplyTo};
use super::{CiContext, Retain};
use crate::deployments::{self, DeployContext};
use fleet_schema::ci::{CiReply, CiRequest, MAX_SIGNED_AGE_S};
use fleet_schema::Topic;
use std::sync::Arc;

/// Handles one payload from `fleet/_ci/requests` (a token inside) or
/// `fleet/_ci/requests/<token id>/<hmac>` (signed with the token).
pub async fn handle(ctx: Arc<CiContext>, topic: Topic, payload: axum::body::Bytes) {
    let signed = match &topic {
        Topic::CiSignedRequest { token, mac } => Some((token.as_str(), mac.as_str())),
        _ => None,
    };
    let parsed = parse::parse(&payload, signed.map(|s| s.0), ctx.trust.insecure());
    let Some(reply) = parsed.reply else {
        let n = ctx.metrics.reject("ci-requests", "unaddressed");
        if n <= 5 || n.is_multiple_of(1000) {
            let why = parsed.request.err().unwrap_or_default();
            tracing::warn!(reason = %why, "CI request without a readable token: not answered");
        }
        return;
    };
    let format = parsed.format;
    let req = match parsed.request {
        Ok(r) => r,
        Err(e) => return refuse(&ctx, &reply, format, e, Retain::AsContracted).await,
    };
    if let Err(e) = authorize(&ctx, &req, signed, &payload) {
        // Not retained: anyone can name a token id, and a retained refusal would stand in
        // for that token's real answer to a later request with the same id.
        return refuse(&ctx, &reply, format, e, Retain::Never).await;
    }
    let key = ledger::key(&reply.owner, &reply.id);
    // One request per key at a time: a duplicate published while the first is being carried
    // out is answered by the first.
    let Some(_busy) = Busy::claim(&ctx, &key) else {
        return;
    };
    let digest = digest(&req);
    let lookup = {
        let k = key.clone();
        ctx.db.call(move |db| ledger::get(db, &k)).await
    };
    let existing = match lookup {
        Ok(e) => e,
        Err(e) => {
            return refuse(
                &ctx,
                &reply,
                format,
                format!("database: {e}"),
                Retain::Never,
            )
            .await
        }
    };
    if let Some(rec) = &existing {
        if rec.digest != digest {
            let e = format!(
                "request id {:?} was already used for a different request{}; use a new id",
                reply.id,
                rec.deployment()
                    .map(|d| format!(" (deployment {d})"))
                    .unwrap_or_default()
            );
            // Not retained: the retained verdict of the first request stays.
            return refuse(&ctx, &reply, format, e, Retain::Never).await;
        }
        if rec.accepted.is_some() {
            tracing::info!(request = %key, "repeated CI request answered again");
            for answer in [&rec.accepted, &rec.result].into_iter().flatten() {
                super::publish(&ctx, &reply, rec.format, answer).await;
            }
            return;
        }
    }
    // A record without a deployment: fleetd stopped while carrying this request out.
    let resumed = existing.is_some();
    let rec = existing.unwrap_or_else(|| CiRecord {
        digest,
        format,
        created_at: crate::clock::now_ms(),
        application: req.deployment.application.clone(),
        version: req.deployment.version.clone(),
        accepted: None,
        result: None,
    });
    match create(&ctx, &key, &reply, &req, rec, resumed).await {
        Ok(rec) => {
            if let Some(a) = &rec.accepted {
                super::publish(&ctx, &reply, rec.format, a).await;
            }
            super::follow::spawn(ctx.clone(), key, rec);
        }
        Err(e) => refuse(&ctx, &reply, format, e, Retain::AsContracted).await,
    }
}

/// The request's token may deploy its application (and push its artifact). A signed request
/// must be fresh and carry no token; a token inside a request is taken only where the broker
/// keeps requests private.
fn authorize(
    ctx: &CiContext,
    req: &CiRequest,
    signed: Option<(&str, &str)>,
    payload: &[u8],
) -> Result<(), String> {
    let who = match signed {
        Some((token, mac)) => {
            if req.token.is_some() {
                return Err("token: a signed request must not carry its token".into());
            }
            let issued = req
                .issued_at
                .ok_or("issued_at: a signed request needs issued_at (Unix seconds)")?;
            let now = crate::clock::now_ms() / 1000;
            if issued.abs_diff(now) > MAX_SIGNED_AGE_S {
                return Err(format!(
                    "issued_at: {issued} is more than {MAX_SIGNED_AGE_S} s from fleetd's clock \
                     ({now}); sign the request when sending it"
                ));
            }
            ctx.trust.authenticate_mac(token, mac, payload)
        }
        None => {
            if req.token.is_some() && !ctx.requests_private && !ctx.trust.insecure() {
                return Err(
                    "token: this broker lets other clients read fleet/_ci/requests, so a token \
                     sent in a request is exposed: revoke it, and sign requests instead \
                     (fleet/_ci/requests/<token id>/<hmac>, see topics.md)"
                        .into(),
                );
            }
            let header = req.token.as_ref().map(|t| format!("Bearer {t}"));
            ctx.trust.authenticate(header.as_deref())
        }
    }
    .map_err(|e| format!("token: {e}"))?;
    who.require_app(&req.deployment.application)
        .map_err(|e| format!("token: {e}"))?;
    if let Some(a) = &req.artifact {
        who.require_app(&a.name)
            .map_err(|e| format!("token: {e}"))?;
    }
    Ok(())
}

/// sha256 of the request without its token and signing time (a rotated token, or the same
/// request signed again, is not another request).
fn digest(req: &CiRequest) -> String {
    let mut bare = req.clone();
    bare.token = None;
    bare.issued_at = None;
    let bytes = serde_json::to_vec(&bare).unwrap_or_default();
    hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes))
}

/// Registers the artifact, creates (or, after a crash mid-way, finds) the deployment and
/// records it. On failure the record is removed, so the id stays free.
async fn create(
    ctx: &CiContext,
    key: &str,
    reply: &ReplyTo,
    req: &CiRequest,
    mut rec: CiRecord,
    resumed: bool,
) -> Result<CiRecord, String> {
    save(ctx, key, &rec).await?;
    let result = async {
        let artifact = match &req.artifact {
            Some(a) => {
                let meta = super::fetch::register(
                    ctx.store.as_ref(),
                    a,
                    ctx.max_upload_bytes,
                    (&ctx.uploads, &ctx.metrics),
                )
                .await?;
                Some(meta.id)
            }
            None => None,
        };
        let (deployment, devices) = match adopt(ctx, &rec, resumed).await {
            Some(found) => found,
            None => {
                let body = serde_json::to_vec(&req.deployment).map_err(|e| e.to_string())?;
                let dctx = DeployContext {
                    db: &ctx.db,
                    store: ctx.store.as_ref(),
                    queue: &ctx.queue,
                    metrics: &ctx.metrics,
                    public_url: &ctx.public_url,
                    trust: &ctx.trust,
                };
                let created = deployments::create(&dctx, &body)
                    .await
                    .map_err(|e| format!("deployment: {e}"))?;
                (created.id, created.devices)
            }
        };
        Ok::<_, String>(CiReply::Accepted {
            id: reply.id.clone(),
            deployment,
            devices,
            artifact,
        })
    }
    .await;
    match result {
        Ok(accepted) => {
            rec.accepted = Some(accepted);
            save(ctx, key, &rec).await?;
            Ok(rec)
        }
        Err(e) => {
            let k = key.to_string();
            if let Err(db) = ctx.db.call(move |db| ledger::remove(db, &k)).await {
                tracing::error!(error = %db, "cannot forget a refused CI request");
            }
            Err(e)
        }
    }
}

/// After a crash between creating a deployment and recording it: the deployment of the same
/// application and version created since the request was first seen.
async fn adopt(ctx: &CiContext, rec: &CiRecord, resumed: bool) -> Option<(String, Vec<String>)> {
    if !resumed {
        return None;
    }
    let (app, version, since) = (rec.application.clone(), rec.version.clone(), rec.created_at);
    let found =
        ctx.db
            .call(move |db| {
                Ok(db.deployments()?.into_iter().find(|d| {
                    d.application == app && d.version == version && d.created_at >= since
                }))
            })
            .await
            .ok()??;
    let view = crate::http::deployments::load_view(&ctx.db, &found.id)
        .await
        .ok()??;
    Some((found.id, view.devices.into_keys().collect()))
}

/// Records a request in the ledger.
pub(super) async fn save(ctx: &CiContext, key: &str, rec: &CiRecord) -> Result<(), String> {
    let (k, r) = (key.to_string(), rec.clone());
    ctx.db
        .call(move |db| ledger::put(db, &k, &r))
        .await
        .map_err(|e| format!("database: {e}"))
}

/// Answers a refused request on `<reply>/result` (retained unless it would replace the verdict
/// of an earlier request with the same id), logs and counts it.
async fn refuse(ctx: &CiContext, reply: &ReplyTo, format: Format, error: String, retain: Retain) {
    let n = ctx.metrics.reject("ci-requests", "refused");
    if n <= 5 || n.is_multiple_of(1000) {
        tracing::warn!(owner = %reply.owner, id = %reply.id, %error, "CI request refused");
    }
    let answer = CiReply::Result {
        id: reply.id.clone(),
        ok: false,
        outcome: "rejected".into(),
        deployment: None,
        error: Some(error),
    };
    super::publish_as(ctx, reply, format, &answer, retain).await;
}

/// Marks a request key as being carried out; released on drop.
struct Busy {
    ctx: Arc<CiContext>,
    key: String,
}

impl Busy {
    fn claim(ctx: &Arc<CiContext>, key: &str) -> Option<Busy> {
        let mut set = ctx.busy.lock().expect("busy lock is never poisoned");
        set.insert(key.to_string()).then(|| Busy {
            ctx: ctx.clone(),
            key: key.to_string(),
        })
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Ok(mut set) = self.ctx.busy.lock() {
            set.remove(&self.key);
        }
    }
}
