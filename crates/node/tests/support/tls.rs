//! TLS on the node's listener, with real handshakes: a rustls client and reqwest over
//! HTTPS; development certificates; the minimum protocol version; certificate files
//! replaced under load; certificates refused at start with an error that says why.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use runplane_node::tls::{CertSource, ClientAuth, MinVersion, TlsSettings};
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
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).expect("self-signed CA");
        TestCa { pem: cert.pem(), issuer: rcgen::Issuer::new(params, key) }
    }

    /// A leaf named `cn`, valid from `from` to `until` (relative to now); its PEM
    /// certificate and key.
    fn leaf(&self, cn: &str, from: time::Duration, until: time::Duration) -> (String, String) {
        self.leaf_with_serial(cn, from, until, 1)
    }

    fn leaf_with_serial(&self, cn: &str, from: time::Duration, until: time::Duration, serial: u64) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".into()]).expect("names");
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + from;
        params.not_after = now + until;
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        (cert.pem(), key.serialize_pem())
    }

    /// A revocation list naming `serials`.
    fn crl(&self, serials: &[u64]) -> String {
        let now = time::OffsetDateTime::now_utc();
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(1),
            next_update: now + time::Duration::days(1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(*s),
                    revocation_time: now - time::Duration::minutes(1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).expect("crl").pem().expect("pem")
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
    let head = super::edge::response(stream).await.expect("the connection closed before the answer");
    head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status")
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
    let logs = super::captured_logs();
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
        client: None,
        admin: None,
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

    // The admin call does what SIGHUP does; a broken pair is refused and changes nothing.
    let admin = https_client_roots(&ca.pem);
    let url = format!("https://localhost:{}/v1/tls/reload", node.addr.port());
    let (pem3, key3) = ca.leaf("third", time::Duration::minutes(-5), time::Duration::days(1));
    write(&cert, &pem3);
    write(&key, &key3);
    let r = admin.post(&url).bearer_auth(ADMIN).send().await.expect("reload");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<serde_json::Value>().await.expect("json")["serving"]["sha256"], fingerprint(&pem3));
    write(&cert, "garbage");
    let r = admin.post(&url).bearer_auth(ADMIN).send().await.expect("reload");
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("previous certificate keeps serving")), "{body}");
    let s = connect(node.addr, ca.roots(), rustls::ALL_VERSIONS).await.expect("handshake");
    assert_eq!(presented(&s), fingerprint(&pem3), "the last good pair serves");
    no_key_material(logs, &[&key1, &key2, &key3]);
}

/// Nothing of a private key is in what the node logged (during this test binary so far).
fn no_key_material(logs: &std::sync::Mutex<Vec<u8>>, keys: &[&str]) {
    let text = String::from_utf8_lossy(&logs.lock().unwrap_or_else(|p| p.into_inner())).to_string();
    assert!(!text.contains("PRIVATE KEY"), "a PEM private key header was logged");
    for key in keys {
        for line in key.lines().filter(|l| !l.starts_with("-----") && l.len() >= 16) {
            assert!(!text.contains(&line[..16]), "key material was logged");
        }
    }
}

/// A certificate that has expired, one not yet valid, a key that belongs to another
/// certificate, or a file that is not PEM stops the start with an error naming the file
/// and what to do; nothing of the key is in the message.
#[tokio::test]
async fn bad_certificate_files_are_refused_at_start_saying_why() {
    let logs = super::captured_logs();
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
    for k in [&expired_key, &future_key, &other_key] {
        assert!(!e.contains(k.lines().nth(1).unwrap_or("-")), "no key in an error");
    }
    no_key_material(logs, &[&expired_key, &future_key, &other_key]);
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
    let c = NodeConfig::parse(
        "[node]\nadmin_listen = \"127.0.0.1:9090\"\n[tls]\ngenerate = true\nclient_ca_file = \"/c.pem\"\n[tls.admin]\nmin_version = \"1.3\"\nclient_auth = \"required\"",
        |_| None,
    )
    .expect("valid");
    assert_eq!(c.admin_listen, Some("127.0.0.1:9090".parse().expect("addr")));
    let admin = c.tls.expect("tls").for_admin();
    assert_eq!((admin.min_version, admin.client.map(|c| c.required)), (MinVersion::Tls13, Some(true)));
    for (bad, says) in [
        ("min_version = \"1.3\"", "needs cert_file and key_file"),
        ("cert_file = \"a\"", "needs cert_file and key_file"),
        ("generate = true\ncert_file = \"a\"\nkey_file = \"b\"", "takes one source of certificates"),
        ("generate = true\nmin_version = \"1.1\"", "write \"1.2\" or \"1.3\""),
        ("generate = true\nclient_auth = \"required\"", "client_auth"),
        ("generate = true\n[tls.admin]\nclient_auth = \"required\"", "needs tls.client_ca_file"),
        ("generate = true\n[tls.admin]\nmin_version = \"1.0\"", "write \"1.2\" or \"1.3\""),
    ] {
        let problems = parse(bad).err().unwrap_or_else(|| panic!("{bad} is refused")).join("\n");
        assert!(problems.contains(says), "{bad}: {problems}");
    }
}

