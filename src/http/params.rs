//! Path and query extractors whose rejections are [`ApiError`]s (400 with the API error body),
//! and the pagination parameters every list endpoint shares.

use axum::extract::FromRequestParts;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tomato_domain::ErrorKind;
use utoipa::IntoParams;

use super::error::ApiError;

/// `axum::extract::Path`, answering a malformed segment (an id that is not a UUID) with 400.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection: PathRejection| {
                ApiError::from_kind(ErrorKind::Invalid, "invalid_path", rejection.body_text())
            })
    }
}

/// `axum::extract::Query`, answering a bad query string with 400.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection: QueryRejection| {
                ApiError::from_kind(ErrorKind::Invalid, "invalid_query", rejection.body_text())
            })
    }
}

/// `?limit=&cursor=` of list endpoints.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// How many items at most (default 50, 1 to 200).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `nextCursor` of the previous page (empty: the first page).
    #[serde(default, deserialize_with = "empty_is_none")]
    pub cursor: Option<String>,
}

/// `?cursor=` with nothing after it is the first page, as no cursor at all is.
fn empty_is_none<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let cursor = Option::<String>::deserialize(deserializer)?;
    Ok(cursor.filter(|cursor| !cursor.is_empty()))
}

impl PageParams {
    /// Default page size.
    pub const DEFAULT_LIMIT: usize = 50;
    /// Largest page size.
    pub const MAX_LIMIT: usize = 200;

    /// One page of `items` (already in their list's order), with the cursor of the next: for
    /// lists read whole and ordered in memory, where the cursor is the offset of the next page.
    pub fn offset_page<T>(&self, items: Vec<T>) -> Result<(Vec<T>, Option<String>), ApiError> {
        let limit = self.limit()?;
        let offset = match &self.cursor {
            None => 0,
            Some(cursor) => cursor
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request("the cursor is not valid"))?,
        };
        let total = items.len();
        let page = items.into_iter().skip(offset).take(limit).collect();
        let next = offset.saturating_add(limit);
        Ok((page, (next < total).then(|| next.to_string())))
    }

    /// The validated limit: out of range is a 400, never clamped.
    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(Self::DEFAULT_LIMIT),
            Some(limit) if (1..=Self::MAX_LIMIT as i64).contains(&limit) => Ok(limit as usize),
            Some(_) => Err(ApiError::bad_request(format!(
                "limit must be between 1 and {}",
                Self::MAX_LIMIT
            ))),
        }
    }
}
