//! External identities: `(issuer, subject)` mapped to one local user, created
//! on first sight (SQLite always, Postgres when `TEST_DATABASE_URL` is set).

#![allow(clippy::unwrap_used)]

use crate::common::{self, fresh_store};

use std::time::Duration;

use chat_common::token::Role;

use chat_proto::chat::v1::{self as pb, user_service_client::UserServiceClient};
use tonic::Code;

#[tokio::test]
async fn an_external_identity_maps_to_one_user_created_on_first_sight() {
    let (store, _db) = fresh_store().await;

    let (first, created) = store.ensure_external_user("https://idp", "alice").await.unwrap();
    let (again, created_again) = store.ensure_external_user("https://idp", "alice").await.unwrap();
    let (other_issuer, _) = store
        .ensure_external_user("https://other", "alice")
        .await
        .unwrap();

    assert!(created);
    assert!(!created_again);
    assert_eq!(first, again);
    assert_ne!(first, other_issuer, "subjects are scoped by issuer");
}

#[tokio::test]
async fn concurrent_first_sights_create_one_user() {
    let (store, _db) = fresh_store().await;
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.ensure_external_user("https://idp", "bob").await })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap().unwrap().0);
    }
    assert_eq!(ids.len(), 1);
}

#[tokio::test]
async fn ensure_external_user_is_for_services_and_checks_its_input() {
    let stack = common::spawn_stack().await;
    let (_, user_token) = common::register(stack.core.addr).await;
    let service = common::keys()
        .sign("tests", Role::Service, Duration::from_secs(600))
        .unwrap();
    let mut users = UserServiceClient::new(common::channel(stack.core.addr).await);
    let request = |issuer: &str, subject: &str, token: &str| {
        common::with_token(
            pb::EnsureExternalUserRequest {
                issuer: issuer.into(),
                subject: subject.into(),
            },
            token,
        )
    };

    let first = users
        .ensure_external_user(request("https://idp", "carol", &service))
        .await
        .unwrap()
        .into_inner();
    let again = users
        .ensure_external_user(request("https://idp", "carol", &service))
        .await
        .unwrap()
        .into_inner();
    let as_user = users
        .ensure_external_user(request("https://idp", "carol", &user_token))
        .await
        .unwrap_err();
    let empty = users
        .ensure_external_user(request("https://idp", "", &service))
        .await
        .unwrap_err();
    let long = users
        .ensure_external_user(request(&"i".repeat(513), "carol", &service))
        .await
        .unwrap_err();

    assert!(first.created);
    assert_eq!((again.user_id, again.created), (first.user_id, false));
    assert_eq!(as_user.code(), Code::PermissionDenied);
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert_eq!(long.code(), Code::InvalidArgument);
}