/// A TLS connection presenting the client certificate `cert`/`key` (PEM).
async fn connect_as(
    addr: SocketAddr,
    roots: rustls::RootCertStore,
    cert: &str,
    key: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    connect_as_versions(addr, roots, cert, key, rustls::ALL_VERSIONS).await
}

/// One request on an open TLS connection, and its status, or the error (with TLS 1.3
/// the server's verdict on a client certificate arrives at the first read).
async fn request(stream: std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>, path: &str, token: &str) -> Result<u16, String> {
    let mut s = stream.map_err(|e| e.to_string())?;
    let head = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out);
    text.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("no answer: {text}"))
}

/// Mutual TLS with `client_auth = "optional"` and `admin_client_certificate =
/// "required"`: tenant-side routes need no certificate, the admin API does (beside the
/// token) and records it in the admin event; a certificate from another CA, an expired
/// one (saying so) and, once the revocation list names it, a revoked one are refused.
#[tokio::test]
async fn mutual_tls_identifies_admin_clients_and_refuses_foreign_expired_and_revoked_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clients = TestCa::new("client CA");
    let (ca_file, crl_file) = (dir.path().join("clients.pem"), dir.path().join("clients.crl"));
    write(&ca_file, &clients.pem);
    write(&crl_file, &clients.crl(&[]));
    let mut settings = TlsSettings::development();
    settings.reload_check = Duration::from_millis(100);
    settings.client = Some(ClientAuth { ca_file: ca_file.clone(), crl_file: Some(crl_file.clone()), required: false, admin_required: true });
    let data = tempfile::tempdir().expect("tempdir");
    let node = start(settings, data.path()).await.expect("node starts");
    let roots = roots_from(&runplane_node::tls::development_ca(data.path()));
    let (alice, alice_key) = clients.leaf_with_serial("alice", time::Duration::minutes(-5), time::Duration::days(1), 41);
    let (bob, bob_key) = clients.leaf_with_serial("bob", time::Duration::minutes(-5), time::Duration::days(1), 42);

    assert_eq!(request(connect(node.addr, roots.clone(), rustls::ALL_VERSIONS).await, "/livez", "").await, Ok(200), "no certificate needed outside the admin API");
    assert_eq!(request(connect(node.addr, roots.clone(), rustls::ALL_VERSIONS).await, "/v1/tenants", ADMIN).await, Ok(401), "the token alone is not enough");
    assert_eq!(request(connect_as(node.addr, roots.clone(), &alice, &alice_key).await, "/v1/tenants", ADMIN).await, Ok(200));
    assert_eq!(request(connect_as(node.addr, roots.clone(), &alice, &alice_key).await, "/v1/tenants", "wrong-token-0123456789abcdef").await, Ok(401), "nor the certificate alone");

    let mut s = connect_as(node.addr, roots.clone(), &bob, &bob_key).await.expect("handshake");
    let head = format!("GET /v1/audit/events?log=admin&limit=1000 HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {ADMIN}\r\nconnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.expect("write");
    let mut page = String::new();
    s.read_to_string(&mut page).await.expect("read");
    assert!(page.contains("client_certificate") && page.contains("CN=alice"), "the admin event names the certificate: {page}");

    let stranger = TestCa::new("another CA");
    let (carol, carol_key) = stranger.leaf("carol", time::Duration::minutes(-5), time::Duration::days(1));
    let e = request(connect_as(node.addr, roots.clone(), &carol, &carol_key).await, "/livez", "").await.expect_err("a certificate from another CA is refused");
    assert!(e.contains("UnknownCA") || e.contains("BadCertificate"), "{e}");

    let (old, old_key) = clients.leaf("dave", time::Duration::days(-10), time::Duration::days(-1));
    let e = request(connect_as(node.addr, roots.clone(), &old, &old_key).await, "/livez", "").await.expect_err("an expired certificate is refused");
    assert!(e.contains("CertificateExpired"), "the error says it expired: {e}");

    write(&crl_file, &clients.crl(&[42]));
    let revoked = Instant::now();
    loop {
        match request(connect_as(node.addr, roots.clone(), &bob, &bob_key).await, "/livez", "").await {
            Err(e) => {
                assert!(e.contains("CertificateRevoked"), "{e}");
                break;
            }
            Ok(_) => assert!(revoked.elapsed() < Duration::from_secs(5), "the revoked certificate is still accepted"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(request(connect_as(node.addr, roots.clone(), &alice, &alice_key).await, "/v1/tenants", ADMIN).await, Ok(200), "others still pass");
}

/// `client_auth = "required"`: a client without a certificate gets no answer at all.
#[tokio::test]
async fn required_client_auth_refuses_a_client_without_a_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clients = TestCa::new("client CA");
    let ca_file = dir.path().join("clients.pem");
    write(&ca_file, &clients.pem);
    let mut settings = TlsSettings::development();
    settings.client = Some(ClientAuth { ca_file, crl_file: None, required: true, admin_required: false });
    let data = tempfile::tempdir().expect("tempdir");
    let node = start(settings, data.path()).await.expect("node starts");
    let roots = roots_from(&runplane_node::tls::development_ca(data.path()));
    let e = request(connect(node.addr, roots.clone(), rustls::ALL_VERSIONS).await, "/livez", "").await.expect_err("refused");
    assert!(e.contains("CertificateRequired") || e.contains("HandshakeFailure"), "{e}");
    let (alice, alice_key) = clients.leaf("alice", time::Duration::minutes(-5), time::Duration::days(1));
    assert_eq!(request(connect_as(node.addr, roots, &alice, &alice_key).await, "/livez", "").await, Ok(200));
}

/// A reqwest client trusting the CA certificate `pem`.
fn https_client_roots(pem: &str) -> reqwest::Client {
    reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).expect("pem")).build().expect("client")
}

