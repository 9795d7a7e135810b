//! Streams opened with a user's own token (chat-core with
//! `--accept-user-tokens`) end when the token expires, after
//! `STREAM_TOKEN_GRACE_SECS`, and at once when the user signs out (a refresh
//! family revoked), on every replica the bus reaches.

use crate::common;

use std::time::Duration;

use chat_common::token::Role;
use chat_proto::chat::v1::{self as pb, user_service_client::UserServiceClient};
use chat_testkit::TestDatabase;
use common::*;
use futures::StreamExt;

/// How long a stream may take to end once it should.
const PROMPTLY: Duration = Duration::from_secs(5);

fn service_token() -> String {
    keys()
        .sign("tests", Role::Service, Duration::from_secs(600))
        .unwrap()
}

/// A refresh token of `user_id`, as the gateway gets one at login.
async fn refresh_token(addr: std::net::SocketAddr, user_id: &str) -> String {
    let mut users = UserServiceClient::new(channel(addr).await);
    let request = pb::IssueRefreshTokenRequest {
        user_id: user_id.into(),
        ttl_secs: 3600,
    };
    users
        .issue_refresh_token(with_token(request, &service_token()))
        .await
        .unwrap()
        .into_inner()
        .refresh_token
}

/// A sign-in of `user_id` as the gateway makes one at login: its refresh
/// token, and an access token of that sign-in (`sid`).
async fn sign_in(addr: std::net::SocketAddr, user_id: &str) -> (String, String) {
    let mut users = UserServiceClient::new(channel(addr).await);
    let request = pb::IssueRefreshTokenRequest {
        user_id: user_id.into(),
        ttl_secs: 3600,
    };
    let issued = users
        .issue_refresh_token(with_token(request, &service_token()))
        .await
        .unwrap()
        .into_inner();
    assert!(!issued.family_id.is_empty(), "the sign-in is named");
    let access = keys()
        .sign_user(user_id, Some(&issued.family_id), Duration::from_secs(600))
        .unwrap();
    (issued.refresh_token, access)
}

/// Whether a fresh call with `token` is accepted.
async fn accepted(addr: std::net::SocketAddr, token: &str) -> Result<(), tonic::Status> {
    client(addr)
        .await
        .list_sessions(with_token(pb::ListSessionsRequest::default(), token))
        .await
        .map(drop)
}

async fn logout(addr: std::net::SocketAddr, refresh_token: &str) {
    let mut users = UserServiceClient::new(channel(addr).await);
    let request = pb::RevokeRefreshTokenRequest {
        refresh_token: refresh_token.into(),
        access_ttl_secs: 60,
    };
    users
        .revoke_refresh_token(with_token(request, &service_token()))
        .await
        .unwrap();
}

/// A chat-core replica on a test database and the shared Redis, with a
/// worker; `None` (the test skipped) without `TEST_REDIS_URL`.
struct ReplicasOnRedis {
    db: TestDatabase,
    worker: chat_testkit::Worker,
    first: chat_testkit::Core,
}

impl ReplicasOnRedis {
    async fn start() -> Option<Self> {
        chat_testkit::needs::redis()?;
        let db = TestDatabase::new().await.unwrap();
        let worker = spawn_worker().await;
        let first = spawn_core(&db.url, &worker.url).await;
        Some(Self { db, worker, first })
    }

    /// One more replica, sharing the database and Redis.
    async fn another(&self) -> chat_testkit::Core {
        spawn_core(&self.db.url, &self.worker.url).await
    }
}

/// Reads the stream until it ends; the status it ended with.
async fn ending(events: &mut tonic::Streaming<pb::SessionEvent>, within: Duration) -> tonic::Status {
    tokio::time::timeout(within, async {
        loop {
            match events.next().await {
                Some(Ok(_)) => {}
                Some(Err(status)) => return status,
                None => panic!("the stream ended without a status"),
            }
        }
    })
    .await
    .expect("the stream ended in time")
}

#[tokio::test]
async fn a_direct_subscribe_ends_when_its_token_expires_after_the_grace() {
    // Arrange: a token that expires in 2 s, a 1 s grace.
    let db = TestDatabase::new().await.unwrap();
    let worker = spawn_worker().await;
    let core = spawn_core_with(&db.url, &worker.url, |s| s.stream_token_grace_secs = 1).await;
    let (user_id, token) = register(core.addr).await;
    let session = create_session(core.addr, &token).await;
    let short = keys().sign(&user_id, Role::User, Duration::from_secs(2)).unwrap();
    let opened = std::time::Instant::now();
    let mut events = watch(core.addr, &short, &session.id).await;

    // Act
    let status = ending(&mut events, Duration::from_secs(10)).await;

    // Assert: not before expiry plus grace (JWT expiry is in whole seconds).
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "access token expired");
    assert!(
        opened.elapsed() >= Duration::from_secs(2),
        "{:?}",
        opened.elapsed()
    );
}

