//! The rate limit tiers tripping and recovering over real HTTP and
//! WebSocket connections, limits shared by two gateways over Redis, IPv6
//! clients counted by /64, the per-account login limit across addresses,
//! and the auth tier failing closed when Redis fails.

use crate::common;

use common::{PASSWORD, TestStack, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn header(response: &reqwest::Response, name: &str) -> Option<u64> {
    response.headers().get(name)?.to_str().ok()?.parse().ok()
}

async fn assert_rate_limited(response: reqwest::Response) -> anyhow::Result<()> {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(header(&response, "retry-after").is_some_and(|s| s >= 1));
    assert_eq!(header(&response, "ratelimit-remaining"), Some(0));
    assert!(header(&response, "ratelimit-limit").is_some());
    assert!(header(&response, "ratelimit-reset").is_some());
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    Ok(())
}

#[tokio::test]
async fn api_tier_limits_each_user_then_recovers() -> anyhow::Result<()> {
    // Arrange: four anonymous requests (register and login twice) fill the IP's allowance.
    let stack = TestStack::spawn_with(|s| {
        s.rate_limit_max_requests = common::nz(4);
        s.rate_limit_window_ms = Some(4000);
    })
    .await?;
    let alice = stack.user("alice").await?;
    let bob = stack.user("bob").await?;
    let agents = stack.url("/api/v1/agents");

    // Act: four requests pass, with the allowance counting down.
    let mut remaining = Vec::new();
    for _ in 0..4 {
        let response = stack.http.get(&agents).bearer_auth(&alice).send().await?;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "ratelimit-limit"), Some(4));
        remaining.push(header(&response, "ratelimit-remaining"));
    }
    let fifth = stack.http.get(&agents).bearer_auth(&alice).send().await?;

    // Assert
    assert_eq!(remaining, [Some(3), Some(2), Some(1), Some(0)]);
    assert_rate_limited(fifth).await?;
    let other_user = stack.http.get(&agents).bearer_auth(&bob).send().await?;
    assert_eq!(other_user.status(), 200, "limits are per user");
    eventually("the api limit to recover", || async {
        let response = stack.http.get(&agents).bearer_auth(&alice).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    Ok(())
}

#[tokio::test]
async fn api_tier_limits_anonymous_requests_per_ip() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn_with(|s| {
        s.rate_limit_max_requests = common::nz(2);
        s.rate_limit_window_secs = Some(600);
    })
    .await?;
    let agents = stack.url("/api/v1/agents");

    // Act
    let first = stack.http.get(&agents).send().await?;
    let second = stack.http.get(&agents).send().await?;
    let third = stack.http.get(&agents).send().await?;

    // Assert: counted even though unauthenticated; probes are not limited.
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    assert_eq!(header(&second, "ratelimit-remaining"), Some(0));
    assert_rate_limited(third).await?;
    assert_eq!(stack.http.get(stack.url("/healthz")).send().await?.status(), 200);
    Ok(())
}

