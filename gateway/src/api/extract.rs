//! JSON body and query extractors whose rejections are `ApiError`s, so bad input gets the standard error body.

use axum::extract::{FromRequest, FromRequestParts};

use crate::http::error::ApiError;

/// `axum::Json`, rejecting with 400/413/415/422 `ApiError`s.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct JsonBody<T>(pub T);

/// `axum::extract::Query`, rejecting with a 400 `ApiError`.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct QueryParams<T>(pub T);