#[tokio::test]
async fn a_direct_subscribe_ends_when_the_user_signs_out() {
    // Arrange
    let stack = spawn_stack().await;
    let (user_id, token) = register(stack.core.addr).await;
    let refresh = refresh_token(stack.core.addr, &user_id).await;
    let session = create_session(stack.core.addr, &token).await;
    let mut events = watch(stack.core.addr, &token, &session.id).await;
    let (_, other_token) = register(stack.core.addr).await;
    let other_session = create_session(stack.core.addr, &other_token).await;
    let mut others = watch(stack.core.addr, &other_token, &other_session.id).await;

    // Act
    logout(stack.core.addr, &refresh).await;

    // Assert: the user's stream ends, another user's does not.
    let status = ending(&mut events, PROMPTLY).await;
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "signed out; sign in again");
    send(
        stack.core.addr,
        &other_token,
        &other_session.id,
        "c1",
        "still here",
    )
    .await;
    next_matching(&mut others, |e| matches!(e, pb::session_event::Event::Message(_))).await;
}

#[tokio::test]
async fn a_reused_refresh_token_ends_the_users_streams() {
    // Arrange
    let stack = spawn_stack().await;
    let (user_id, token) = register(stack.core.addr).await;
    let refresh = refresh_token(stack.core.addr, &user_id).await;
    let session = create_session(stack.core.addr, &token).await;
    let mut events = watch(stack.core.addr, &token, &session.id).await;
    let mut users = UserServiceClient::new(channel(stack.core.addr).await);
    let rotate = || pb::RotateRefreshTokenRequest {
        refresh_token: refresh.clone(),
        ttl_secs: 3600,
        family_ttl_secs: 0,
        access_ttl_secs: 0,
    };
    users
        .rotate_refresh_token(with_token(rotate(), &service_token()))
        .await
        .unwrap();

    // Act: the spent token again, as a thief would.
    let reuse = users
        .rotate_refresh_token(with_token(rotate(), &service_token()))
        .await;

    // Assert
    assert_eq!(reuse.unwrap_err().code(), tonic::Code::Unauthenticated);
    let status = ending(&mut events, PROMPTLY).await;
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
}

#[tokio::test]
async fn signing_out_on_one_replica_ends_the_users_streams_on_another() {
    // Arrange: two replicas sharing the database and Redis.
    let Some(replicas) = ReplicasOnRedis::start().await else {
        return;
    };
    let a = &replicas.first;
    let b = replicas.another().await;
    let (user_id, token) = register(a.addr).await;
    let refresh = refresh_token(a.addr, &user_id).await;
    let session = create_session(a.addr, &token).await;
    let mut on_b = watch(b.addr, &token, &session.id).await;

    // Act
    logout(a.addr, &refresh).await;

    // Assert
    let status = ending(&mut on_b, PROMPTLY).await;
    assert_eq!(status.message(), "signed out; sign in again");
}

#[tokio::test]
async fn a_signed_out_access_token_is_refused_for_new_calls_while_other_sign_ins_keep_working() {
    // Arrange: one user signed in twice (two devices).
    let stack = spawn_stack().await;
    let (user_id, _) = register(stack.core.addr).await;
    let (refresh, laptop) = sign_in(stack.core.addr, &user_id).await;
    let (_, phone) = sign_in(stack.core.addr, &user_id).await;
    accepted(stack.core.addr, &laptop).await.expect("signed in");

    // Act
    logout(stack.core.addr, &refresh).await;

    // Assert
    let refused = accepted(stack.core.addr, &laptop).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert_eq!(refused.message(), "signed out; sign in again");
    accepted(stack.core.addr, &phone)
        .await
        .expect("the other device's sign-in is untouched");
}

#[tokio::test]
async fn a_sign_out_on_one_replica_refuses_the_access_token_on_another() {
    // Arrange: two replicas sharing the database and Redis, a stream on b.
    let Some(replicas) = ReplicasOnRedis::start().await else {
        return;
    };
    let a = &replicas.first;
    let b = replicas.another().await;
    let (user_id, _) = register(a.addr).await;
    let (refresh, laptop) = sign_in(a.addr, &user_id).await;
    let (_, phone) = sign_in(a.addr, &user_id).await;
    let session = create_session(a.addr, &laptop).await;
    let mut on_b = watch(b.addr, &laptop, &session.id).await;

    // Act
    logout(a.addr, &refresh).await;

    // Assert: once b has heard of it (its stream ended), b refuses the token too.
    let status = ending(&mut on_b, PROMPTLY).await;
    assert_eq!(status.message(), "signed out; sign in again");
    let refused = accepted(b.addr, &laptop).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    accepted(b.addr, &phone)
        .await
        .expect("another sign-in works on b");
}

#[tokio::test]
async fn a_replica_started_after_a_sign_out_refuses_its_access_token() {
    // Arrange: a sign-in revoked on one replica before the other starts.
    let Some(replicas) = ReplicasOnRedis::start().await else {
        return;
    };
    let a = &replicas.first;
    let (user_id, _) = register(a.addr).await;
    let (refresh, laptop) = sign_in(a.addr, &user_id).await;
    let (_, phone) = sign_in(a.addr, &user_id).await;
    logout(a.addr, &refresh).await;

    // Act: a replica that starts afterwards, on the same database and Redis.
    let b = replicas.another().await;

    // Assert: it has read the revocation from Redis before it serves.
    let refused = accepted(b.addr, &laptop).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert_eq!(refused.message(), "signed out; sign in again");
    accepted(b.addr, &phone)
        .await
        .expect("another sign-in works on b");
}
