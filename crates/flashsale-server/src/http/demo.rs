//! Demo mode (`flashsale serve --demo`): anyone may sign in as anyone by name. The route exists
//! only in demo mode (otherwise `404`), and the server says so loudly at start-up.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::JsonBody;
use super::AppState;
use crate::domain::UserId;

/// How long a demo sign-in lasts.
const DEMO_TOKEN_SECS: i64 = 86_400;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DemoTokenRequest {
    /// Who to sign in as: 1 to 64 characters.
    #[schema(min_length = 1, max_length = 64)]
    pub user: String,
}

#[derive(Serialize, ToSchema)]
pub struct DemoToken {
    /// A buyer token (HS256 JWT) for that user, valid for a day.
    pub token: String,
}

#[utoipa::path(post, path = "/api/v1/demo/token", tag = "demo",
    request_body = DemoTokenRequest,
    responses(
        (status = 200, description = "A buyer token for the user (demo mode only; 404 otherwise)", body = DemoToken),
        (status = 400, description = "invalid_request: user", body = super::wire::ErrorBody),
        (status = 408, description = "request_timeout: the body did not arrive in time", body = super::wire::ErrorBody),
        (status = 413, description = "payload_too_large", body = super::wire::ErrorBody),
    ))]
pub async fn demo_token(
    State(state): State<Arc<AppState>>,
    JsonBody(request): JsonBody<DemoTokenRequest>,
) -> Result<Json<DemoToken>, ApiError> {
    let Some(minter) = &state.demo else {
        return Err(ApiError::not_found());
    };
    let user = UserId::parse(&request.user)
        .ok_or_else(|| ApiError::invalid("user", "must be 1 to 64 characters"))?;
    let expires = state.service.now().as_second() + DEMO_TOKEN_SECS;
    Ok(Json(DemoToken {
        token: minter.mint(user.as_str(), expires),
    }))
}
