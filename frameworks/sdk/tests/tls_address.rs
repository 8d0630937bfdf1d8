//! A framework configured for TLS never talks plain text: an `http://`
//! master address with `FrameworkConfig::tls` set is refused before any
//! connection (the bearer token would otherwise cross in the clear).

use agora_sdk::{Client, Driver, FrameworkConfig, Scheduler, SdkError};

struct Nothing;
impl Scheduler for Nothing {
    async fn offers(&mut self, _c: &Client, _o: Vec<agora_sdk::Offer>) {}
}

#[tokio::test]
async fn tls_with_an_http_master_is_refused() {
    let dir = std::env::temp_dir().join(format!("agora-sdk-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ca = agora_tls::ca::init_dir(&dir, 1).unwrap();
    let tls = std::sync::Arc::new(agora_tls::client_config(&ca, None).unwrap());
    let mut cfg = FrameworkConfig::new("http://127.0.0.1:1", "t");
    cfg.tls = Some(tls);
    let err = Driver::new(cfg, Nothing).run().await.unwrap_err();
    assert!(
        matches!(&err, SdkError::Address { message, .. } if message.contains("not https://")),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
