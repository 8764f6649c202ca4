//! TLS on the node's listener, with real handshakes: a rustls client and reqwest over
//! HTTPS; development certificates; the minimum protocol version; certificate files
//! replaced under load; certificates refused at start with an error that says why.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use runplane_node::tls::{CertSource, MinVersion, TlsSettings};
use runplane_node::{Node, NodeConfig};
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::ADMIN;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test CA that issues leaves for `localhost` and 127.0.0.1.
struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).expect("self-signed CA");
        TestCa { pem: cert.pem(), issuer: rcgen::Issuer::new(params, key) }
    }

    /// A leaf named `cn`, valid from `from` to `until` (relative to now); its PEM
    /// certificate and key.
    fn leaf(&self, cn: &str, from: time::Duration, until: time::Duration) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".into()]).expect("names");
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + from;
        params.not_after = now + until;
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        (cert.pem(), key.serialize_pem())
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::pem::PemObject::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(c.expect("CA pem")).expect("add root");
        }
        roots
    }
}

fn roots_from(pem_file: &Path) -> rustls::RootCertStore {
    let pem = std::fs::read(pem_file).expect("read CA");
    let mut roots = rustls::RootCertStore::empty();
    for c in <CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(&pem) {
        roots.add(c.expect("CA pem")).expect("add root");
    }
    roots
}

/// A TLS connection to `addr` as `localhost`, offering only `versions`.
async fn connect(
    addr: SocketAddr,
    roots: rustls::RootCertStore,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(ServerName::try_from("localhost").expect("name"), tcp).await
}

/// SHA-256 of the leaf the server presented on `stream`.
fn presented(stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    let (_, session) = stream.get_ref();
    hex::encode(Sha256::digest(session.peer_certificates().expect("peer certificates")[0].as_ref()))
}

fn fingerprint(pem: &str) -> String {
    let der = <CertificateDer as rustls::pki_types::pem::PemObject>::from_pem_slice(pem.as_bytes()).expect("pem");
    hex::encode(Sha256::digest(der.as_ref()))
}

/// One `GET /livez` on an open connection (HTTP/1.1 keep-alive); its status.
async fn livez(stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> u16 {
    stream.write_all(b"GET /livez HTTP/1.1\r\nhost: localhost\r\n\r\n").await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // The answer is small and carries a content-length: read until the body is in.
    loop {
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "the connection closed: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                .unwrap_or(0);
            if body.len() >= len {
                return head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
            }
        }
    }
}

async fn start(settings: TlsSettings, data: &Path) -> anyhow::Result<runplane_node::RunningNode> {
    let mut config = NodeConfig::embedded("127.0.0.1:0".parse().expect("addr"), data.to_path_buf());
    config.admin_token = Some(ADMIN.into());
    config.tls = Some(settings);
    Node::start(config).await
}

fn write(path: &Path, text: &str) {
    // Written beside and renamed: a reader sees the old file or the new one, whole.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn files(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("node.pem"), dir.join("node.key"))
}

/// `[tls] generate = true`: the node makes a development CA and leaf at first start,
/// serves HTTPS with it to a client that trusts `<data_dir>/tls/ca.pem`, keeps the CA
/// across restarts, and writes its keys with mode 0600. Plain HTTP to the port fails.
#[tokio::test]
async fn development_certificates_serve_https_trusted_through_the_printed_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(TlsSettings::development(), dir.path()).await.expect("node starts");
    assert_eq!(running.node.scheme(), "https");
    let ca = runplane_node::tls::development_ca(dir.path());
    let pem = std::fs::read(&ca).expect("the CA is written");
    let client = reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA")).build().expect("client");
    let port = running.addr.port();
    for host in ["localhost", "127.0.0.1"] {
        let r = client.get(format!("https://{host}:{port}/v1/tenants")).bearer_auth(ADMIN).send().await.expect("https request");
        assert_eq!(r.status(), StatusCode::OK, "{host}");
    }
    assert!(reqwest::get(format!("http://127.0.0.1:{port}/livez")).await.is_err_and(|e| !e.is_status()), "plain HTTP to a TLS port gets no answer");
    #[cfg(unix)]
    for key in ["ca.key", "node.key"] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("tls").join(key)).expect("key file").permissions().mode();
        assert_eq!(mode & 0o077, 0, "{key} is private");
    }
    let first = running.node.reload_tls().expect("reload").expect("tls").sha256;
    running.drain().await;

    let again = start(TlsSettings::development(), dir.path()).await.expect("node restarts");
    assert_eq!(std::fs::read(&ca).expect("CA"), pem, "the CA survives a restart");
    assert_eq!(again.node.reload_tls().expect("reload").expect("tls").sha256, first, "a current leaf is kept");
    let r = client.get(format!("https://localhost:{}/livez", again.addr.port())).send().await.expect("https");
    assert_eq!(r.status(), StatusCode::OK);
}

