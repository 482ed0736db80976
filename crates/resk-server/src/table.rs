//! The route table: every route of the API, once. It feeds the router (each route mounts its
//! handlers with their OpenAPI operations), the gate (which routes are served without a token), the
//! telemetry labels (requests are labelled by route template, so label values stay bounded) and
//! the WebSocket path.

use std::sync::Arc;

use aide::{
    axum::{
        ApiRouter,
        routing::{delete_with, get_with, post_with},
    },
    transform::TransformOperation,
};
use axum::{
    Json,
    routing::{get, post},
};

use crate::{
    api::{
        DeleteResponse, EraseResponse, ExportResponse, FeedbackResponse, HealthResponse,
        PurgeResponse, QueryResponse, ReadyResponse, RevokeResponse, WriteResponse,
    },
    error::ErrorBody,
    routes,
    state::AppState,
};

/// The router the table builds.
pub(crate) type Router = ApiRouter<Arc<AppState>>;

/// One route.
pub(crate) struct Route {
    /// Its template, as axum matches it (`/api/cache/{key}`).
    pub(crate) path: &'static str,
    /// Served without a token.
    pub(crate) public: bool,
    /// Mounts the route's handlers, with their OpenAPI operations, on `path`.
    mount: fn(Router, &'static str) -> Router,
}

/// The WebSocket route.
pub(crate) const WS: &str = "/api/ws";

/// Every route, in the order of the OpenAPI document.
pub(crate) const ROUTES: &[Route] = &[
    Route {
        path: "/health",
        public: true,
        mount: health,
    },
    Route {
        path: "/ready",
        public: true,
        mount: ready,
    },
    Route {
        path: "/api/cache",
        public: false,
        mount: cache,
    },
    Route {
        path: "/api/auth/revoke",
        public: false,
        mount: revoke,
    },
    Route {
        path: "/api/privacy/export",
        public: false,
        mount: export,
    },
    Route {
        path: "/api/privacy/erase",
        public: false,
        mount: erase,
    },
    Route {
        path: "/api/cache/{key}",
        public: false,
        mount: entry,
    },
    Route {
        path: WS,
        public: false,
        mount: ws,
    },
    Route {
        path: "/api/cache/query",
        public: false,
        mount: query,
    },
    Route {
        path: "/api/cache/feedback",
        public: false,
        mount: feedback,
    },
    Route {
        path: "/api/gateway/savings",
        public: false,
        mount: savings,
    },
    Route {
        path: "/v1/chat/completions",
        public: false,
        mount: chat_completions,
    },
    Route {
        path: "/v1/embeddings",
        public: false,
        mount: embeddings,
    },
    Route {
        path: "/v1/models",
        public: false,
        mount: models,
    },
    Route {
        path: "/api/admin/overview",
        public: false,
        mount: admin_overview,
    },
    Route {
        path: "/api/admin/decisions",
        public: false,
        mount: admin_decisions,
    },
    Route {
        path: "/api/admin/entries",
        public: false,
        mount: admin_entries,
    },
    Route {
        path: "/api/admin/health",
        public: false,
        mount: admin_health,
    },
    Route {
        path: "/console",
        public: true,
        mount: console_index,
    },
    Route {
        path: "/console/",
        public: true,
        mount: console_index,
    },
    Route {
        path: "/console/{*file}",
        public: true,
        mount: console_file,
    },
    Route {
        path: "/api/openapi.json",
        public: true,
        mount: openapi,
    },
    Route {
        path: "/api/metrics",
        public: true,
        mount: metrics,
    },
];

/// Every route of the table, mounted.
pub(crate) fn router() -> Router {
    ROUTES.iter().fold(Router::new(), |router, route| {
        (route.mount)(router, route.path)
    })
}

/// The table's route of a matched template.
pub(crate) fn find(template: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.path == template)
}

fn secured<'a>(op: TransformOperation<'a>, scope: &'static str) -> TransformOperation<'a> {
    op.security_requirement_scopes("bearer", [scope])
        .response::<400, Json<ErrorBody>>()
        .response::<401, Json<ErrorBody>>()
        .response::<403, Json<ErrorBody>>()
        .response::<429, Json<ErrorBody>>()
}