#[tokio::test]
async fn auth_tier_limits_each_ip_and_username_then_recovers() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn_with(|s| {
        s.auth_rate_limit_max = common::nz(3);
        s.auth_rate_limit_window_secs = 6;
    })
    .await?;
    let login = stack.url("/api/v1/auth/login");
    let wrong = json!({"username": "mallory", "password": "not the password"});

    // Act
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(stack.http.post(&login).json(&wrong).send().await?);
    }
    let last = statuses.pop().expect("four responses");

    // Assert: three wrong passwords, then throttled; another username is not.
    for response in &statuses {
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(header(response, "ratelimit-limit"), Some(3));
    }
    assert_rate_limited(last).await?;
    let mallory = json!({"username": "MALLORY", "password": PASSWORD});
    let response = stack.http.post(&login).json(&mallory).send().await?;
    assert_eq!(response.status(), 429, "usernames count case-insensitively");
    let token = stack.user("alice").await?;
    assert!(!token.is_empty());
    eventually("the auth limit to recover", || async {
        let response = stack.http.post(&login).json(&wrong).send().await.ok()?;
        (response.status() == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    Ok(())
}

#[tokio::test]
async fn auth_tier_counts_refreshes() -> anyhow::Result<()> {
    // Arrange: register and login use two of the three.
    let stack = TestStack::spawn_with(|s| {
        s.auth_rate_limit_max = common::nz(3);
        s.auth_rate_limit_window_secs = 600;
    })
    .await?;
    stack.register("alice").await?;
    let pair = stack.login("alice").await?;
    let refresh = |token: &Value| {
        stack
            .http
            .post(stack.url("/api/v1/auth/refresh"))
            .json(&json!({"refresh_token": token}))
            .send()
    };

    // Act: each refresh spends its token and hands out the next.
    let first = refresh(&pair["refresh_token"]).await?;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await?;
    let second = refresh(&first["refresh_token"]).await?;
    assert_eq!(second.status(), 200);
    assert_eq!(header(&second, "ratelimit-remaining"), Some(1));
    let second: Value = second.json().await?;
    let third = refresh(&second["refresh_token"]).await?;

    // Assert: refreshes have their own count per client IP.
    assert_eq!(third.status(), 200);
    let third: Value = third.json().await?;
    let fourth = refresh(&third["refresh_token"]).await?;
    assert_rate_limited(fourth).await?;
    Ok(())
}

#[tokio::test]
async fn message_tier_counts_rest_posts_and_ws_sends_then_recovers() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn_with(|s| {
        s.message_rate_limit = common::nz(2);
        s.message_rate_limit_window_secs = 4;
    })
    .await?;
    let token = stack.user("alice").await?;
    let session_id = stack.session(&token, "echo").await?;
    let messages = stack.url(&format!("/api/v1/sessions/{session_id}/messages"));
    let mut ws = stack.ws(&token).await?;
    ws.subscribe(&session_id).await;

    // Act: one REST post and one WebSocket send use the allowance.
    let posted = stack
        .http
        .post(&messages)
        .bearer_auth(&token)
        .json(&json!({"content": "one"}))
        .send()
        .await?;
    assert_eq!(posted.status(), 200);
    assert_eq!(header(&posted, "ratelimit-remaining"), Some(1));
    ws.send(json!({"type": "send", "session_id": session_id, "client_msg_id": "c2", "content": "two"}))
        .await;
    ws.recv_until(|f| f["type"] == "ack" && f["client_msg_id"] == "c2")
        .await;
    ws.send(json!({"type": "send", "session_id": session_id, "client_msg_id": "c3", "content": "three"}))
        .await;
    let frames = ws.recv_until(|f| f["type"] == "error").await;
    let rest = stack
        .http
        .post(&messages)
        .bearer_auth(&token)
        .json(&json!({"content": "four"}))
        .send()
        .await?;

    // Assert: the socket gets an error frame and stays open; REST gets 429.
    let error = frames.last().expect("error frame");
    assert_eq!(
        (error["code"].as_str(), error["client_msg_id"].as_str()),
        (Some("rate_limited"), Some("c3")),
        "{error}"
    );
    assert!(
        error["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{error}"
    );
    assert_rate_limited(rest).await?;
    ws.send(json!({"type": "ping"})).await;
    ws.recv_until(|f| f["type"] == "pong").await;

    // The allowance comes back: a resend is accepted.
    let mut attempt = 0;
    loop {
        attempt += 1;
        assert!(attempt < 200, "message limit did not recover");
        ws.send(json!({"type": "send", "session_id": session_id, "client_msg_id": "c3", "content": "three"}))
            .await;
        let frames = ws
            .recv_until(|f| (f["type"] == "ack" || f["type"] == "error") && f["client_msg_id"] == "c3")
            .await;
        if frames.last().is_some_and(|f| f["type"] == "ack") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let history = stack.history(&token, &session_id).await?;
    let users = history.iter().filter(|m| m["role"] == "user").count();
    assert_eq!(users, 3, "the rejected send was never stored: {history:?}");
    Ok(())
}

#[tokio::test]
async fn two_gateways_sharing_redis_share_the_limit() -> anyhow::Result<()> {
    let Some(redis_url) = chat_testkit::needs::redis() else {
        return Ok(());
    };
    // Arrange: two gateways, one Redis, a key prefix of this test's own.
    let prefix = format!("test:{}", uuid::Uuid::new_v4());
    let shared = move |s: &mut gateway::Settings| {
        s.redis_url = Some(redis_url.as_str().into());
        s.rate_limit_redis_prefix = prefix;
        s.rate_limit_max_requests = common::nz(4);
        s.rate_limit_window_secs = Some(600);
    };
    let stack = TestStack::spawn_with(shared.clone()).await?;
    let second = stack.spawn_gateway(shared).await?;
    let token = stack.user("alice").await?;
    let urls = [
        stack.url("/api/v1/agents"),
        format!("http://{second}/api/v1/agents"),
    ];

    // Act: alternate between the gateways.
    let mut statuses = Vec::new();
    for i in 0..4 {
        let response = stack.http.get(&urls[i % 2]).bearer_auth(&token).send().await?;
        statuses.push((
            response.status().as_u16(),
            header(&response, "ratelimit-remaining"),
        ));
    }
    let fifth = stack.http.get(&urls[0]).bearer_auth(&token).send().await?;
    let sixth = stack.http.get(&urls[1]).bearer_auth(&token).send().await?;

    // Assert: one allowance of four between them.
    assert_eq!(
        statuses,
        [(200, Some(3)), (200, Some(2)), (200, Some(1)), (200, Some(0))]
    );
    assert_rate_limited(fifth).await?;
    assert_rate_limited(sixth).await?;
    Ok(())
}

/// A login for `username` said to come from `ip` (the gateway trusts `X-Forwarded-For` here).
async fn login_from(stack: &TestStack, ip: &str, username: &str) -> anyhow::Result<reqwest::Response> {
    Ok(stack
        .http
        .post(stack.url("/api/v1/auth/login"))
        .header("x-forwarded-for", ip)
        .json(&json!({"username": username, "password": "not the password"}))
        .send()
        .await?)
}

#[tokio::test]
async fn account_tier_limits_logins_to_one_account_from_many_addresses() -> anyhow::Result<()> {
    // Arrange: each address is far from its own auth limit.
    let stack = TestStack::spawn_with(|s| {
        s.trust_forwarded_for = true;
        s.account_rate_limit_max = common::nz(3);
        s.account_rate_limit_window_secs = 600;
    })
    .await?;

    // Act: one guess each from four addresses.
    let mut statuses = Vec::new();
    for i in 1..=4 {
        statuses.push(login_from(&stack, &format!("198.51.100.{i}"), "victim").await?);
    }
    let fourth = statuses.pop().expect("four responses");

    // Assert: the account is throttled, whatever the address; other accounts are not.
    for response in &statuses {
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_rate_limited(fourth).await?;
    let fresh_address = login_from(&stack, "203.0.113.9", "VICTIM").await?;
    assert_eq!(
        fresh_address.status(),
        429,
        "counted per account, case-insensitively"
    );
    let other = login_from(&stack, "198.51.100.1", "bystander").await?;
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
    Ok(())
}

#[tokio::test]
async fn ipv6_clients_are_counted_by_their_64_bit_prefix() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn_with(|s| {
        s.trust_forwarded_for = true;
        s.rate_limit_max_requests = common::nz(2);
        s.rate_limit_window_secs = Some(600);
    })
    .await?;
    let agents = stack.url("/api/v1/agents");
    let from = |ip: &'static str| stack.http.get(&agents).header("x-forwarded-for", ip).send();

    // Act: three addresses of one /64 (anonymous requests count per address).
    let first = from("2001:db8:1:2::1").await?;
    let second = from("2001:db8:1:2:aaaa::2").await?;
    let third = from("2001:db8:1:2:ffff:ffff:ffff:ffff").await?;
    let neighbour = from("2001:db8:1:3::1").await?;

    // Assert
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (401, 401));
    assert_rate_limited(third).await?;
    assert_eq!(neighbour.status(), 401, "another /64 has its own allowance");
    Ok(())
}

#[tokio::test]
async fn auth_tier_fails_closed_and_api_tier_open_when_redis_fails() -> anyhow::Result<()> {
    let Some(redis_url) = chat_testkit::needs::redis() else {
        return Ok(());
    };
    // Arrange: the gateway reaches Redis through a proxy the test can cut.
    let redis = chat_testkit::socket_addr_of(&redis_url)?;
    let proxy = chat_testkit::CuttableProxy::start(redis).await?;
    let through_proxy = chat_testkit::with_host(&redis_url, proxy.addr());
    let stack = TestStack::spawn_with(move |s| {
        s.redis_url = Some(through_proxy.as_str().into());
        s.rate_limit_redis_prefix = format!("test:{}", uuid::Uuid::new_v4());
    })
    .await?;
    let token = stack.user("alice").await?;

    // Act: Redis goes away.
    proxy.cut();
    let login = stack
        .http
        .post(stack.url("/api/v1/auth/login"))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await?;
    let agents = stack
        .http
        .get(stack.url("/api/v1/agents"))
        .bearer_auth(&token)
        .send()
        .await?;

    // Assert: logins are refused until limits can be counted again; the API goes on.
    assert_eq!(login.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(header(&login, "retry-after").is_some_and(|s| s >= 1));
    let body: Value = login.json().await?;
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert_eq!(agents.status(), 200, "the api tier fails open");
    proxy.restore();
    eventually("logins to be counted again", || async {
        let response = stack
            .http
            .post(stack.url("/api/v1/auth/login"))
            .json(&json!({"username": "alice", "password": PASSWORD}))
            .send()
            .await
            .ok()?;
        (response.status() != StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;
    Ok(())
}