/// `min_version = "1.3"` refuses a client that speaks only TLS 1.2; `1.2` accepts it.
#[tokio::test]
async fn a_listener_requiring_tls_1_3_refuses_a_tls_1_2_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = TlsSettings::development();
    settings.min_version = MinVersion::Tls13;
    let strict = start(settings, dir.path()).await.expect("node starts");
    let roots = roots_from(&runplane_node::tls::development_ca(dir.path()));
    let refused = connect(strict.addr, roots.clone(), &[&rustls::version::TLS12]).await;
    let e = refused.err().expect("a TLS 1.2 client is refused");
    assert!(e.to_string().contains("ProtocolVersion") || e.to_string().contains("protocol version"), "{e}");
    let mut ok = connect(strict.addr, roots.clone(), &[&rustls::version::TLS13]).await.expect("TLS 1.3 is accepted");
    assert_eq!(livez(&mut ok).await, 200);

    let dir2 = tempfile::tempdir().expect("tempdir");
    let lenient = start(TlsSettings::development(), dir2.path()).await.expect("node starts");
    let mut old = connect(lenient.addr, roots_from(&runplane_node::tls::development_ca(dir2.path())), &[&rustls::version::TLS12]).await.expect("1.2 allowed");
    assert_eq!(livez(&mut old).await, 200);
}

/// A client that trusts another CA does not accept the node's certificate.
#[tokio::test]
async fn a_client_trusting_another_ca_refuses_the_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(TlsSettings::development(), dir.path()).await.expect("node starts");
    let other = TestCa::new("some other CA");
    let e = connect(node.addr, other.roots(), rustls::ALL_VERSIONS).await.err().expect("refused");
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
}

