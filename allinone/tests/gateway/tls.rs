//! TLS terminated by the gateway itself (rustls): HTTPS works with a real
//! certificate chain, and every response carries HSTS.

#![allow(clippy::unwrap_used)]

#[tokio::test]
async fn the_gateway_serves_https_with_hsts() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();

    // chat-core is not needed for /healthz; nothing connects to it until a call.
    let gateway = gateway::Application::build(gateway::Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        chat_core_url: "http://127.0.0.1:9".into(),
        jwt_secret: Some(chat_testkit::SECRET.into()),
        tls_cert: Some(cert.clone()),
        tls_key: Some(key.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let port = gateway.local_addr().port();
    tokio::spawn(gateway.run_until_stopped(std::future::pending()));

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
        .build()
        .unwrap();
    let response = client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let hsts = response
        .headers()
        .get("strict-transport-security")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(hsts.starts_with("max-age="), "{hsts}");

    // Plain HTTP on the TLS port gets no page.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
}

#[tokio::test]
async fn a_certificate_without_a_key_is_refused_at_start() {
    let result = gateway::Application::build(gateway::Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        jwt_secret: Some(chat_testkit::SECRET.into()),
        tls_cert: Some("/nonexistent.pem".into()),
        ..Default::default()
    })
    .await;
    assert!(result.is_err());
}
