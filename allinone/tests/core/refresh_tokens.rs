//! Refresh tokens: the store's rotation and reuse detection (SQLite always,
//! Postgres when `TEST_DATABASE_URL` is set), and the `UserService` RPCs.

#![allow(clippy::unwrap_used)]

use crate::common::{self, fresh_store};

use std::sync::Arc;
use std::time::Duration;

use chat_common::token::Role;
use chat_core::domain::UserId;
use chat_core::store::{self, ChatStore, Rotation, StoreError};
use chat_proto::chat::v1::{self as pb, user_service_client::UserServiceClient};
use tonic::Code;

async fn user(store: &Arc<dyn ChatStore>) -> UserId {
    store
        .create_user(&format!("u{}", uuid::Uuid::new_v4().simple()), "hash")
        .await
        .unwrap()
        .id
}

/// An expiry an hour from now, in epoch ms.
fn in_an_hour() -> i64 {
    chat_core::domain::now_ms() + 3_600_000
}

fn rotated(rotation: Rotation) -> store::RefreshToken {
    match rotation {
        Rotation::Rotated(record) => record,
        other => panic!("expected a rotation, got {other:?}"),
    }
}

// === store ===

#[tokio::test]
async fn rotation_revokes_the_old_token_and_keeps_the_family() {
    let (store, _db) = fresh_store().await;
    let user_id = user(&store).await;
    let first = store
        .issue_refresh_token(&user_id, "h1", in_an_hour())
        .await
        .unwrap();

    let second = rotated(
        store
            .rotate_refresh_token("h1", "h2", in_an_hour(), None)
            .await
            .unwrap(),
    );
    let third = rotated(
        store
            .rotate_refresh_token("h2", "h3", in_an_hour(), None)
            .await
            .unwrap(),
    );

    assert_eq!(second.user_id, user_id);
    assert_eq!(second.family_id, first.family_id);
    assert_eq!(third.family_id, first.family_id);
    assert_eq!(second.token_hash, "h2");
    assert!(second.revoked_at.is_none());
}

#[tokio::test]
async fn reusing_a_rotated_token_revokes_the_whole_family() {
    let (store, _db) = fresh_store().await;
    let user_id = user(&store).await;
    store
        .issue_refresh_token(&user_id, "a1", in_an_hour())
        .await
        .unwrap();
    store
        .issue_refresh_token(&user_id, "other", in_an_hour())
        .await
        .unwrap();
    rotated(
        store
            .rotate_refresh_token("a1", "a2", in_an_hour(), None)
            .await
            .unwrap(),
    );

    let reuse = store
        .rotate_refresh_token("a1", "x", in_an_hour(), None)
        .await
        .unwrap();

    assert!(matches!(reuse, Rotation::Reused(_)), "{reuse:?}");
    let newest = store
        .rotate_refresh_token("a2", "a3", in_an_hour(), None)
        .await
        .unwrap();
    assert!(
        matches!(newest, Rotation::Reused(_)),
        "the newest token of the family is revoked too: {newest:?}"
    );
    rotated(
        store
            .rotate_refresh_token("other", "other2", in_an_hour(), None)
            .await
            .unwrap(),
    );
}

#[tokio::test]
async fn revoking_ends_the_family_and_is_idempotent() {
    let (store, _db) = fresh_store().await;
    let user_id = user(&store).await;
    store
        .issue_refresh_token(&user_id, "r1", in_an_hour())
        .await
        .unwrap();
    rotated(
        store
            .rotate_refresh_token("r1", "r2", in_an_hour(), None)
            .await
            .unwrap(),
    );

    let family = store
        .revoke_refresh_family("r1")
        .await
        .unwrap()
        .expect("the family");
    assert_eq!(family.user_id, user_id);
    let again = store
        .revoke_refresh_family("r2")
        .await
        .unwrap()
        .expect("the family");
    assert_eq!(again, family, "both tokens are of one family");
    assert_eq!(store.revoke_refresh_family("unknown").await.unwrap(), None);

    let after = store
        .rotate_refresh_token("r2", "r3", in_an_hour(), None)
        .await
        .unwrap();
    assert!(matches!(after, Rotation::Reused(_)), "{after:?}");
}

#[tokio::test]
async fn expired_and_unknown_tokens_do_not_rotate() {
    let (store, _db) = fresh_store().await;
    let user_id = user(&store).await;
    let past = chat_core::domain::now_ms() - 1;
    store.issue_refresh_token(&user_id, "old", past).await.unwrap();

    let expired = store
        .rotate_refresh_token("old", "new", in_an_hour(), None)
        .await
        .unwrap();
    let unknown = store
        .rotate_refresh_token("nope", "new", in_an_hour(), None)
        .await
        .unwrap();

    assert!(matches!(expired, Rotation::Invalid), "{expired:?}");
    assert!(matches!(unknown, Rotation::Invalid), "{unknown:?}");
    assert!(
        matches!(
            store
                .rotate_refresh_token("new", "x", in_an_hour(), None)
                .await
                .unwrap(),
            Rotation::Invalid
        ),
        "nothing was stored for the refused rotations"
    );
}