fn with_body(op: TransformOperation<'_>) -> TransformOperation<'_> {
    op.response::<413, Json<ErrorBody>>()
        .response::<415, Json<ErrorBody>>()
}

fn health(router: Router, path: &'static str) -> Router {
    router.api_route(
        path,
        get_with(routes::health, |op| {
            op.summary("Liveness")
                .response::<200, Json<HealthResponse>>()
        }),
    )
}

fn ready(router: Router, path: &'static str) -> Router {
    router.api_route(
        path,
        get_with(routes::ready, |op| {
            op.summary("Readiness: backends reachable")
                .response::<200, Json<ReadyResponse>>()
                .response::<503, Json<ErrorBody>>()
        }),
    )
}

fn cache(router: Router, path: &'static str) -> Router {
    router.api_route(
        path,
        post_with(routes::write_entry, |op| {
                    with_body(secured(op, "cache:write"))
                        .summary("Store an answer")
                        .description("Stores `response` under the canonical key of `query` in the caller's tenant. \
                             With an `Idempotency-Key` header a retry gets the first answer again (header \
                             `Idempotent-Replayed: true`) instead of writing again; the same key with another \
                             body is a 409.")
                        .response::<201, Json<WriteResponse>>()
                        .response::<409, Json<ErrorBody>>()
                        .response::<503, Json<ErrorBody>>()
                })
                .delete_with(routes::purge, |op| {
                    secured(op, "cache:admin")
                        .summary("Purge the caller's tenant")
                        .response::<200, Json<PurgeResponse>>()
                }),
    )
}

fn revoke(router: Router, path: &'static str) -> Router {
    router.api_route(
        path,
        post_with(routes::revoke, |op| {
                    with_body(secured(op, "cache:read"))
                        .summary("Revoke a token")
                        .description(
                            "Without `jti` or `token`: revokes the caller's own token (logout; any scope). \
                             With `jti`: revokes that token of the caller's tenant (needs `cache:admin`); \
                             a `jti` not seen in a token of the caller's tenant is a 404. With `token`: \
                             revokes that token, used or not (its own subject, or `cache:admin` of its \
                             tenant; another tenant's token is a 404). The revocation lasts until the \
                             token expires; every instance refuses the token, and closes its WebSockets, \
                             within 5 s, at once on this one.",
                        )
                        .response::<200, Json<RevokeResponse>>()
                        .response::<404, Json<ErrorBody>>()
                        .response::<503, Json<ErrorBody>>()
                }),
    )
}

fn export(router: Router, path: &'static str) -> Router {
    router.api_route(
        path,
        post_with(routes::privacy_export, |op| {
                    with_body(secured(op, "cache:read"))
                        .summary("Export a subject's entries")
                        .description(
                            "Every entry the subject wrote, or that is private to it, in the caller's tenant \
                             (GDPR access and portability). Without `subject`: the caller's own entries; \
                             another subject needs `cache:admin`. Each call reads a bounded stretch of the \
                             tenant: send the answer's `next` back as `cursor` until it is null.",
                        )
                        .response::<200, Json<ExportResponse>>()
                        .response::<404, Json<ErrorBody>>()
                        .response::<503, Json<ErrorBody>>()
                }),
    )
}

fn erase(router: Router, path: &'static str) -> Router {
    router.api_route(
        path,
        post_with(routes::privacy_erase, |op| {
                    with_body(secured(op, "cache:write"))
                        .summary("Erase a subject's entries")
                        .description(
                            "Deletes every entry the subject wrote, or that is private to it, in the caller's                              tenant, with their vectors (GDPR erasure). Without `subject`: the caller's own                              entries (`cache:write`); another subject needs `cache:admin`.",
                        )
                        .response::<200, Json<EraseResponse>>()
                        .response::<503, Json<ErrorBody>>()
                }),
    )
}

fn entry(router: Router, path: &'static str) -> Router {
    router.api_route(
        path,
        delete_with(routes::delete_entry, |op| {
                    secured(op, "cache:write")
                        .summary("Delete one entry")
                        .description("Removes the entry of the caller's tenant under `key` (as returned by a write).")
                        .response::<200, Json<DeleteResponse>>()
                        .response::<503, Json<ErrorBody>>()
                }),
    )
}

fn ws(router: Router, path: &'static str) -> Router {
    router.api_route(
        path,
        get_with(crate::ws::upgrade, |op| {
                    secured(op, "cache:read")
                        .response::<426, Json<ErrorBody>>()
                        .summary("WebSocket pub/sub")
                        .description(
                            "Upgrades to a WebSocket (subprotocol `resk.v1`). Browsers pass the token as a \
                             `bearer.<jwt>` subprotocol. Messages: subscribe, unsubscribe, publish, ping; \
                             the server publishes cache events on the `cache` channel.",
                        )
                        // aide declares the 101 itself for the `WebSocketUpgrade` extractor.
                        .response::<503, Json<ErrorBody>>()
                }),
    )
}

fn query(router: Router, path: &'static str) -> Router {
    router.api_route(
        path,
        post_with(routes::query_entry, |op| {
            with_body(secured(op, "cache:read"))
                .summary("Look an answer up")
                .description("A miss is a 200 with `hit: false`, not an error.")
                .response::<200, Json<QueryResponse<'static>>>()
        }),
    )
}

fn feedback(router: Router, path: &'static str) -> Router {
    router.api_route(
        path,
        post_with(routes::feedback, |op| {
            with_body(secured(op, "cache:write"))
                .summary("Report a semantic hit right or wrong")
                .description(
                    "`hit_id` comes with every semantic hit. A wrong report stops that question from \
                     being answered by that entry at once and raises the entry's floor; right reports \
                     can lower its accept bound within `SEMANTIC_TARGET_ERROR`. The state is kept with \
                     the entry. An unknown id, another tenant's, or one whose entry is gone is a 404 \
                     and changes nothing.",
                )
                .response::<200, Json<FeedbackResponse>>()
                .response::<404, Json<ErrorBody>>()
                .response::<503, Json<ErrorBody>>()
        }),
    )
}

fn admin_overview(router: Router, path: &'static str) -> Router {
    router.api_route(
        path,
        get_with(crate::admin::overview, |op| {
            secured(op, "cache:admin")
                .summary("The tenant's last hour on this instance")
                .description(
                    "Per minute over the last hour, for the caller's tenant on this instance: \
                     lookups, hits by source, misses, stale, degraded, errors, estimated tokens \
                     saved, the gateway's dollars saved and lookup latency percentiles (±10 %).",
                )
                .response::<200, Json<crate::admin::OverviewResponse>>()
        }),
    )
}

fn admin_decisions(router: Router, path: &'static str) -> Router {
    router.api_route(
        path,
        get_with(crate::admin::decisions, |op| {
            secured(op, "cache:admin")
                .summary("The tenant's last semantic decisions on this instance")
                .description(
                    "Newest first: the question's keyed hash (its text with `LOG_QUERY_TEXT`), the \
                     best candidate entry, its similarity, the verdict, who decided and why, the \
                     `hit_id` of a served answer (for `POST /api/cache/feedback`) and any report \
                     made on it.",
                )
                .response::<200, Json<crate::admin::DecisionsResponse>>()
        }),
    )
}

fn admin_entries(router: Router, path: &'static str) -> Router {
    router.api_route(
        path,
        get_with(crate::admin::entries, |op| {
            secured(op, "cache:admin")
                .summary("Page through the tenant's entries")
                .description(
                    "Each call walks a bounded stretch of the tenant (values are encrypted, so a \
                     search reads them); send `next` back as `cursor` until it is null. `q` \
                     matches a key prefix, a subject, or (with `LOG_QUERY_TEXT`) query text.",
                )
                .response::<200, Json<crate::admin::EntriesResponse>>()
                .response::<404, Json<ErrorBody>>()
                .response::<503, Json<ErrorBody>>()
        }),
    )
}

fn admin_health(router: Router, path: &'static str) -> Router {
    router.api_route(
        path,
        get_with(crate::admin::health, |op| {
            secured(op, "cache:admin")
                .summary("Readiness, breakers, build and configuration")
                .response::<200, Json<crate::admin::AdminHealthResponse>>()
        }),
    )
}

// The console is a page, not part of the API document.
fn console_index(router: Router, path: &'static str) -> Router {
    router.route(path, get(crate::console::index))
}

fn console_file(router: Router, path: &'static str) -> Router {
    router.route(path, get(crate::console::file))
}

fn openapi(router: Router, path: &'static str) -> Router {
    router.route(path, get(routes::openapi))
}

fn metrics(router: Router, path: &'static str) -> Router {
    router.route(path, get(routes::metrics))
}

// The gateway's routes follow OpenAI's API reference, not resk's OpenAPI document.
fn chat_completions(router: Router, path: &'static str) -> Router {
    router.route(path, post(crate::gateway::chat_completions))
}

fn embeddings(router: Router, path: &'static str) -> Router {
    router.route(path, post(crate::gateway::embeddings))
}

fn models(router: Router, path: &'static str) -> Router {
    router.route(path, get(crate::gateway::models))
}

fn savings(router: Router, path: &'static str) -> Router {
    router.route(path, get(crate::gateway::savings))
}