/// A reqwest client trusting the bundle in `pem_file`, presenting `identity` (PEM
/// certificate + key) if given.
fn https_client(pem_file: &Path, identity: Option<(&str, &str)>) -> reqwest::Client {
    let pem = std::fs::read(pem_file).expect("bundle");
    let mut b = reqwest::Client::builder();
    for c in reqwest::Certificate::from_pem_bundle(&pem).expect("bundle pem") {
        b = b.add_root_certificate(c);
    }
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).expect("identity"));
    }
    b.build().expect("client")
}

/// A key and a CSR for `subject`, made on the client's side.
fn csr(subject: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, subject);
    (key.serialize_pem(), params.serialize_request(&key).expect("csr").pem().expect("pem"))
}

/// The instance CA end to end on one node serving `instance_ca` certificates of a
/// 3-second lifetime: the node renews its own several times while clients keep sending
/// (none fails); a client certificate issued for a CSR identifies its holder; revoked,
/// it is refused at the next handshake; after a rotation the node serves a certificate
/// of the new authority, the old one's certificates pass during the overlap and are
/// refused after it.
#[tokio::test]
async fn the_instance_ca_renews_node_certificates_and_revokes_and_rotates() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = NodeConfig::embedded("127.0.0.1:0".parse().expect("addr"), data.path().to_path_buf());
    config.admin_token = Some(ADMIN.into());
    config.tls = Some(TlsSettings {
        source: CertSource::InstanceCa { lifetime: Duration::from_secs(3) },
        min_version: MinVersion::Tls12,
        reload_check: Duration::from_millis(100),
        client: Some(ClientAuth { ca_file: PathBuf::new(), crl_file: None, required: false, admin_required: false }),
        admin: None,
    });
    let node = Node::start(config).await.expect("node starts");
    let bundle = data.path().join("tls").join("instance-ca.pem");
    let base = format!("https://localhost:{}", node.addr.port());
    let admin = https_client(&bundle, None);

    // Renewal under load: new connections all along, so each sees what is served.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let seen = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (stop, ok, failed, seen, addr, bundle) = (stop.clone(), ok.clone(), failed.clone(), seen.clone(), node.addr, bundle.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match connect(addr, roots_from(&bundle), rustls::ALL_VERSIONS).await {
                    Ok(mut s) => {
                        seen.lock().expect("seen").insert(presented(&s));
                        if livez(&mut s).await == 200 { ok.fetch_add(1, Ordering::Relaxed) } else { failed.fetch_add(1, Ordering::Relaxed) };
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(7)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    let renewals = seen.lock().expect("seen").len();
    assert!(renewals >= 3, "the node renewed its certificate on its own: {renewals} distinct certificates in 7 s");
    assert!(renewals <= 6, "at two thirds of its lifetime (every 2 s), not at every check: {renewals} certificates in 7 s");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed across the renewals ({} succeeded)", ok.load(Ordering::Relaxed));

    // A client certificate for a CSR: the key never leaves the client.
    let (alice_key, alice_csr) = csr("alice");
    let r = admin.post(format!("{base}/v1/ca/certificates")).bearer_auth(ADMIN).json(&serde_json::json!({"kind": "client", "subject": "alice", "csr_pem": alice_csr})).send().await.expect("issue");
    assert_eq!(r.status(), StatusCode::CREATED);
    let issued: serde_json::Value = r.json().await.expect("json");
    assert!(!issued.to_string().contains("PRIVATE KEY"), "no key in the answer");
    let alice = issued["certificate_pem"].as_str().expect("pem").to_owned();
    let serial = issued["certificate"]["serial"].as_str().expect("serial").to_owned();
    let as_alice = https_client(&bundle, Some((&alice, &alice_key)));
    let r = as_alice.get(format!("{base}/v1/audit/events?log=admin&limit=1000")).bearer_auth(ADMIN).send().await.expect("as alice");
    assert_eq!(r.status(), StatusCode::OK);
    let events = r.text().await.expect("text");
    assert!(events.contains("ca.issue") && !events.contains("PRIVATE KEY"), "issuing is an admin event, without key material");
    assert_eq!(request(connect_as(node.addr, roots_from(&bundle), &alice, &alice_key).await, "/livez", "").await, Ok(200));

    let r = admin.post(format!("{base}/v1/ca/certificates/{serial}/revoke")).bearer_auth(ADMIN).json(&serde_json::json!({"reason": "laptop lost"})).send().await.expect("revoke");
    assert_eq!(r.status(), StatusCode::OK);
    let e = request(connect_as(node.addr, roots_from(&bundle), &alice, &alice_key).await, "/livez", "").await.expect_err("revoked: refused at the next handshake");
    assert!(e.contains("CertificateRevoked"), "{e}");

    // Rotation with a 2 s overlap.
    let (bob_key, bob_csr) = csr("bob");
    let r = admin.post(format!("{base}/v1/ca/certificates")).bearer_auth(ADMIN).json(&serde_json::json!({"kind": "client", "subject": "bob", "csr_pem": bob_csr})).send().await.expect("issue");
    let bob = r.json::<serde_json::Value>().await.expect("json")["certificate_pem"].as_str().expect("pem").to_owned();
    let r = admin.post(format!("{base}/v1/ca/rotate")).bearer_auth(ADMIN).json(&serde_json::json!({"overlap_secs": 2})).send().await.expect("rotate");
    assert_eq!(r.status(), StatusCode::CREATED);
    let rotated = Instant::now();
    let s = connect(node.addr, roots_from(&bundle), rustls::ALL_VERSIONS).await.expect("handshake after rotation");
    let (_, session) = s.get_ref();
    let leaf = session.peer_certificates().expect("certs")[0].clone();
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).expect("parse");
    assert!(parsed.issuer().to_string().contains("instance CA 2"), "the node serves a certificate of the new authority: {}", parsed.issuer());
    assert_eq!(request(connect_as(node.addr, roots_from(&bundle), &bob, &bob_key).await, "/livez", "").await, Ok(200), "the old authority's certificates pass in the overlap");
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        match request(connect_as(node.addr, roots_from(&bundle), &bob, &bob_key).await, "/livez", "").await {
            Err(e) => {
                assert!(e.contains("UnknownCA") || e.contains("BadCertificate"), "{e}");
                break;
            }
            Ok(_) => assert!(rotated.elapsed() < Duration::from_secs(6), "the retired authority is still trusted long after the overlap"),
        }
    }
    assert!(rotated.elapsed() >= Duration::from_millis(1800), "not before the overlap ended: {:?}", rotated.elapsed());
}