/// Certificate files replaced while 16 clients keep sending requests: no request fails,
/// new handshakes present the new certificate, and a connection established before
/// keeps working on the one it negotiated.
#[tokio::test]
async fn replacing_the_certificate_files_under_load_fails_no_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("test CA");
    let (cert, key) = files(dir.path());
    let (pem1, key1) = ca.leaf("first", time::Duration::minutes(-5), time::Duration::days(1));
    write(&cert, &pem1);
    write(&key, &key1);
    let settings = TlsSettings {
        source: CertSource::Files { cert: cert.clone(), key: key.clone() },
        min_version: MinVersion::Tls12,
        reload_check: Duration::from_millis(100),
    };
    let data = tempfile::tempdir().expect("tempdir");
    let node = start(settings, data.path()).await.expect("node starts");
    let mut before = connect(node.addr, ca.roots(), rustls::ALL_VERSIONS).await.expect("handshake");
    assert_eq!(presented(&before), fingerprint(&pem1));
    assert_eq!(livez(&mut before).await, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for n in 0..16 {
        let (stop, ok, failed, roots, addr) = (stop.clone(), ok.clone(), failed.clone(), ca.roots(), node.addr);
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // Half the clients keep one connection for a while, half handshake anew each time.
                let Ok(mut s) = connect(addr, roots.clone(), rustls::ALL_VERSIONS).await else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                for _ in 0..(if n % 2 == 0 { 20 } else { 1 }) {
                    if livez(&mut s).await == 200 { ok.fetch_add(1, Ordering::Relaxed) } else { failed.fetch_add(1, Ordering::Relaxed) };
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (pem2, key2) = ca.leaf("second", time::Duration::minutes(-5), time::Duration::days(1));
    // Key first, then the certificate: in between the files do not match, and the old
    // pair must keep serving.
    write(&key, &key2);
    tokio::time::sleep(Duration::from_millis(250)).await;
    write(&cert, &pem2);
    let switched = Instant::now();
    loop {
        let s = connect(node.addr, ca.roots(), rustls::ALL_VERSIONS).await.expect("handshake");
        if presented(&s) == fingerprint(&pem2) {
            break;
        }
        assert!(switched.elapsed() < Duration::from_secs(5), "new handshakes still present the old certificate");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed ({} succeeded)", ok.load(Ordering::Relaxed));
    assert!(ok.load(Ordering::Relaxed) > 100, "the clients got answers: {}", ok.load(Ordering::Relaxed));
    assert_eq!(livez(&mut before).await, 200, "the connection from before the reload still works");
    assert_eq!(presented(&before), fingerprint(&pem1), "on the certificate it negotiated");
    assert_eq!(node.node.reload_tls().expect("reload").expect("tls").sha256, fingerprint(&pem2));
}

/// A certificate that has expired, one not yet valid, a key that belongs to another
/// certificate, or a file that is not PEM stops the start with an error naming the file
/// and what to do; nothing of the key is in the message.
#[tokio::test]
async fn bad_certificate_files_are_refused_at_start_saying_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("test CA");
    let (cert, key) = files(dir.path());
    let settings = TlsSettings { source: CertSource::Files { cert: cert.clone(), key: key.clone() }, ..TlsSettings::development() };
    let refused = |settings: TlsSettings| async move {
        let data = tempfile::tempdir().expect("tempdir");
        start(settings, data.path()).await.err().map(|e| format!("{e:#}")).expect("the start is refused")
    };

    let (expired, expired_key) = ca.leaf("expired", time::Duration::days(-10), time::Duration::days(-1));
    write(&cert, &expired);
    write(&key, &expired_key);
    let e = refused(settings.clone()).await;
    assert!(e.contains("not valid now") && e.contains("renew it") && e.contains("node.pem"), "{e}");
    assert!(!e.contains("PRIVATE KEY"), "{e}");

    let (future, future_key) = ca.leaf("future", time::Duration::days(1), time::Duration::days(10));
    write(&cert, &future);
    write(&key, &future_key);
    assert!(refused(settings.clone()).await.contains("not valid now"));

    let (good, _) = ca.leaf("good", time::Duration::minutes(-5), time::Duration::days(1));
    let (_, other_key) = ca.leaf("other", time::Duration::minutes(-5), time::Duration::days(1));
    write(&cert, &good);
    write(&key, &other_key);
    let e = refused(settings.clone()).await;
    assert!(e.contains("does not belong to the certificate") && e.contains("replace both files together"), "{e}");

    write(&cert, "not a certificate");
    let e = refused(settings.clone()).await;
    assert!(e.contains("holds no certificate") || e.contains("not a PEM"), "{e}");

    std::fs::remove_file(&cert).expect("rm");
    let e = refused(settings).await;
    assert!(e.contains("cannot read the TLS certificate"), "{e}");
}

/// `[tls]` in runplane.toml: files or generate, never both or neither; the version.
#[test]
fn tls_settings_in_runplane_toml() {
    let parse = |tls: &str| NodeConfig::parse(&format!("[tls]\n{tls}"), |_| None);
    let c = parse("cert_file = \"/etc/runplane/tls.crt\"\nkey_file = \"/etc/runplane/tls.key\"\nmin_version = \"1.3\"").expect("valid");
    let t = c.tls.expect("tls");
    assert_eq!(t.source, CertSource::Files { cert: "/etc/runplane/tls.crt".into(), key: "/etc/runplane/tls.key".into() });
    assert_eq!(t.min_version, MinVersion::Tls13);
    assert_eq!(parse("generate = true").expect("valid").tls.expect("tls").source, CertSource::Development);
    for (bad, says) in [
        ("min_version = \"1.3\"", "needs cert_file and key_file"),
        ("cert_file = \"a\"", "needs cert_file and key_file"),
        ("generate = true\ncert_file = \"a\"\nkey_file = \"b\"", "cannot be combined"),
        ("generate = true\nmin_version = \"1.1\"", "write \"1.2\" or \"1.3\""),
        ("generate = true\nclient_auth = \"required\"", "client_auth"),
    ] {
        let problems = parse(bad).err().unwrap_or_else(|| panic!("{bad} is refused")).join("\n");
        assert!(problems.contains(says), "{bad}: {problems}");
    }
}
