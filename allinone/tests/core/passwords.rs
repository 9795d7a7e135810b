//! Password rules and argon2 costs come from configuration, and hashing runs
//! under a concurrency bound.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use chat_common::ErrorCode;
use chat_common::token::{Role, TokenKeys};
use chat_core::store::{AccountStore, SeaStore};
use chat_proto::chat::v1::{self as pb, user_service_client::UserServiceClient};
use common::*;

#[tokio::test]
async fn password_rules_and_argon2_costs_are_configurable() {
    let db = chat_testkit::TestDatabase::new().await.unwrap();
    let worker = spawn_worker().await;
    let core = spawn_core_with(&db.url, &worker.url, |s| {
        s.password_min_length = 12;
        s.argon2_memory_kib = 8192;
        s.argon2_iterations = 1;
    })
    .await;
    let service = TokenKeys::new(SECRET.as_bytes())
        .sign("tests", Role::Service, Duration::from_secs(60))
        .unwrap();
    let mut users = UserServiceClient::new(channel(core.addr).await);

    let short = pb::RegisterRequest {
        username: "policy_user".into(),
        password: "elevenchars".into(),
    };
    let refused = users.register(with_token(short, &service)).await.unwrap_err();
    assert_eq!(ErrorCode::from_status(&refused), ErrorCode::Invalid);
    assert!(refused.message().contains("12 to 256"), "{}", refused.message());

    let long_enough = pb::RegisterRequest {
        username: "policy_user".into(),
        password: "twelve chars".into(),
    };
    users.register(with_token(long_enough, &service)).await.unwrap();
    let store = SeaStore::new(
        chat_core::store::connect(&db.url, 1, Duration::from_secs(5))
            .await
            .unwrap(),
    );
    let stored = store.find_user("policy_user").await.unwrap().unwrap();
    assert!(
        stored.password_hash.starts_with("$argon2id$"),
        "{}",
        stored.password_hash
    );
    assert!(
        stored.password_hash.contains("m=8192,t=1,p=1"),
        "{}",
        stored.password_hash
    );

    let login = pb::VerifyPasswordRequest {
        username: "policy_user".into(),
        password: "twelve chars".into(),
    };
    assert!(users.verify_password(with_token(login, &service)).await.is_ok());
}

#[tokio::test]
async fn password_checks_beyond_the_bound_are_unavailable_with_a_retry_hint() {
    let db = chat_testkit::TestDatabase::new().await.unwrap();
    let worker = spawn_worker().await;
    let core = spawn_core_with(&db.url, &worker.url, |s| {
        s.password_hash_concurrency = Some(1);
        s.password_hash_queue_ms = 0;
    })
    .await;
    let service = TokenKeys::new(SECRET.as_bytes())
        .sign("tests", Role::Service, Duration::from_secs(60))
        .unwrap();
    let channel = channel(core.addr).await;

    // Sixteen logins of unknown users at once; one hash (19 MiB, tens of ms) runs at a time.
    let logins: Vec<_> = (0..16)
        .map(|i| {
            let mut users = UserServiceClient::new(channel.clone());
            let request = with_token(
                pb::VerifyPasswordRequest {
                    username: format!("nobody_{i}"),
                    password: "whatever it is".into(),
                },
                &service,
            );
            tokio::spawn(async move { users.verify_password(request).await })
        })
        .collect();
    let mut refused = 0;
    let mut checked = 0;
    for login in logins {
        let status = login.await.unwrap().unwrap_err();
        match ErrorCode::from_status(&status) {
            ErrorCode::Unauthenticated => checked += 1,
            ErrorCode::Unavailable => {
                refused += 1;
                assert_eq!(status.code(), tonic::Code::Unavailable);
                let retry = status.metadata().get("x-retry-after-ms").unwrap();
                assert_eq!(retry.to_str().unwrap(), "1000");
            }
            other => panic!("unexpected {other:?}: {status:?}"),
        }
    }
    assert!(checked >= 1, "the slot was used");
    assert!(
        refused >= 1,
        "the excess was refused rather than queued without bound"
    );
}