/// Revocation goes through the control store: two nodes of one instance (shared
/// PostgreSQL) serving instance-CA certificates; a client certificate issued on A is
/// accepted by B, and once revoked on A, B refuses it at its next handshake.
#[tokio::test]
async fn a_certificate_revoked_on_one_node_is_refused_by_another() {
    use runplane_adapters::testing;
    if !testing::service_up("PostgreSQL", &testing::postgres_url()).await
        || !testing::service_up("NATS", &testing::nats_url()).await
        || !testing::service_up("S3-compatible server (moto)", &testing::s3_endpoint()).await
    {
        return;
    }
    let instance = super::backends::SharedInstance::new().await;
    let tls = "[tls]\ninstance_ca = true\ncertificate_lifetime_secs = 3600\nreload_check_ms = 100\nclient_auth = \"optional\"\n";
    let clock: Arc<dyn runplane_node::Clock> = Arc::new(runplane_node::SystemClock);
    let a = instance.start("node-a", clock.clone(), runplane_node::entropy::Entropy::Os, tls).await;
    let b = instance.start("node-b", clock, runplane_node::entropy::Entropy::Os, tls).await;
    let bundle = |n: &super::TestNode| n.running.node.config().data_dir.join("tls").join("instance-ca.pem");
    assert_eq!(std::fs::read(bundle(&a)).expect("A's bundle"), std::fs::read(bundle(&b)).expect("B's bundle"), "one instance CA");
    let admin = https_client(&bundle(&a), None);
    let base = format!("https://localhost:{}", a.running.addr.port());

    let (key, csr_pem) = csr("alice");
    let r = admin.post(format!("{base}/v1/ca/certificates")).bearer_auth(ADMIN).json(&serde_json::json!({"kind": "client", "subject": "alice", "csr_pem": csr_pem})).send().await.expect("issue");
    assert_eq!(r.status(), StatusCode::CREATED);
    let issued: serde_json::Value = r.json().await.expect("json");
    let (cert, serial) = (issued["certificate_pem"].as_str().expect("pem").to_owned(), issued["certificate"]["serial"].as_str().expect("serial").to_owned());
    assert_eq!(request(connect_as(b.running.addr, roots_from(&bundle(&b)), &cert, &key).await, "/livez", "").await, Ok(200), "B accepts a certificate A issued");

    let r = admin.post(format!("{base}/v1/ca/certificates/{serial}/revoke")).bearer_auth(ADMIN).json(&serde_json::json!({})).send().await.expect("revoke");
    assert_eq!(r.status(), StatusCode::OK);
    let revoked = Instant::now();
    loop {
        match request(connect_as(b.running.addr, roots_from(&bundle(&b)), &cert, &key).await, "/livez", "").await {
            Err(e) => {
                assert!(e.contains("CertificateRevoked"), "{e}");
                break;
            }
            Ok(_) => assert!(revoked.elapsed() < Duration::from_secs(5), "B still accepts the certificate revoked on A"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("a certificate revoked on A was refused by B {:?} later", revoked.elapsed());
    drop((a, b));
    instance.remove().await;
}

/// The leader deletes the records of certificates expired over 30 days ago and keeps
/// the rest.
#[tokio::test]
async fn the_leader_prunes_records_of_long_expired_certificates() {
    let node = super::TestNode::start(|c| c.control.lease_ttl = Duration::from_millis(1000)).await;
    let (s, body) = node.admin(reqwest::Method::POST, "/v1/ca", None).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (_, csr_pem) = csr("current");
    let (s, issued) = node.admin(reqwest::Method::POST, "/v1/ca/certificates", Some(serde_json::json!({"kind": "client", "subject": "current", "csr_pem": csr_pem}))).await;
    assert_eq!(s, StatusCode::CREATED, "{issued}");
    // A record as an issue two months ago would have left it (the store is the node's
    // own control.db, opened beside it).
    let store = runplane_control::ControlStore::open(&runplane_control::Home::Embedded, &node.running.node.config().data_dir, Duration::from_secs(5)).await.expect("control store");
    let mine = issued["certificate"]["serial"].as_str().expect("serial").to_owned();
    assert!(store.documents("ca.certificate").await.expect("documents").iter().any(|(id, _)| *id == mine), "the store opened is the node's");
    let old = serde_json::json!({"serial": "0abc", "authority": 1, "kind": "client", "subject": "old", "not_after": "2026-09-01T00:00:00.000000000Z", "issued_at": "2026-08-01T00:00:00.000000000Z", "revoked_at": null, "revocation_reason": null});
    store.put_document("ca.certificate", "0abc", &old.to_string(), "2026-08-01T00:00:00Z").await.expect("put");
    let started = Instant::now();
    loop {
        let (_, list) = node.admin(reqwest::Method::GET, "/v1/ca/certificates", None).await;
        let subjects: Vec<&str> = list["items"].as_array().expect("items").iter().filter_map(|c| c["subject"].as_str()).collect();
        if !subjects.contains(&"old") {
            assert_eq!(subjects, ["current"], "the current one stays");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the long-expired record was not pruned: {subjects:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `[node] admin_listen` with `[tls.admin] client_auth = "required"`: the admin API is
/// served only on its own listener, which asks every client for a certificate, while
/// the tenant listener serves tenant traffic without one; each answers 404 for the
/// other's routes, saying where they are.
#[tokio::test]
async fn a_separate_admin_listener_serves_the_admin_api_under_its_own_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clients = TestCa::new("client CA");
    let ca_file = dir.path().join("clients.pem");
    write(&ca_file, &clients.pem);
    let mut settings = TlsSettings::development();
    settings.client = Some(ClientAuth { ca_file, crl_file: None, required: false, admin_required: false });
    settings.admin = Some(runplane_node::tls::ListenerOverride { min_version: Some(MinVersion::Tls13), client_required: Some(true) });
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = NodeConfig::embedded("127.0.0.1:0".parse().expect("addr"), data.path().to_path_buf());
    config.admin_token = Some(ADMIN.into());
    config.tls = Some(settings);
    config.admin_listen = Some("127.0.0.1:0".parse().expect("addr"));
    let node = Node::start(config).await.expect("node starts");
    let admin_addr = node.admin_addr.expect("an admin listener");
    let dev_ca = runplane_node::tls::development_ca(data.path());
    let (ops, ops_key) = clients.leaf("ops", time::Duration::minutes(-5), time::Duration::days(1));
    let admin = https_client(&dev_ca, Some((&ops, &ops_key)));
    let admin_base = format!("https://localhost:{}", admin_addr.port());
    let r = admin.post(format!("{admin_base}/v1/tenants")).bearer_auth(ADMIN).json(&serde_json::json!({"id": "acme", "mode": "shared"})).send().await.expect("create");
    assert_eq!(r.status(), StatusCode::CREATED);
    let key = r.json::<serde_json::Value>().await.expect("json")["api_key"].as_str().expect("key").to_owned();
    let r = admin.post(format!("{admin_base}/v1/capabilities?name=hello&version=1.0.0")).bearer_auth(ADMIN).body(runplane_examples::HELLO.to_vec()).send().await.expect("push");
    assert!(r.status().is_success());
    let r = admin.post(format!("{admin_base}/v1/deployments")).bearer_auth(ADMIN).json(&serde_json::json!({"capability": "hello", "version": "1.0.0"})).send().await.expect("deploy");
    assert_eq!(r.status(), StatusCode::CREATED);

    let roots = roots_from(&dev_ca);
    assert_eq!(request(connect(node.addr, roots.clone(), rustls::ALL_VERSIONS).await, "/apps/hello/", &key).await, Ok(200), "tenant traffic needs no client certificate");
    assert_eq!(request(connect(node.addr, roots.clone(), rustls::ALL_VERSIONS).await, "/v1/tenants", ADMIN).await, Ok(404), "no admin API on the tenant listener");
    let e = request(connect(admin_addr, roots.clone(), rustls::ALL_VERSIONS).await, "/v1/tenants", ADMIN).await.expect_err("the admin listener requires a certificate");
    assert!(e.contains("CertificateRequired") || e.contains("HandshakeFailure"), "{e}");
    let e = request(connect_as_versions(admin_addr, roots.clone(), &ops, &ops_key, &[&rustls::version::TLS12]).await, "/v1/tenants", ADMIN).await.expect_err("TLS 1.2 refused there");
    assert!(e.contains("ProtocolVersion") || e.contains("protocol version"), "{e}");
    assert_eq!(request(connect_as(admin_addr, roots.clone(), &ops, &ops_key).await, "/apps/hello/", &key).await, Ok(404), "no tenant traffic on the admin listener");
    assert_eq!(request(connect_as(admin_addr, roots, &ops, &ops_key).await, "/livez", "").await, Ok(200), "probes on both");
    let r = reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&dev_ca).expect("ca")).expect("pem")).build().expect("client");
    let body: serde_json::Value = r.get(format!("https://localhost:{}/v1/tenants", node.addr.port())).bearer_auth(ADMIN).send().await.expect("get").json().await.expect("json");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("admin_listen")), "the 404 says where the admin API is: {body}");
    node.drain().await;
}

/// [`connect_as`] offering only `versions`.
async fn connect_as_versions(
    addr: SocketAddr,
    roots: rustls::RootCertStore,
    cert: &str,
    key: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let chain: Vec<CertificateDer<'static>> = rustls::pki_types::pem::PemObject::pem_slice_iter(cert.as_bytes()).collect::<Result<_, _>>().expect("chain");
    let key = <rustls::pki_types::PrivateKeyDer as rustls::pki_types::pem::PemObject>::from_pem_slice(key.as_bytes()).expect("key");
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client cert");
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(ServerName::try_from("localhost").expect("name"), tcp).await
}

/// The instance metadata interface (`[node] metadata_listen`, seed S0-XIII) on a node
/// whose other listener accepts TLS 1.2 without client certificates: there, TLS 1.2,
/// a client without a certificate and one from another CA get no handshake; the
/// bootstrap admin token and a tenant key are refused (signed tokens only); an
/// auditor's capability token with a client certificate reads the version metadata,
/// and the read is one admin event naming the certificate; past the per-credential
/// limit, 429 with `Retry-After`. Neither listener serves the other's routes.
#[tokio::test]
async fn the_instance_metadata_interface_takes_only_mutual_tls_1_3_and_signed_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clients = TestCa::new("federation client CA");
    let ca_file = dir.path().join("clients.pem");
    write(&ca_file, &clients.pem);
    let mut settings = TlsSettings::development();
    settings.client = Some(ClientAuth { ca_file, crl_file: None, required: false, admin_required: false });
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = NodeConfig::embedded("127.0.0.1:0".parse().expect("addr"), data.path().to_path_buf());
    config.admin_token = Some(ADMIN.into());
    config.tls = Some(settings);
    config.metadata_listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.rate_limits.admin_per_second = 1;
    config.rate_limits.admin_burst = 6;
    let node = Node::start(config).await.expect("node starts");
    let meta = node.metadata_addr.expect("a metadata listener");
    let dev_ca = runplane_node::tls::development_ca(data.path());
    let roots = roots_from(&dev_ca);
    let base = format!("https://localhost:{}", node.addr.port());
    let admin = https_client(&dev_ca, None);
    let r = admin.post(format!("{base}/v1/tenants")).bearer_auth(ADMIN).json(&serde_json::json!({"id": "acme", "mode": "shared"})).send().await.expect("create");
    assert_eq!(r.status(), StatusCode::CREATED);
    let tenant_key = r.json::<serde_json::Value>().await.expect("json")["api_key"].as_str().expect("key").to_owned();
    let r = admin.post(format!("{base}/v1/capabilities?name=hello&version=1.0.0")).bearer_auth(ADMIN).body(runplane_examples::HELLO.to_vec()).send().await.expect("push");
    assert!(r.status().is_success());
    let pushed: serde_json::Value = r.json().await.expect("json");
    let r = admin.post(format!("{base}/v1/deployments")).bearer_auth(ADMIN).json(&serde_json::json!({"capability": "hello", "version": "1.0.0"})).send().await.expect("deploy");
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = admin.post(format!("{base}/v1/tokens")).bearer_auth(ADMIN).json(&serde_json::json!({"role": "auditor", "subject": "federation"})).send().await.expect("mint");
    assert_eq!(r.status(), StatusCode::CREATED);
    let token = r.json::<serde_json::Value>().await.expect("json")["token"].as_str().expect("token").to_owned();

    let (fed, fed_key) = clients.leaf("federation", time::Duration::minutes(-5), time::Duration::days(1));
    let path = "/v1/instance/metadata";
    let e = request(connect_as_versions(meta, roots.clone(), &fed, &fed_key, &[&rustls::version::TLS12]).await, path, &token).await.expect_err("TLS 1.2 refused");
    assert!(e.contains("ProtocolVersion") || e.contains("protocol version"), "{e}");
    let e = request(connect(meta, roots.clone(), rustls::ALL_VERSIONS).await, path, &token).await.expect_err("no certificate, no handshake");
    assert!(e.contains("CertificateRequired") || e.contains("HandshakeFailure"), "{e}");
    let stranger = TestCa::new("another CA");
    let (eve, eve_key) = stranger.leaf("eve", time::Duration::minutes(-5), time::Duration::days(1));
    let e = request(connect_as(meta, roots.clone(), &eve, &eve_key).await, path, &token).await.expect_err("another CA's certificate refused");
    assert!(e.contains("UnknownCA") || e.contains("BadCertificate"), "{e}");
    // openssl from outside Rust: TLS 1.2 gets no handshake there. (Awaited, not
    // blocked on: the node answers from this test's runtime.)
    let out = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &meta.to_string(), "-tls1_2", "-CAfile"])
        .arg(&dev_ca)
        .args(["-servername", "localhost", "-brief"])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("openssl is installed");
    assert!(!out.status.success(), "openssl -tls1_2 connected: {}", String::from_utf8_lossy(&out.stdout));

    assert_eq!(request(connect_as(meta, roots.clone(), &fed, &fed_key).await, path, ADMIN).await, Ok(401), "the bootstrap admin token is not a signed token");
    assert_eq!(request(connect_as(meta, roots.clone(), &fed, &fed_key).await, path, &tenant_key).await, Ok(403), "a tenant key may not read it");
    let as_fed = https_client(&dev_ca, Some((&fed, &fed_key)));
    let meta_base = format!("https://localhost:{}", meta.port());
    let r = as_fed.get(format!("{meta_base}{path}")).bearer_auth(&token).send().await.expect("metadata");
    assert_eq!(r.status(), StatusCode::OK);
    let m: serde_json::Value = r.json().await.expect("json");
    assert_eq!(m["runtime_version"], env!("CARGO_PKG_VERSION"), "{m}");
    assert!(m["instance_id"].as_str().is_some_and(|i| i.len() == 36), "{m}");
    assert_eq!(m["mode"], "shared");
    assert_eq!(m["capabilities"][0]["route"], "hello", "{m}");
    assert_eq!(m["capabilities"][0]["version"], "1.0.0");
    assert_eq!(m["capabilities"][0]["digest"], pushed["digest"], "{m}");
    assert_eq!(m["handshake_endpoint"], format!("https://{meta}/v1/instance/metadata"));
    let presented = presented(&connect_as(meta, roots.clone(), &fed, &fed_key).await.expect("handshake"));
    assert_eq!(m["certificate"]["sha256"], presented.as_str(), "the certificate it reports is the one it presents");

    let r = admin.get(format!("{base}/v1/admin-events?limit=1000")).bearer_auth(ADMIN).send().await.expect("events");
    let events: serde_json::Value = r.json().await.expect("json");
    let reads: Vec<_> = events["items"].as_array().expect("items").iter().filter(|e| e["action_type"] == "instance.metadata").collect();
    assert_eq!(reads.iter().filter(|e| e["result"]["status"] == "ok").count(), 1, "one read, one admin event: {reads:?}");
    let r = admin.get(format!("{base}/v1/audit/events?log=admin&limit=1000")).bearer_auth(ADMIN).send().await.expect("events");
    let page = r.text().await.expect("text");
    assert!(page.contains("CN=federation"), "the admin event names the client certificate");

    // Neither listener serves the other's routes.
    let r = admin.get(format!("{base}{path}")).bearer_auth(&token).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.text().await.expect("text").contains("metadata_listen"), "the 404 says where the interface is");
    let r = as_fed.get(format!("{meta_base}/v1/tenants")).bearer_auth(&token).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // The per-credential limit (burst 6, 1/s here) holds on this listener too.
    let mut throttled = None;
    for _ in 0..20 {
        let r = as_fed.get(format!("{meta_base}{path}")).bearer_auth(&token).send().await.expect("metadata");
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
            break;
        }
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert!(throttled.is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s >= 1)), "429 with Retry-After past the limit");
    node.drain().await;
}

/// `[node] metadata_listen` needs a CA to verify clients against, and its listener
/// speaks TLS 1.3 and requires a certificate whatever `[tls]` says elsewhere.
#[test]
fn a_metadata_listener_needs_a_client_ca_and_forces_tls_1_3_with_certificates() {
    let parse = |tls: &str| NodeConfig::parse(&format!("[node]\nmetadata_listen = \"127.0.0.1:9443\"\n[tls]\n{tls}"), |_| None);
    let problems = parse("generate = true").err().expect("refused").join("\n");
    assert!(problems.contains("node.metadata_listen") && problems.contains("client_ca_file"), "{problems}");
    assert!(parse("instance_ca = true").is_ok(), "the instance CA verifies clients");
    let c = parse("generate = true\nmin_version = \"1.2\"\nclient_ca_file = \"/c.pem\"\nclient_auth = \"optional\"").expect("valid");
    let m = c.tls.expect("tls").for_metadata().expect("a client CA");
    assert_eq!((m.min_version, m.client.map(|c| (c.required, c.admin_required))), (MinVersion::Tls13, Some((true, true))));
}
