//! The closed set of failure kinds. Domain, store and actor errors map onto one of these; only the
//! HTTP edge turns a kind into a status code, so no crate below it needs HTTP types.

/// What went wrong, as far as a caller needs to know to react.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The input is malformed or out of range.
    Invalid,
    /// No credentials, or credentials that are no longer good.
    Unauthenticated,
    /// Authenticated, but not allowed to do this.
    Forbidden,
    /// The thing does not exist (or the caller may not learn that it does).
    NotFound,
    /// The current state does not allow this (invalid transition, duplicate, already taken).
    Conflict,
    /// Well-formed, but cannot be processed as asked (an empty cart, say).
    Unprocessable,
    /// The request is larger than this door accepts.
    TooLarge,
    /// The request's media type is not accepted here.
    UnsupportedMedia,
    /// A dependency (store, provider, peer node) cannot be reached right now.
    Unavailable,
    /// A bug or a broken invariant; details are logged, never shown.
    Internal,
}