#[tokio::test]
async fn concurrent_rotations_of_one_token_let_one_win_and_revoke_the_family() {
    let (store, _db) = fresh_store().await;
    let user_id = user(&store).await;
    store
        .issue_refresh_token(&user_id, "c0", in_an_hour())
        .await
        .unwrap();

    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .rotate_refresh_token("c0", &format!("c1-{i}"), in_an_hour(), None)
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        if let Rotation::Rotated(record) = task.await.unwrap().unwrap() {
            winners.push(record);
        }
    }

    assert_eq!(winners.len(), 1, "exactly one rotation succeeds");
    let winner = &winners[0].token_hash;
    let next = store
        .rotate_refresh_token(winner, "c2", in_an_hour(), None)
        .await
        .unwrap();
    assert!(
        matches!(next, Rotation::Reused(_)),
        "the losers' reuse revoked the winner's token: {next:?}"
    );
}

#[tokio::test]
async fn tokens_need_an_existing_user() {
    let (store, _db) = fresh_store().await;
    let missing = store
        .issue_refresh_token(&UserId::generate(), "h", in_an_hour())
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound("user"))),
        "{missing:?}"
    );
}

// === UserService ===

async fn users_client(stack: &common::Stack) -> UserServiceClient<tonic::transport::Channel> {
    UserServiceClient::new(common::channel(stack.core.addr).await)
}

fn service_token() -> String {
    common::keys()
        .sign("tests", Role::Service, Duration::from_secs(600))
        .unwrap()
}

#[tokio::test]
async fn refresh_token_rpcs_rotate_detect_reuse_and_revoke() {
    let stack = common::spawn_stack().await;
    let (user_id, _) = common::register(stack.core.addr).await;
    let mut users = users_client(&stack).await;
    let service = service_token();
    let issue = |ttl_secs| {
        common::with_token(
            pb::IssueRefreshTokenRequest {
                user_id: user_id.clone(),
                ttl_secs,
            },
            &service,
        )
    };
    let rotate = |refresh_token: &str| {
        common::with_token(
            pb::RotateRefreshTokenRequest {
                refresh_token: refresh_token.into(),
                ttl_secs: 600,
                family_ttl_secs: 0,
                access_ttl_secs: 0,
            },
            &service,
        )
    };

    let first = users.issue_refresh_token(issue(600)).await.unwrap().into_inner();
    assert_eq!(first.refresh_token.len(), 43);
    assert!(first.expires_at_ms > chat_core::domain::now_ms());
    let second = users
        .rotate_refresh_token(rotate(&first.refresh_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.user_id, user_id);
    assert_ne!(second.refresh_token, first.refresh_token);

    let reuse = users
        .rotate_refresh_token(rotate(&first.refresh_token))
        .await
        .unwrap_err();
    assert_eq!(reuse.code(), Code::Unauthenticated);
    let newest = users
        .rotate_refresh_token(rotate(&second.refresh_token))
        .await
        .unwrap_err();
    assert_eq!(newest.code(), Code::Unauthenticated, "the family is revoked");

    let other = users.issue_refresh_token(issue(600)).await.unwrap().into_inner();
    for _ in 0..2 {
        users
            .revoke_refresh_token(common::with_token(
                pb::RevokeRefreshTokenRequest {
                    refresh_token: other.refresh_token.clone(),
                    access_ttl_secs: 60,
                },
                &service,
            ))
            .await
            .expect("revoking is idempotent");
    }
    let revoked = users
        .rotate_refresh_token(rotate(&other.refresh_token))
        .await
        .unwrap_err();
    assert_eq!(revoked.code(), Code::Unauthenticated);
    let zero_ttl = users.issue_refresh_token(issue(0)).await.unwrap_err();
    assert_eq!(zero_ttl.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn refresh_token_rpcs_need_a_service_token() {
    let stack = common::spawn_stack().await;
    let (user_id, user_token) = common::register(stack.core.addr).await;
    let mut users = users_client(&stack).await;

    let issue = users
        .issue_refresh_token(common::with_token(
            pb::IssueRefreshTokenRequest {
                user_id,
                ttl_secs: 600,
            },
            &user_token,
        ))
        .await
        .unwrap_err();
    let rotate = users
        .rotate_refresh_token(common::with_token(
            pb::RotateRefreshTokenRequest {
                refresh_token: "x".into(),
                ttl_secs: 600,
                family_ttl_secs: 0,
                access_ttl_secs: 0,
            },
            &user_token,
        ))
        .await
        .unwrap_err();
    let revoke = users
        .revoke_refresh_token(tonic::Request::new(pb::RevokeRefreshTokenRequest {
            refresh_token: "x".into(),
            access_ttl_secs: 60,
        }))
        .await
        .unwrap_err();

    assert_eq!(issue.code(), Code::PermissionDenied);
    assert_eq!(rotate.code(), Code::PermissionDenied);
    assert_eq!(revoke.code(), Code::Unauthenticated);
}
