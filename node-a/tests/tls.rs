//! MQTT over TLS and mutual TLS, with certificates from `certs/gen.sh`: a
//! client certificate's CN becomes the user name.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use node_a::protocol::{codec, reason, Connect, Packet, Protocol};
use node_a::tls::TlsConfig;
use node_a::NodeAConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

fn gen_certs(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs/gen.sh");
    let st = std::process::Command::new("bash")
        .arg(script)
        .arg(dir)
        .arg("device-7")
        .status()
        .expect("run certs/gen.sh (needs openssl)");
    assert!(st.success());
}

fn pem_certs(p: &Path) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    rustls_pemfile::certs(&mut std::fs::read(p).unwrap().as_slice())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn client_config(dir: &Path, with_cert: bool) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for c in pem_certs(&dir.join("ca.pem")) {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    if with_cert {
        let key = rustls_pemfile::private_key(
            &mut std::fs::read(dir.join("client.key")).unwrap().as_slice(),
        )
        .unwrap()
        .unwrap();
        b.with_client_auth_cert(pem_certs(&dir.join("client.pem")), key)
            .unwrap()
    } else {
        b.with_no_client_auth()
    }
}

/// CONNECT (v5) over TLS; returns the CONNACK reason code.
async fn connack_over_tls(addr: std::net::SocketAddr, cfg: ClientConfig) -> u8 {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let mut s = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let mut buf = BytesMut::new();
    let c = Connect {
        protocol: Some(Protocol::V5),
        client_id: "tls-client".into(),
        clean_start: true,
        keep_alive: 30,
        ..Connect::default()
    };
    codec::encode(&Packet::Connect(Box::new(c)), Protocol::V5, &mut buf, None).unwrap();
    s.write_all(&buf).await.unwrap();
    let mut rbuf = BytesMut::new();
    loop {
        if let Some(p) = codec::decode(&mut rbuf, Some(Protocol::V5), 1 << 20).unwrap() {
            match p {
                Packet::ConnAck(a) => return a.reason,
                other => panic!("expected CONNACK, got {other:?}"),
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read_buf(&mut rbuf))
            .await
            .expect("bounded")
            .unwrap();
        assert!(n > 0, "closed before CONNACK");
    }
}

#[tokio::test]
async fn tls_and_mutual_tls_with_cn_as_username() {
    let dir = tempfile::tempdir().unwrap();
    gen_certs(dir.path());
    let passwd = dir.path().join("passwd");
    node_a::auth::PasswordFile::set_user(&passwd, "someone", "else").unwrap();
    let node = node_a::run(NodeAConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        sys_interval_secs: 0,
        allow_anonymous: Some(false),
        password_file: Some(passwd),
        tls: Some(TlsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert_file: dir.path().join("server.pem"),
            key_file: dir.path().join("server.key"),
            client_ca_file: Some(dir.path().join("ca.pem")),
            require_client_cert: false,
            cn_as_username: true,
        }),
        ..NodeAConfig::default()
    })
    .await
    .unwrap();
    let addr = node.tls_addr.unwrap();
    // With a client certificate: authenticated as CN=device-7.
    assert_eq!(
        connack_over_tls(addr, client_config(dir.path(), true)).await,
        reason::SUCCESS
    );
    // TLS without a certificate and without credentials: anonymous, refused.
    assert_eq!(
        connack_over_tls(addr, client_config(dir.path(), false)).await,
        reason::NOT_AUTHORIZED
    );
    node.shutdown().await;
}
