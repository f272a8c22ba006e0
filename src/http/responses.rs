//! Answers many routes give alike, written once for their OpenAPI entries: a handler lists
//! `Unauthorized`, `RateLimited` or `ShardMoving` among its responses. The types only describe;
//! the answers themselves are [`ApiError`](super::ApiError)s.

use utoipa::IntoResponses;

use super::error::ErrorBody;

/// 401: the route needs a token and the request has no good one.
#[derive(Debug, IntoResponses)]
pub enum Unauthorized {
    #[response(
        status = 401,
        description = "Missing, malformed, expired, revoked or stale token"
    )]
    Unauthorized(ErrorBody),
}

/// 429: a limit of `[limits]` was reached.
#[derive(Debug, IntoResponses)]
pub enum RateLimited {
    #[response(
        status = 429,
        description = "`rate_limited`: over a limit of `[limits]`; `Retry-After` says when to try again"
    )]
    RateLimited(ErrorBody),
}

/// 503: the command's shard is between owners.
#[derive(Debug, IntoResponses)]
pub enum ShardMoving {
    #[response(
        status = 503,
        description = "`shard_moving`: the order's (or the rider's) shard is moving between nodes; nothing changed, retry shortly"
    )]
    ShardMoving(ErrorBody),
}
