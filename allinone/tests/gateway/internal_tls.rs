//! Mutual TLS on every internal gRPC hop: gateway → chat-core and chat-core
//! → agent-worker, with certificates generated here (`rcgen`). A turn goes
//! through; a client without a certificate, or speaking plain text, is
//! refused; a rotated certificate is served without a restart.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_common::tls::ServerTlsSettings;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use serde_json::{Value, json};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path
}

/// A leaf certificate for 127.0.0.1 signed by `ca`: (certificate, key) PEM.
fn leaf(ca: &CertifiedIssuer<'_, KeyPair>, name: &str) -> (String, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![
        SanType::DnsName(name.try_into().unwrap()),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("internal test CA");
    let (server_cert, server_key) = leaf(&ca, "localhost");
    let (client_cert, client_key) = leaf(&ca, "client");
    Pki {
        ca: write(dir.path(), "ca.pem", &ca.pem()),
        server: (
            write(dir.path(), "server.pem", &server_cert),
            write(dir.path(), "server.key", &server_key),
        ),
        client: (
            write(dir.path(), "client.pem", &client_cert),
            write(dir.path(), "client.key", &client_key),
        ),
        dir,
    }
}

/// Serving TLS with `pki`'s server certificate, requiring its clients' certificates.
fn mutual(pki: &Pki, reload_secs: u64) -> ServerTlsSettings {
    ServerTlsSettings {
        cert: Some(pki.server.0.clone()),
        key: Some(pki.server.1.clone()),
        client_ca: Some(pki.ca.clone()),
        reload_secs,
    }
}

/// A worker, chat-core and gateway with mutual TLS between them; the gateway's and chat-core's URLs.
async fn tls_stack(pki: &Pki, db: &chat_testkit::TestDatabase, reload_secs: u64) -> (String, String) {
    let worker = chat_testkit::worker(None, |s| s.tls = mutual(pki, reload_secs))
        .await
        .unwrap();
    let worker_url = format!("https://{}", worker.addr);
    let core = chat_testkit::core(&db.url, &[&worker_url], |s| {
        s.tls = mutual(pki, reload_secs);
        s.accept_user_tokens = false;
        s.agent_worker_tls_ca = Some(pki.ca.clone());
        s.agent_worker_tls_cert = Some(pki.client.0.clone());
        s.agent_worker_tls_key = Some(pki.client.1.clone());
    })
    .await
    .unwrap();
    let core_url = format!("https://{}", core.addr);
    let gateway = chat_testkit::gateway(&core_url, |s| {
        s.chat_core_tls_ca = Some(pki.ca.clone());
        s.chat_core_tls_cert = Some(pki.client.0.clone());
        s.chat_core_tls_key = Some(pki.client.1.clone());
    })
    .await
    .unwrap();
    (gateway.url(""), core_url)
}

async fn turn(http: &reqwest::Client, gateway: &str) -> Value {
    let post = |path: &str, body: Value, token: Option<&str>| {
        let mut request = http.post(format!("{gateway}{path}")).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let credentials = json!({"username": "alice", "password": "correct horse battery"});
    assert_eq!(
        post("/api/v1/auth/register", credentials.clone(), None)
            .await
            .unwrap()
            .status(),
        201
    );
    let login: Value = post("/api/v1/auth/login", credentials, None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap();
    let session: Value = post("/api/v1/sessions", json!({"agent": "echo"}), Some(token))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = format!("/api/v1/sessions/{}/messages", session["id"].as_str().unwrap());
    post(&path, json!({"content": "over mutual tls"}), Some(token))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A health check of chat-core at `url` with `tls` (none: plain text).
async fn health_check(url: &str, tls: Option<tonic::transport::ClientTlsConfig>) -> Result<(), String> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).unwrap();
    }
    let channel = endpoint.connect().await.map_err(|e| format!("connect: {e:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(drop)
        .map_err(|e| format!("call: {e:?}"))
}

fn ca_only(pki: &Pki) -> tonic::transport::ClientTlsConfig {
    tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(
        std::fs::read(&pki.ca).unwrap(),
    ))
}

fn with_client_certificate(pki: &Pki) -> tonic::transport::ClientTlsConfig {
    ca_only(pki).identity(tonic::transport::Identity::from_pem(
        std::fs::read(&pki.client.0).unwrap(),
        std::fs::read(&pki.client.1).unwrap(),
    ))
}

#[tokio::test]
async fn a_stack_with_mutual_tls_on_every_internal_hop_passes_a_turn() {
    // Arrange
    let pki = pki();
    let db = chat_testkit::TestDatabase::new().await.unwrap();
    let (gateway, core_url) = tls_stack(&pki, &db, 10).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();

    // Act
    let posted = turn(&http, &gateway).await;
    let without_certificate = health_check(&core_url, Some(ca_only(&pki))).await;
    let plain_text = health_check(&core_url.replace("https://", "http://"), None).await;
    let with_certificate = health_check(&core_url, Some(with_client_certificate(&pki))).await;

    // Assert: the reply came back through both hops; only a certified client gets in.
    assert_eq!(posted["reply"]["content"], "over mutual tls", "{posted}");
    assert!(
        without_certificate.is_err(),
        "a client without a certificate got in"
    );
    assert!(plain_text.is_err(), "a plain-text client got in");
    assert!(with_certificate.is_ok(), "{with_certificate:?}");
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart() {
    // Arrange: chat-core checks its files every second.
    let pki = pki();
    let db = chat_testkit::TestDatabase::new().await.unwrap();
    let (_, core_url) = tls_stack(&pki, &db, 1).await;
    let next_ca = ca("next test CA");
    let (cert, key) = leaf(&next_ca, "localhost");
    let next_ca_pem = write(pki.dir.path(), "next-ca.pem", &next_ca.pem());
    let trusts_next = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(&next_ca_pem).unwrap(),
        ))
        .identity(tonic::transport::Identity::from_pem(
            std::fs::read(&pki.client.0).unwrap(),
            std::fs::read(&pki.client.1).unwrap(),
        ));
    assert!(health_check(&core_url, Some(trusts_next.clone())).await.is_err());

    // Act: the new certificate replaces the old one in place.
    std::fs::write(&pki.server.0, cert).unwrap();
    std::fs::write(&pki.server.1, key).unwrap();

    // Assert: a new connection is served the new certificate.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if health_check(&core_url, Some(trusts_next.clone())).await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
